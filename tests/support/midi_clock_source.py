"""A drum machine's MIDI clock, in its own process, on a JACK output port: waits for a
line on stdin, then sends Start and 24 clock ticks a beat at the given tempo, printing
the time.monotonic() of every bar's first tick (every 96 ticks) as it goes.

    python tests/support/midi_clock_source.py BPM       (JACK_DEFAULT_SERVER names the server)
"""

import sys
import threading
import time

import mido

bpm = float(sys.argv[1])
backend = mido.Backend("mido.backends.rtmidi/UNIX_JACK", load=True)
out = backend.open_output("Clock Out", virtual=True, client_name="drummachine")
print("ready", flush=True)
sys.stdin.readline()
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
out.send(mido.Message("start"))
start, n = time.monotonic(), 0
while not done.is_set():
    at = start + n * 60.0 / bpm / 24
    while time.monotonic() < at:
        time.sleep(0.0003)
    out.send(mido.Message("clock"))
    if n % 96 == 0:
        print(repr(time.monotonic()), flush=True)
    n += 1
out.send(mido.Message("stop"))
out.close()
