"""pete-osc: the command line. stdout carries data (tokens or JSON lines); people read stderr."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from pathlib import Path

from . import __version__
from .errors import PeteError

log = logging.getLogger("pete_osc")
MIDI_APIS = ("alsa", "jack", "coremidi", "windows")
ENGINE_NAMES = ("auto", "mlx", "torch", "remote", "replay")

# DIRECTOR.md of the current folder if there is one, else the one shipped beside the package.
DEFAULT_DIRECTOR = (Path("DIRECTOR.md") if Path("DIRECTOR.md").is_file()
                    else Path(__file__).resolve().parent.parent / "DIRECTOR.md")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pete-osc`` console script; returns the exit code (``run``
    ends the process itself once it has cleaned up, see _quick_exit)."""
    parser = _arguments()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING,
        format="pete-osc: %(message)s", stream=sys.stderr,
    )
    try:
        code = args.func(args)
        if args.command == "run":
            _quick_exit(code)
        return code
    except PeteError as exc:
        say(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        # Ctrl-C before the live loop took charge of it (while loading the model, say).
        say("interrupted before the run started")
        return 0
    except BrokenPipeError:
        # The reader of stdout went away (`pete-osc run | head`): a normal end.
        _silence_stdout()
        return 0


def _arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pete-osc",
        description="Turn live video into music control: a vision-language model describes "
                    "each frame in DIRECTOR lines; pete-osc turns them into events.")
    parser.add_argument("--version", action="version", version=f"pete-osc {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more on stderr (-vv: every rejected line)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="describe a camera or video live; tokens to stdout")
    run.add_argument("--source", default=None,
                     help="camera number, video file, folder of images, URL, or 'none' (blank "
                          "frames; the default with --engine replay) (default 0)")
    run.add_argument("--engine", default="auto", choices=ENGINE_NAMES,
                     help="auto (mlx on Apple Silicon, torch elsewhere), mlx, torch, remote "
                          "(--server) or replay (--replay)")
    run.add_argument("--model", default=None,
                     help="Hugging Face id or local folder (default: mlx-community/FastVLM-0.5B-bf16 "
                          "for mlx, apple/FastVLM-0.5B for torch, the server's model for remote)")
    run.add_argument("--server", default=None, metavar="URL",
                     help="remote engine: an OpenAI-compatible server, e.g. http://gpu-box:8000")
    run.add_argument("--timeout", type=float, default=10.0,
                     help="remote engine: seconds to wait for each piece of an answer (default 10)")
    run.add_argument("--replay", default=None, metavar="FILE",
                     help="replay engine: a file made with --record, or DIRECTOR text")
    run.add_argument("--replay-speed", type=float, default=1.0,
                     help="replay engine: 2 plays twice as fast (default 1)")
    run.add_argument("--record", default=None, metavar="FILE",
                     help="write every token with its time to FILE, for --engine replay")
    run.add_argument("--device", default=None, choices=("cuda", "mps", "cpu"),
                     help="torch engine: where to run (default: cuda, else mps, else cpu)")
    run.add_argument("--constrain", default="auto", choices=("auto", "on", "off"),
                     help="decode only lines that DIRECTOR.md's schema allows (default auto: on "
                          "where the engine can: torch, mlx with FastVLM, remote as a guided regex)")
    run.add_argument("--no-compile", action="store_true",
                     help="torch engine on CUDA: skip the static-cache CUDA-graph decode "
                          "(faster start, slower tokens)")
    run.add_argument("--size", type=int, default=128,
                     help="model input size in pixels, a multiple of 64 up to 1024 "
                          "(default 128; 64 for the lowest latency)")
    run.add_argument("--fps", type=float, default=2.0,
                     help="frames sent to the model per second (default 2; 0: as fast as it goes)")
    run.add_argument("--max-tokens", type=int, default=50, help="tokens per frame (default 50)")
    run.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0)")
    run.add_argument("--director", type=Path, default=DEFAULT_DIRECTOR,
                     help="prompt and schema file (default DIRECTOR.md)")
    run.add_argument("--capture-size", default="320x240", metavar="WxH",
                     help="frames are scaled to fit this at capture (default 320x240)")
    run.add_argument("--every-frame", action="store_true",
                     help="video files: process every frame as fast as possible instead of "
                          "playing in real time")
    run.add_argument("--loop", action="store_true", help="video files: start again at the end")
    run.add_argument("--max-frames", type=int, default=0, help="stop after N frames (0: never)")
    run.add_argument("--json", action="store_true",
                     help="write events as JSON lines to stdout instead of the token stream")
    run.add_argument("--no-warmup", action="store_true",
                     help="skip the warm-up frame at start (the first real frame is then slow)")
    run.add_argument("--mapping", type=Path, default=None,
                     help="send events as OSC/MIDI as this mapping file says (mappings/*.yaml)")
    run.add_argument("--midi-api", default=None, choices=MIDI_APIS,
                     help="MIDI system (default: CoreMIDI on macOS; ALSA, else JACK, on Linux)")
    run.add_argument("--metrics", default=None, metavar="FILE",
                     help="append per-frame latency records (JSON lines) to FILE")
    run.add_argument("-q", "--quiet", action="store_true", help="no per-frame status on stderr")
    run.set_defaults(func=cmd_run)

    send = sub.add_parser("send", help="DIRECTOR text (file or stdin) to OSC/MIDI through a mapping")
    send.add_argument("file", nargs="?", default="-",
                      help="model output, e.g. from pete-osc run or another model (default stdin)")
    send.add_argument("--mapping", type=Path, required=True, help="mapping file (mappings/*.yaml)")
    send.add_argument("--director", type=Path, default=DEFAULT_DIRECTOR)
    send.add_argument("--midi-api", default=None, choices=MIDI_APIS)
    send.add_argument("--echo", action="store_true", help="copy the text read to stdout as it arrives")
    send.set_defaults(func=cmd_send)

    ports = sub.add_parser("ports", help="list MIDI ports (inputs and outputs)")
    ports.add_argument("--midi-api", default=None, choices=MIDI_APIS)
    ports.set_defaults(func=cmd_ports)

    download = sub.add_parser("download", help="fetch a model into the Hugging Face cache")
    download.add_argument("model", nargs="?", default=None,
                          help="Hugging Face id (default: the auto engine's model, "
                               "mlx-community/FastVLM-0.5B-bf16 on Apple Silicon, "
                               "KamilaMila/FastVLM-0.5B elsewhere)")
    download.set_defaults(func=cmd_download)

    parse = sub.add_parser("parse", help="DIRECTOR text (file or stdin) to events as JSON lines")
    parse.add_argument("file", nargs="?", default="-", help="a file of model output (default stdin)")
    parse.add_argument("--director", type=Path, default=DEFAULT_DIRECTOR)
    parse.add_argument("--rejected", action="store_true",
                       help="also write rejected lines to stdout as JSON (always on stderr)")
    parse.set_defaults(func=cmd_parse)
    return parser


def say(message: str) -> None:
    """A line for people: on stderr, so stdout stays data."""
    print(f"pete-osc: {message}", file=sys.stderr, flush=True)


def cmd_download(args) -> int:
    """``pete-osc download``: put a model in the Hugging Face cache for offline shows."""
    from .engines import default_model

    model = args.model or default_model("auto")
    try:
        from huggingface_hub import snapshot_download

        say(f"downloading {model} ...")
        path = snapshot_download(model)
    except Exception as exc:  # offline, unknown id, disk full
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise PeteError(f"could not download {model} ({type(exc).__name__}: {reason}); "
                        "check the network and retry: pete-osc download") from None
    say(f"{model} is in {path}")
    return 0


def cmd_parse(args) -> int:
    """``pete-osc parse``: check any model's output against DIRECTOR.md."""
    from .director import load_director
    from .events import Rejection
    from .parser import parse_text_stream

    director = load_director(args.director)
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
    """``pete-osc run``: the live loop."""
    from . import pipeline
    from .capture import LatestFrame, every_frame, open_source
    from .director import load_director
    from .engines import EngineOptions, GenerationSettings, check_size, open_engine
    from .events import Event
    from .stopping import StopGuard

    size = check_size(args.size)
    width, height = _capture_size(args.capture_size)
    if args.max_tokens < 1:
        raise PeteError(f"--max-tokens {args.max_tokens}: must be at least 1")
    director = load_director(args.director)  # a bad schema is refused before anything opens
    mapping = _load_mapping(args.mapping, director) if args.mapping else None
    from .metrics import MetricsFile, SentTimes, StatusLine, frame_record

    sent_times = SentTimes()
    metrics = MetricsFile(args.metrics) if args.metrics else None
    status = StatusLine() if StatusLine.wanted() and not args.quiet else None
    dispatcher = (_open_dispatcher(mapping, args.midi_api,
                                   on_sent=lambda m, at: sent_times.sent(getattr(m, "frame_id", None),
                                                                         time.time()))
                  if mapping else None)
    source_spec = args.source or ("none" if args.engine == "replay" else "0")
    try:
        source = open_source(source_spec, width, height)
    except BaseException:
        if dispatcher is not None:
            dispatcher.close()
        raise
    stop = threading.Event()
    out = TokenStream(sys.stdout)
    summary = pipeline.Summary()
    grabber = None
    engine = None
    settings = GenerationSettings(args.max_tokens, args.temperature, size)

    def release() -> None:
        if grabber is not None:
            grabber.close()
        else:
            source.close()

    def forced_end() -> None:
        # The watchdog ends the process while the engine is busy: keep what is done.
        release()
        if dispatcher is not None:
            dispatcher.close(timeout=0.3)
        out.end()
        say(f"stopped (did not wait for the engine). {summary.line()}")

    try:
        say(f"loading {args.model or 'the default model'} ...")
        options = EngineOptions(server=args.server, timeout=args.timeout, replay=args.replay,
                                replay_speed=args.replay_speed, device=args.device,
                                compile=not args.no_compile, progress=say)
        engine = open_engine(args.engine, args.model, director.prompt, director.instruction,
                             settings, options)
        if args.constrain != "off":
            if getattr(engine, "supports_constraint", False):
                engine.constrain(director)
                say("decoding constrained to the DIRECTOR.md schema (--constrain off to free it)")
            elif args.constrain == "on":
                raise PeteError(f"--constrain on: the {engine.name} engine cannot constrain "
                                "decoding; use --constrain off")
        if args.record:
            from .engines.replay import Recording

            engine = Recording(engine, args.record)
        say(f"{engine.name} engine, model {engine.model_id}, input {size} px")
        if not args.no_warmup and hasattr(engine, "warm_up"):
            say("warming up ...")
            say(f"warm-up took {engine.warm_up():.1f} s")
        if args.every_frame and not source.live:
            frames, drops = every_frame(source), lambda: 0
        else:
            grabber = LatestFrame(source, loop=args.loop)
            frames, drops = pipeline.paced(grabber, args.fps, stop), lambda: grabber.dropped
        say(f"running on {source.name}; Ctrl-C to stop")

        def on_record(record):
            if isinstance(record, Event):
                if dispatcher is not None:
                    dispatcher.event(record)
                if args.json:
                    out.json(record.to_dict())

        def on_report(report):
            if dispatcher is not None:
                dispatcher.end_frame(report.frame_id)
            record = frame_record(report, drops(), sent_times.first(report.frame_id))
            if metrics is not None:
                metrics.write(record)
            if status is not None:
                status.update(record, dispatcher.sent if dispatcher else None)
            elif not args.quiet and report.error is None:  # failures are logged as they happen
                say(_status(report, drops()))

        with StopGuard(stop, on_force=forced_end):
            pipeline.run(
                frames, engine, director, size,
                on_text=(lambda text: None) if args.json else out.text,
                on_record=on_record,
                on_frame=(lambda frame: None) if args.json else out.frame,
                on_report=on_report, stop=stop, max_frames=args.max_frames or None,
                drops=drops, summary=summary,
            )
        out.end()
    finally:
        release()
        if status is not None:
            status.end()
        if metrics is not None:
            metrics.close()
        if dispatcher is not None:
            dispatcher.close()
        if engine is not None:
            engine.close()
    say(f"stopped. {summary.line()}" + (f"; {_sent_line(dispatcher)}" if dispatcher else ""))
    return 0


def _load_mapping(path: Path, director):
    from .mapping.config import load_mapping

    return load_mapping(path, director)


def _open_dispatcher(mapping, midi_api: str | None, on_sent=None):
    from .dispatch import open_dispatcher

    dispatcher = open_dispatcher(mapping, midi_api, on_sent=on_sent)
    for line in dispatcher.describe():
        say(f"sending {line}")
    return dispatcher


def _sent_line(dispatcher) -> str:
    lost = f", {dispatcher.lost} for outputs that are off" if dispatcher.lost else ""
    return f"{dispatcher.sent} messages sent{lost}"


def cmd_send(args) -> int:
    """``pete-osc send``: DIRECTOR text from a file or stdin out through a mapping."""
    from .director import load_director
    from .events import Event, FrameEnd, Rejection
    from .parser import parse_text_stream

    director = load_director(args.director)
    mapping = _load_mapping(args.mapping, director)
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
    say(f"done: {dispatcher.events} events, {_sent_line(dispatcher)}")
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


class TokenStream:
    """The raw token stream on stdout, flushed per token, with a line between frames."""

    def __init__(self, stream):
        self.stream = stream
        self._at_line_start = True

    def frame(self, frame) -> None:
        self._write(("" if self._at_line_start else "\n") + f"--- frame {frame.id}\n")

    def text(self, text: str) -> None:
        self._write(text)

    def json(self, record: dict) -> None:
        self._write(json.dumps(record) + "\n")

    def end(self) -> None:
        if not self._at_line_start:
            self._write("\n")

    def _write(self, text: str) -> None:
        if text:
            self.stream.write(text)
            self.stream.flush()
            self._at_line_start = text.endswith("\n")


def _status(report, drops: int) -> str:
    if report.error:
        return f"frame {report.frame_id} failed: {report.error}"
    tbt = (f"{sorted(report.tbt)[len(report.tbt) // 2] * 1000:.0f} ms" if report.tbt else "-")
    ttft = f"{report.ttft * 1000:.0f} ms" if report.ttft is not None else "-"
    cut = " (cut at token limit)" if report.truncated else ""
    return (f"frame {report.frame_id}: TTFT {ttft}, TBT {tbt}, {report.tokens} tokens, "
            f"{report.events} events, {report.rejected} rejected{cut}; {drops} frames dropped")


def _capture_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
        if width < 16 or height < 16:
            raise ValueError
    except ValueError:
        raise PeteError(f"--capture-size {text}: expected WIDTHxHEIGHT such as 320x240") from None
    return width, height


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
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
