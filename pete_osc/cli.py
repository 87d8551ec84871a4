"""pete-osc: the command line. stdout carries data (tokens or JSON lines); people read stderr."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

from .arguments import arguments
from .errors import PeteError

log = logging.getLogger("pete_osc")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pete-osc`` console script; returns the exit code (``run``
    ends the process itself once it has cleaned up, see _quick_exit)."""
    parser = arguments()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
        format="pete-osc: %(message)s", stream=sys.stderr,
    )
    if args.command in ("run", "send", "learn"):
        from .run.stopping import interrupt_on_signals

        # SIGTERM as Ctrl-C, from the first moment, in every command that sounds notes
        # (so a stop releases them); and Ctrl-C's own handler even where the shell that
        # started it in the background had it ignored.
        interrupt_on_signals()
    try:
        code = COMMANDS[args.command](args)
        if args.command == "run":
            _quick_exit(code)
        return code
    except PeteError as exc:
        for line in str(exc).splitlines():  # several problems found at start: one line each
            say(f"error: {line}")
        return 2
    except KeyboardInterrupt as exc:
        # Ctrl-C or SIGTERM before the live loop took charge of it (loading the model,
        # warming it up); what was opened is closed by then.
        say(f"{exc or 'SIGINT'} received before the run started; stopped")
        if args.command == "run":
            # What was opened is closed; the interpreter's teardown could meet the signal
            # again in a library's thread (seen as exit status -2 one run in five).
            _quick_exit(0)
        return 0
    except BrokenPipeError:
        # The reader of stdout went away (`pete-osc send --echo | head`): a normal end.
        _silence_stdout()
        return 0


def say(message: str) -> None:
    """A line for people: on stderr, so stdout stays data."""
    print(f"pete-osc: {message}", file=sys.stderr, flush=True)


def cmd_download(args) -> int:
    """``pete-osc download``: put a model in the Hugging Face cache for offline shows."""
    from .engines.models import default_model, download

    model = args.model or default_model("auto")
    path = download(model, say)
    say(f"{model} is in {path}")
    return 0


def cmd_init(args) -> int:
    """``pete-osc init``: DIRECTOR.md and the mappings, copied out for editing."""
    from .shipped import init

    for path, copied in init(args.folder, force=args.force):
        say(f"{'wrote' if copied else 'kept (already there; --force overwrites)'} {path}")
    say(f"edit them there; pete-osc run in {args.folder} uses that DIRECTOR.md, and "
        "--mapping NAME finds mappings/NAME.yaml")
    return 0


def cmd_parse(args) -> int:
    """``pete-osc parse``: check any model's output against DIRECTOR.md."""
    from .director.parser import parse_text_stream
    from .records import Rejection
    from .shipped import read_director

    director = read_director(args.director)
    stream, name = _open_text(args.file)
    with stream:
        for record in parse_text_stream(director, stream, source=name):
            if isinstance(record, Rejection):
                say(f"{name} frame {record.frame_id} line {record.line}: "
                      f"rejected {record.raw!r}: {record.reason}")
                if not args.rejected:
                    continue
            sys.stdout.write(json.dumps(record.to_dict()) + "\n")
            sys.stdout.flush()
    return 0


def cmd_run(args) -> int:
    """``pete-osc run``: the live show (see pete_osc.run.show); this only turns the arguments
    into a checked configuration and the taps that watch the show."""
    from .engines import EngineOptions
    from .preflight import prepare
    from .run.metrics import MetricsFile, Status, same_terminal
    from .run.reload import Files
    from .run.show import Show, ShowConfig
    from .run.stopping import signals_held
    from .run.taps import Recording, TokenEcho

    # The sizes, DIRECTOR.md, the mapping, the libraries, the model and the sources, all
    # before the slow imports; every problem is named at once (see preflight).
    plan = prepare(args, say)
    files = Files.of(plan.director, plan.mapping)
    show = Show(ShowConfig.from_args(args, plan.size), files, plan.sources, say)
    with show:
        # stdout and stderr on one terminal: the status line gets lines of its own
        shared = same_terminal(sys.stdout, sys.stderr)
        echo = TokenEcho(sys.stdout, on_closed=show.stop.set, tokens=not args.json,
                         events=args.json, sources=len(plan.sources), end_lines=shared)
        show.subscribe(_monitor(args, show) if args.monitor else None)
        show.subscribe(echo,
                       MetricsFile(args.metrics) if args.metrics else None,
                       Recording(args.record) if args.record else None,
                       None if args.quiet else Status(show.sent if show.sender else None,
                                                      shared=shared))
        say({"remote": f"connecting to {args.server} ...",
             "replay": f"replaying {args.replay} ..."}.get(plan.engine, f"loading {plan.model} ..."))
        show.load(plan.engine, plan.model, EngineOptions(
            server=args.server, timeout=args.timeout, replay=args.replay,
            replay_speed=args.replay_speed, loop=args.loop, device=args.device, compile=not args.no_compile,
            weights=args.quantize, kernels=args.kernels, progress=say, path=plan.model_path,
            concurrency=args.concurrency))
        if args.monitor and _on_this_cpu(show.engine) and args.monitor_host in ("127.0.0.1", "localhost"):
            say(f"monitor page: the model runs on this computer's {os.cpu_count()} cores, and a "
                "browser here takes some from it (on 2 cores: TBT +11%, docs/benchmarks.md); "
                "for the full speed open the page on another screen (--monitor-host 0.0.0.0)")
        # From the live loop on, a signal stops the show (the loop's own guard) and never
        # interrupts the closing that follows (notes off, exit values, the summary).
        with signals_held(show.stop, doing="the show starts or ends"):
            summary = show.run()
    with signals_held():
        if echo.closed:
            say("stdout was closed by its reader; stopping")
        say(f"stopped. {summary.line()}" + (f"; {show.sent_line()}" if show.sender else ""))
    return 0


def _on_this_cpu(engine) -> bool:
    """Whether the model runs on this computer's processor (the torch engine on its CPU)."""
    return getattr(getattr(engine, "device", None), "type", None) == "cpu"


def _monitor(args, show):
    """``--monitor``: the page, listening before the model loads (a busy port is one line)."""
    from .run.monitor import Monitor

    sender = show.sender
    monitor = Monitor(args.monitor, args.monitor_host,
                      activity=sender.activity if sender else None,
                      learn=sender.learn if sender else None,
                      routes=sender.routes if sender else None,
                      notes=sender.notes if sender else (),
                      files=show.files.paths()).start()
    say(f"monitor page: {monitor.url}")
    return monitor


def cmd_learn(args) -> int:
    """``pete-osc learn``: one route of a mapping alone, for a DAW's MIDI or OSC learn."""
    from dataclasses import replace

    from .mapping.learn import describe_route
    from .outputs.sender import open_sender
    from .run.stopping import signals_held
    from .shipped import read_director, read_mapping

    director = read_director(args.director)
    mapping = read_mapping(args.mapping, director)
    routes = list(mapping.routes)
    if not args.routes:
        print(f"routes of {mapping.path} (pete-osc learn --mapping {args.mapping} NUMBER):")  # stdout: the list is this command's data
        for i, route in enumerate(routes, 1):
            print(f"  {i}  {describe_route(route)}")  # stdout: the list is this command's data
        return 0
    chosen = [_route_number(mapping, routes, text) for text in args.routes]
    _check_learnable(mapping, [routes[i] for i in chosen], chosen, args.midi_api)
    try:
        for n, i in enumerate(chosen):
            if n:
                time.sleep(args.gap)
            # the route and its own target alone (no other output opens, no other exit value)
            target = routes[i].target
            alone = replace(mapping, routes=(routes[i],),
                            osc={k: v for k, v in mapping.osc.items() if k == target},
                            midi={k: v for k, v in mapping.midi.items() if k == target})
            sender = open_sender(alone, args.midi_api)
            for line in sender.describe():
                say(f"sending {line}")
            try:
                # Time to arm the DAW's learn (and for a new virtual port to be connected).
                say(f"route {i + 1} in {args.delay:g} s: {describe_route(routes[i])}")
                time.sleep(args.delay)
                say(f"sending route {i + 1} alone for {args.seconds:g} s: {sender.learn(0, args.seconds)}")
                # Till its sweep is over and its notes released (a busy machine runs late).
                if not sender.learnt(args.seconds + 10):
                    say(f"route {i + 1}: the sweep did not end in time; stopping it")
            finally:
                with signals_held(doing="releasing the route's notes"):
                    sender.close()
    except KeyboardInterrupt as exc:
        say(f"{exc or 'SIGINT'} received; stopped, every note it sounded released")
    return 0


def _check_learnable(mapping, chosen: list, numbers: list[int], midi_api: str | None) -> None:
    """Every chosen route can reach its output: a route on MIDI where MIDI is off here is
    refused (nothing could leave), one line per route, before anything is sent."""
    from .errors import Problems
    from .mapping.learn import describe_route
    from .outputs.midi import open_midi_api

    if not any(route.target in mapping.midi for route in chosen):
        return
    try:
        open_midi_api(midi_api)
        return
    except PeteError as exc:
        reason = str(exc)
    raise Problems([f"{mapping.path}:{route.line}: route {i + 1} ({describe_route(route)}) "
                    f"cannot be sent: MIDI is off here ({reason})"
                    for route, i in zip(chosen, numbers) if route.target in mapping.midi])


def _route_number(mapping, routes: list, text: str) -> int:
    """A route named by its number (1..n, as ``learn`` lists them) or its event's name."""
    if text.isdigit() and 1 <= int(text) <= len(routes):
        return int(text) - 1
    found = [i for i, r in enumerate(routes) if r.event == text]
    if len(found) == 1:
        return found[0]
    hint = (f"the routes of {text!r} are numbers {', '.join(str(i + 1) for i in found)}" if found
            else f"give a number from 1 to {len(routes)} or an event's name "
                 "(pete-osc learn --mapping FILE lists them)")
    raise PeteError(f"{mapping.path}: route {text!r}: {hint}")


def _open_sender(mapping, midi_api: str | None):
    from .outputs.sender import open_sender

    sender = open_sender(mapping, midi_api)
    for line in sender.describe():
        say(f"sending {line}")
    return sender


def cmd_export(args) -> int:
    """``pete-osc export``: a recording rendered offline through a mapping."""
    from .run.export import export
    from .shipped import read_director, read_mapping

    director = read_director(args.director)
    mapping = read_mapping(args.mapping, director)
    say(export(Path(args.recording), director, mapping, args.output))
    return 0


def cmd_send(args) -> int:
    """``pete-osc send``: DIRECTOR text from a file or stdin out through a mapping."""
    from .director.parser import parse_text_stream
    from .records import Event, FrameEnd, Rejection
    from .run.stopping import signals_held
    from .shipped import read_director, read_mapping

    director = read_director(args.director)
    mapping = read_mapping(args.mapping, director)
    stream, name = _open_text(args.file)
    sender = _open_sender(mapping, args.midi_api)
    try:
        with stream:
            lines = _echo(stream) if args.echo else stream
            for record in parse_text_stream(director, lines, source=name, frame_ends=True):
                if isinstance(record, Event):
                    sender.event(record)
                elif isinstance(record, FrameEnd):
                    sender.end_frame(record.frame_id)
                elif isinstance(record, Rejection):
                    say(f"{name} frame {record.frame_id} line {record.line}: "
                        f"rejected {record.raw!r}: {record.reason}")
    except KeyboardInterrupt:
        pass
    finally:
        with signals_held(doing="releasing the notes"):
            sender.close()
    say(f"done: {sender.events} events, {sender.summary()}")
    return 0


def _echo(stream):
    for line in stream:
        sys.stdout.write(line)
        sys.stdout.flush()
        yield line


def _open_text(file: str):
    if file == "-":
        return sys.stdin, "stdin"
    try:
        return open(file, encoding="utf-8", errors="replace"), file
    except OSError as exc:
        raise PeteError(f"{file}: cannot read: {exc.strerror}") from None


def cmd_bench(args) -> int:
    """``pete-osc bench``: the user's model on this machine, measured (see pete_osc.run.bench)."""
    from .capture.sources import open_source
    from .engines import EngineOptions
    from .preflight import prepare
    from .run.bench import FRAMES, block, run_bench

    args.source = args.source or [str(FRAMES)]
    plan = prepare(args, say)  # every problem at once, before the slow imports
    for _, source in plan.sources:  # (opened there to check them; each run opens its own)
        source.close()
    spec = args.source[0]

    def open_sources(n: int) -> list:
        return [(f"s{i + 1}", open_source(spec, *plan.capture_size)) for i in range(n)]

    def load(show) -> None:
        say(f"loading {plan.model or args.server} ...")
        show.load(plan.engine, plan.model, EngineOptions(
            server=args.server, timeout=args.timeout, device=args.device,
            compile=not args.no_compile, weights=args.quantize, kernels=args.kernels,
            progress=say, path=plan.model_path))

    result = run_bench(plan, args, load, open_sources, say)
    print(json.dumps(result) if args.json else block(result), flush=True)
    return 0


def cmd_ports(args) -> int:
    """``pete-osc ports``: the audio devices ``--play`` can name, and the MIDI ports a
    mapping can name."""
    from .outputs.midi import list_ports, open_midi_api
    from .outputs.player import audio_devices

    print("audio outputs (for --play DEVICE; --play alone: the system's default):")  # stdout: the list is this command's data
    for name in audio_devices() or ["(none)"]:
        print(f"  {name}")  # stdout: the list is this command's data
    api, backend = open_midi_api(args.midi_api)
    inputs, outputs = list_ports(backend)
    print(f"MIDI system: {api}")  # stdout: the list is this command's data
    print("outputs (for 'port:' in a mapping):")  # stdout: the list is this command's data
    for name in outputs or ["(none)"]:
        print(f"  {name}")  # stdout: the list is this command's data
    print("inputs:")  # stdout: the list is this command's data
    for name in inputs or ["(none)"]:
        print(f"  {name}")  # stdout: the list is this command's data
    return 0


def _quick_exit(code: int) -> None:
    """End the process now that the run has closed its camera, outputs and files.

    Interpreter teardown after a model run (PyTorch and MLX freeing their state) takes
    one to two seconds here; a performer's Ctrl-C should get the prompt back at once."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _silence_stdout() -> None:
    from .run.taps import silence_stdout

    silence_stdout()


if __name__ == "__main__":
    sys.exit(main())


# Each command's function, by the name pete_osc.arguments gives it.
COMMANDS = {"run": cmd_run, "send": cmd_send, "export": cmd_export, "learn": cmd_learn,
            "ports": cmd_ports, "download": cmd_download, "parse": cmd_parse, "init": cmd_init,
            "bench": cmd_bench}
