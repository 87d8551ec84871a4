"""The error types the command line turns into one-line messages and exit code 2."""


class PeteError(Exception):
    """A problem the user can fix: a bad file, a missing camera, a model that is not there.

    The message is one line that names the thing (file and line, device, model id) and,
    where it can, says what to do.
    """


class Problems(PeteError):
    """Several problems found together (at start, before anything slow): one line each."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = list(lines)
