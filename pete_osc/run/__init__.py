"""The run: the show that owns a live run and its frame boundary (show.py), one frame
through the engine and the parser (frame.py), the watchdog (watchdog.py), the summary
(summary.py), saved edits applied live (reload.py), signals (stopping.py), the taps that
watch it (taps.py, metrics.py, monitor.py, the --record format in recording.py), the
export of a recording (export.py), and ``pete-osc bench`` (bench.py, on the frames in
bench_frames/)."""
