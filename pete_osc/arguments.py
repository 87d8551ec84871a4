"""The command line's arguments: pete-osc --help and each command's, with the checks
argparse makes before anything opens (a port in range, a number above zero)."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import __version__

MIDI_APIS = ("alsa", "jack", "coremidi", "windows")
ENGINE_NAMES = ("auto", "mlx", "torch", "remote", "replay")


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


def _counts(text: str) -> list[int]:
    """``1,4``: how many sources at once, per run."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of whole numbers (1,4)") from None
    if not counts or min(counts) < 1 or max(counts) > 16:
        raise argparse.ArgumentTypeError(f"{text}: each count must be from 1 to 16")
    return counts


def _port(text: str) -> int:
    """An argparse type: a TCP port number."""
    port = _number(int, low=1)(text)
    if port > 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (1 to 65535)")
    return port


def arguments() -> argparse.ArgumentParser:
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
                          "again for several sources, answered together (torch, mlx: one batch; "
                          "remote: a request in flight per source), else in turn; NAME "
                          "(stage=0) is what "
                          "events carry and {source} in a mapping becomes")
    run.add_argument("--no-batch", action="store_true",
                     help="several sources: answer their frames in turn, one at a time, "
                          "instead of together")
    run.add_argument("--concurrency", type=_number(int, low=1), default=0, metavar="N",
                     help="remote engine with several sources: requests in flight at once "
                          "(default: one per source; 1: in turn)")
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
                          "name of a shipped one (default, ableton, synth-midi, puredata-max, "
                          "harmony, play)")
    run.add_argument("--midi-api", default=None, choices=MIDI_APIS,
                     help="MIDI system (default: CoreMIDI on macOS; ALSA, else JACK, on Linux)")
    run.add_argument("--play", nargs="?", const="default", default=None,
                     metavar="DEVICE|FILE.wav",
                     help="hear it: the mapping's synth: targets (with no --mapping, the "
                          "shipped 'play') on the built-in synth, through the sound card "
                          "(or DEVICE, see pete-osc ports), or into FILE.wav in real time")
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

    send = sub.add_parser("send", parents=[common],
                          help="DIRECTOR text (file or stdin) to OSC/MIDI through a mapping")
    send.add_argument("file", nargs="?", default="-",
                      help="model output, e.g. from pete-osc run or another model (default stdin)")
    send.add_argument("--mapping", required=True, metavar="FILE|NAME",
                      help="a mapping file, or the name of a shipped one (default, ableton, ...)")
    send.add_argument("--director", type=Path, default=None)
    send.add_argument("--midi-api", default=None, choices=MIDI_APIS)
    send.add_argument("--echo", action="store_true", help="copy the text read to stdout as it arrives")

    export = sub.add_parser("export", parents=[common],
                            help="a recording (run --record) through a mapping into a MIDI file "
                                 "and an OSC log, or into sound (a .wav), with the show's timing")
    export.add_argument("recording", help="a file written by pete-osc run --record")
    export.add_argument("--mapping", required=True, metavar="FILE|NAME",
                        help="a mapping file, or the name of a shipped one")
    export.add_argument("-o", "--output", required=True, type=Path, metavar="SHOW.mid|SHOW.wav",
                        help="the Standard MIDI File to write (OSC messages go to "
                             "SHOW.osc.jsonl beside it); or a WAV file: the mapping's MIDI "
                             "played by the built-in synth, faster than real time")
    export.add_argument("--director", type=Path, default=None)

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

    ports = sub.add_parser("ports", parents=[common], help="list MIDI ports (inputs and outputs)")
    ports.add_argument("--midi-api", default=None, choices=MIDI_APIS)

    download = sub.add_parser("download", parents=[common],
                              help="fetch a model into the Hugging Face cache")
    download.add_argument("model", nargs="?", default=None,
                          help=f"Hugging Face id (default: the auto engine's model, "
                               f"{DEFAULT_MODELS['mlx']} on Apple Silicon, "
                               f"{DEFAULT_MODELS['torch']} elsewhere)")

    bench = sub.add_parser("bench", parents=[common],
                           help="measure this machine with your model: one block to paste "
                                "into an issue")
    bench.add_argument("--engine", default="auto", choices=("auto", "mlx", "torch", "remote"),
                       help="auto (mlx on Apple Silicon, torch elsewhere), mlx, torch or remote")
    bench.add_argument("--model", default=None,
                       help="Hugging Face id or local folder (default: the engine's model)")
    bench.add_argument("--server", default=None, metavar="URL", help="remote engine: the server")
    bench.add_argument("--timeout", type=_number(above=0), default=10.0,
                       help="remote engine: seconds to wait for each piece of an answer")
    bench.add_argument("--device", default=None, choices=("cuda", "mps", "cpu"),
                       help="torch engine: where to run (default: cuda, else mps, else cpu)")
    bench.add_argument("--quantize", default="auto", choices=("auto", "int8", "off"),
                       help="torch engine: int8 weights (default auto: on the CPU)")
    bench.add_argument("--kernels", default="auto", choices=("auto", "fused", "off"),
                       help="torch engine: the fused decode step (default auto: on CUDA)")
    bench.add_argument("--no-compile", action="store_true",
                       help="torch engine on CUDA: skip the CUDA-graph decode")
    bench.add_argument("--constrain", default="auto", choices=("auto", "on", "off"),
                       help="decode only lines DIRECTOR.md allows (default auto, as run)")
    bench.add_argument("--size", type=_number(int), default=128,
                       help="model input size in pixels, a multiple of 64 (default 128)")
    bench.add_argument("--frames", type=_number(int, low=2), default=10,
                       help="frames per source in each run (default 10; the first of each "
                            "source warms up and is left out)")
    bench.add_argument("--sources", type=_counts, default=[1, 4], metavar="N,N",
                       help="how many sources at once, one run each (default 1,4)")
    bench.add_argument("--source", action="append", default=None, metavar="FILE|FOLDER",
                       help="a video file or a folder of images to use instead of the "
                            "shipped frames (opened once per source)")
    bench.add_argument("--no-batch", action="store_true",
                       help="several sources: answer their frames in turn (as before "
                            "batching), to compare")
    bench.add_argument("--json", action="store_true", help="the result as one JSON object")
    bench.set_defaults(capture_size="320x240", director=None, mapping=None, replay=None,
                       max_tokens=None)

    parse = sub.add_parser("parse", parents=[common],
                           help="DIRECTOR text (file or stdin) to events as JSON lines")
    parse.add_argument("file", nargs="?", default="-", help="a file of model output (default stdin)")
    parse.add_argument("--director", type=Path, default=None)
    parse.add_argument("--rejected", action="store_true",
                       help="also write rejected lines to stdout as JSON (always on stderr)")

    init = sub.add_parser("init", parents=[common],
                          help="copy DIRECTOR.md and the shipped mappings into a folder to edit")
    init.add_argument("folder", nargs="?", default=".", help="where to copy them (default: here)")
    init.add_argument("--force", action="store_true", help="overwrite files that are there")
    return parser
