"""pete-osc: the command line. stdout carries data (tokens or JSON lines); people read stderr."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from . import __version__
from .errors import PeteError

log = logging.getLogger("pete_osc")
MIDI_APIS = ("alsa", "jack", "coremidi", "windows")
ENGINE_NAMES = ("auto", "mlx", "torch", "remote", "replay")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pete-osc`` console script; returns the exit code (``run``
    ends the process itself once it has cleaned up, see _quick_exit)."""
    parser = _arguments()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
        format="pete-osc: %(message)s", stream=sys.stderr,
    )
    if args.command == "run":
        from .run.stopping import interrupt_on_signals

        interrupt_on_signals()  # SIGTERM as Ctrl-C, from the first moment of the run
    try:
        code = args.func(args)
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
        return 0
    except BrokenPipeError:
        # The reader of stdout went away (`pete-osc send --echo | head`): a normal end.
        _silence_stdout()
        return 0


class _Parser(argparse.ArgumentParser):
    """argparse with its complaints in one line on stderr (and exit code 2), like ours."""

    def error(self, message: str):
        self.exit(2, f"pete-osc: error: {message} (see {self.prog} --help)\n")


def _number(kind=float, low: float | None = None, above: float | None = None):
    """An argparse type: a number of ``kind``, at least ``low`` or above ``above``."""
    def check(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole' if kind is int else 'a'} number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"{text} must be {low:g} or more")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"{text} must be above {above:g}")
        return value
    return check


def _port(text: str) -> int:
    """An argparse type: a TCP port number."""
    port = _number(int, low=1)(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (1 to 65535)")
    return port


def _arguments() -> argparse.ArgumentParser:
    from .engines.models import DEFAULT_MODELS

    parser = _Parser(
        prog="pete-osc",
        description="Turn live video into music control: a vision-language model describes "
                    "each frame in DIRECTOR lines; pete-osc turns them into events.")
    parser.add_argument("--version", action="version", version=f"pete-osc {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more on stderr (-vv: every rejected line)")
    # -v after the command too (pete-osc run -v); SUPPRESS keeps one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="more on stderr (-vv: every rejected line)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[common],
                         help="describe a camera or video live; tokens to stdout")
    run.add_argument("--source", action="append", default=None, metavar="[NAME=]SOURCE",
                     help="camera number, video file, folder of images, URL, or 'none' (blank "
                          "frames; the default with --engine replay) (default 0). Give it "
                          "again for several sources, served in turn; NAME (stage=0) is what "
                          "events carry and {source} in a mapping becomes")
    run.add_argument("--engine", default="auto", choices=ENGINE_NAMES,
                     help="auto (mlx on Apple Silicon, torch elsewhere), mlx, torch, remote "
                          "(--server) or replay (--replay)")
    run.add_argument("--model", default=None,
                     help=f"Hugging Face id or local folder (default: {DEFAULT_MODELS['mlx']} "
                          f"for mlx, {DEFAULT_MODELS['torch']} for torch, the server's model "
                          "for remote)")
    run.add_argument("--server", default=None, metavar="URL",
                     help="remote engine: an OpenAI-compatible server, e.g. http://gpu-box:8000")
    run.add_argument("--timeout", type=_number(above=0), default=10.0,
                     help="remote engine: seconds to wait for each piece of an answer (default 10)")
    run.add_argument("--replay", default=None, metavar="FILE",
                     help="replay engine: a file made with --record, or DIRECTOR text")
    run.add_argument("--replay-speed", type=_number(above=0), default=1.0,
                     help="replay engine: 2 plays twice as fast (default 1)")
    run.add_argument("--record", default=None, metavar="FILE",
                     help="write every token with its time to FILE, for --engine replay")
    run.add_argument("--device", default=None, choices=("cuda", "mps", "cpu"),
                     help="torch engine: where to run (default: cuda, else mps, else cpu)")
    run.add_argument("--constrain", default="auto", choices=("auto", "on", "off"),
                     help="decode only lines that DIRECTOR.md's schema allows (default auto: on "
                          "where the engine can: torch, mlx with FastVLM, remote as a guided regex)")
    run.add_argument("--quantize", default="auto", choices=("auto", "int8", "off"),
                     help="torch engine: int8 weights for the language model (default auto: "
                          "on the CPU, where it is about 3x faster; off keeps fp32)")
    run.add_argument("--kernels", default="auto", choices=("auto", "fused", "off"),
                     help="torch engine: the decode step as fused Triton kernels in one CUDA "
                          "graph (default auto: on CUDA with --compile's static cache); off "
                          "keeps transformers' own step")
    run.add_argument("--no-compile", action="store_true",
                     help="torch engine on CUDA: skip the static-cache CUDA-graph decode "
                          "(faster start, slower tokens)")
    run.add_argument("--size", type=_number(int), default=128,
                     help="model input size in pixels, a multiple of 64 up to 1024 "
                          "(default 128; 64 for the lowest latency)")
    run.add_argument("--fps", type=_number(low=0), default=2.0,
                     help="frames sent to the model per second (default 2; 0: as fast as it goes)")
    run.add_argument("--max-tokens", type=_number(int, low=1), default=None,
                     help="tokens per frame (default: the longest complete answer "
                          "DIRECTOR.md allows where decoding is constrained, else 64)")
    run.add_argument("--temperature", type=_number(low=0), default=0.0,
                     help="sampling temperature (default 0: always the likeliest token)")
    run.add_argument("--director", type=Path, default=None,
                     help="prompt and schema file (default: ./DIRECTOR.md, else the shipped one)")
    run.add_argument("--capture-size", default="320x240", metavar="WxH",
                     help="frames are scaled to fit this at capture (default 320x240)")
    run.add_argument("--every-frame", action="store_true",
                     help="video files: process every frame as fast as possible instead of "
                          "playing in real time")
    run.add_argument("--loop", action="store_true",
                     help="video files and --replay recordings: start again at the end")
    run.add_argument("--max-frames", type=_number(int, low=0), default=0,
                     help="stop after N frames (0: never)")
    run.add_argument("--json", action="store_true",
                     help="write events as JSON lines to stdout instead of the token stream")
    run.add_argument("--no-warmup", action="store_true",
                     help="skip the warm-up frame at start (the first real frame is then slow)")
    run.add_argument("--mapping", default=None, metavar="FILE|NAME",
                     help="send events as OSC/MIDI as this mapping says: a YAML file, or the "
                          "name of a shipped one (default, ableton, synth-midi, puredata-max)")
    run.add_argument("--midi-api", default=None, choices=MIDI_APIS,
                     help="MIDI system (default: CoreMIDI on macOS; ALSA, else JACK, on Linux)")
    run.add_argument("--no-reload", action="store_true",
                     help="pin DIRECTOR.md and the mapping: saved edits (and SIGHUP) do not "
                          "reload them")
    run.add_argument("--stall", type=_number(low=0), default=10.0, metavar="SECONDS",
                     help="end a frame that gets no token for this long, and go on with the "
                          "next (default 10; 0: never)")
    run.add_argument("--frame-limit", type=_number(low=0), default=60.0, metavar="SECONDS",
                     help="end a frame that runs longer than this (default 60; 0: never)")
    run.add_argument("--monitor", type=_port, nargs="?", const=8765, default=None,
                     metavar="PORT",
                     help="serve a live page of the show on http://127.0.0.1:PORT/ (default "
                          "8765): frames, tokens, values, messages, latency, learn buttons")
    run.add_argument("--monitor-host", default="127.0.0.1", metavar="HOST",
                     help="listen for the page on HOST instead (0.0.0.0: every network); "
                          "the URL then carries a token, printed at start")
    run.add_argument("--context-port", type=_port, default=None, metavar="PORT",
                     help="listen for OSC from the DAW (AbletonOSC's replies) and for "
                          "/pete/context/NAME values, for {daw.*} and {context.NAME} in "
                          "DIRECTOR.md's context and instruction and for routes' when: "
                          "(default: the mapping's listen:, else 11001 with --ableton)")
    run.add_argument("--context-host", default=None, metavar="HOST",
                     help="where --context-port listens (default: the mapping's listen: "
                          "host, else 127.0.0.1: this computer)")
    run.add_argument("--ableton", nargs="?", const="127.0.0.1:11000", default=None,
                     metavar="HOST:PORT",
                     help="ask AbletonOSC (default 127.0.0.1:11000) to report the tempo, "
                          "playing state, selected scene and track")
    run.add_argument("--metrics", default=None, metavar="FILE",
                     help="append per-frame latency records (JSON lines) to FILE")
    run.add_argument("-q", "--quiet", action="store_true", help="no per-frame status on stderr")
    run.set_defaults(func=cmd_run)

    send = sub.add_parser("send", parents=[common],
                          help="DIRECTOR text (file or stdin) to OSC/MIDI through a mapping")
    send.add_argument("file", nargs="?", default="-",
                      help="model output, e.g. from pete-osc run or another model (default stdin)")
    send.add_argument("--mapping", required=True, metavar="FILE|NAME",
                      help="a mapping file, or the name of a shipped one (default, ableton, ...)")
    send.add_argument("--director", type=Path, default=None)
    send.add_argument("--midi-api", default=None, choices=MIDI_APIS)
    send.add_argument("--echo", action="store_true", help="copy the text read to stdout as it arrives")
    send.set_defaults(func=cmd_send)

    export = sub.add_parser("export", parents=[common],
                            help="a recording (run --record) through a mapping into a MIDI file "
                                 "and an OSC log, with the show's timing")
    export.add_argument("recording", help="a file written by pete-osc run --record")
    export.add_argument("--mapping", required=True, metavar="FILE|NAME",
                        help="a mapping file, or the name of a shipped one")
    export.add_argument("-o", "--output", required=True, type=Path, metavar="SHOW.mid",
                        help="the Standard MIDI File to write (OSC messages go to "
                             "SHOW.osc.jsonl beside it)")
    export.add_argument("--director", type=Path, default=None)
    export.set_defaults(func=cmd_export)

    learn = sub.add_parser("learn", parents=[common],
                           help="send one route of a mapping alone, for a DAW's MIDI/OSC learn")
    learn.add_argument("routes", nargs="*", metavar="ROUTE",
                       help="route numbers (as listed without ROUTE) or event names, each sent "
                            "alone in turn; none: list the routes")
    learn.add_argument("--mapping", required=True, metavar="FILE|NAME")
    learn.add_argument("--director", type=Path, default=None)
    learn.add_argument("--midi-api", default=None, choices=MIDI_APIS)
    learn.add_argument("--seconds", type=_number(above=0), default=2.0,
                       help="how long each route's sweep takes (default 2)")
    learn.add_argument("--delay", type=_number(low=0), default=1.0,
                       help="seconds before each route is sent, to arm the DAW's learn "
                            "(default 1)")
    learn.add_argument("--gap", type=_number(low=0), default=1.0,
                       help="silence between two routes (default 1 s)")
    learn.set_defaults(func=cmd_learn)

    ports = sub.add_parser("ports", parents=[common], help="list MIDI ports (inputs and outputs)")
    ports.add_argument("--midi-api", default=None, choices=MIDI_APIS)
    ports.set_defaults(func=cmd_ports)

    download = sub.add_parser("download", parents=[common],
                              help="fetch a model into the Hugging Face cache")
    download.add_argument("model", nargs="?", default=None,
                          help=f"Hugging Face id (default: the auto engine's model, "
                               f"{DEFAULT_MODELS['mlx']} on Apple Silicon, "
                               f"{DEFAULT_MODELS['torch']} elsewhere)")
    download.set_defaults(func=cmd_download)

    parse = sub.add_parser("parse", parents=[common],
                           help="DIRECTOR text (file or stdin) to events as JSON lines")
    parse.add_argument("file", nargs="?", default="-", help="a file of model output (default stdin)")
    parse.add_argument("--director", type=Path, default=None)
    parse.add_argument("--rejected", action="store_true",
                       help="also write rejected lines to stdout as JSON (always on stderr)")
    parse.set_defaults(func=cmd_parse)

    init = sub.add_parser("init", parents=[common],
                          help="copy DIRECTOR.md and the shipped mappings into a folder to edit")
    init.add_argument("folder", nargs="?", default=".", help="where to copy them (default: here)")
    init.add_argument("--force", action="store_true", help="overwrite files that are there")
    init.set_defaults(func=cmd_init)
    return parser


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
        show.subscribe(_monitor(args, show, plan.size) if args.monitor else None)
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
            quantize=args.quantize, kernels=args.kernels, progress=say, path=plan.model_path))
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


def _monitor(args, show, size: int):
    """``--monitor``: the page, listening before the model loads (a busy port is one line)."""
    from .run.monitor import Monitor

    sender = show.sender
    monitor = Monitor(args.monitor, args.monitor_host, size,
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
    from .outputs.sender import open_dispatcher
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
    for n, i in enumerate(chosen):
        # the route and its own target alone (no other output opens, no other exit value)
        target = routes[i].target
        alone = replace(mapping, routes=(routes[i],),
                        osc={k: v for k, v in mapping.osc.items() if k == target},
                        midi={k: v for k, v in mapping.midi.items() if k == target})
        dispatcher = open_dispatcher(alone, args.midi_api)
        for line in dispatcher.describe():
            say(f"sending {line}")
        try:
            # Time to arm the DAW's learn (and for a new virtual port to be connected).
            say(f"route {i + 1} in {args.delay:g} s: {describe_route(routes[i])}")
            time.sleep(args.delay)
            say(f"sending route {i + 1} alone for {args.seconds:g} s: {dispatcher.learn(0, args.seconds)}")
            time.sleep(args.seconds + 0.3)
        except KeyboardInterrupt:
            break
        finally:
            dispatcher.close()
        if n + 1 < len(chosen):
            time.sleep(args.gap)
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


def _open_dispatcher(mapping, midi_api: str | None):
    from .outputs.sender import open_dispatcher

    dispatcher = open_dispatcher(mapping, midi_api)
    for line in dispatcher.describe():
        say(f"sending {line}")
    return dispatcher


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
    from .shipped import read_director, read_mapping

    director = read_director(args.director)
    mapping = read_mapping(args.mapping, director)
    stream, name = _open_text(args.file)
    dispatcher = _open_dispatcher(mapping, args.midi_api)
    try:
        with stream:
            lines = _echo(stream) if args.echo else stream
            for record in parse_text_stream(director, lines, source=name, frame_ends=True):
                if isinstance(record, Event):
                    dispatcher.event(record)
                elif isinstance(record, FrameEnd):
                    dispatcher.end_frame(record.frame_id)
                elif isinstance(record, Rejection):
                    say(f"{name} frame {record.frame_id} line {record.line}: "
                        f"rejected {record.raw!r}: {record.reason}")
    except KeyboardInterrupt:
        pass
    finally:
        dispatcher.close()
    say(f"done: {dispatcher.events} events, {dispatcher.summary()}")
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


def cmd_ports(args) -> int:
    """``pete-osc ports``: the MIDI ports a mapping can name."""
    from .outputs.midi import list_ports, open_midi_api

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
