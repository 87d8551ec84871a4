"""The one error type the command line turns into a one-line message and exit code 2."""


class PeteError(Exception):
    """A problem the user can fix: a bad file, a missing camera, a model that is not there.

    The message is one line that names the thing (file and line, device, model id) and,
    where it can, says what to do.
    """
