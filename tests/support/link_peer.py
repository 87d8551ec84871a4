"""A second Ableton Link peer for the quantize tests, in its own process: joins the
session, sets its tempo, and for each OSC message it receives prints where on the shared
beat timeline it arrived (one JSON line each).

    python tests/support/link_peer.py OSC_PORT BPM
"""

import json
import socket
import sys
import threading
import time

import link
from pythonosc.osc_message import OscMessage

port, bpm = int(sys.argv[1]), float(sys.argv[2])
session = link.Link(bpm)
session.enabled = True


def listen(sock: socket.socket) -> None:
    """Each datagram's arrival on the shared timeline, taken the moment it is read."""
    while True:
        data = sock.recv(65536)
        micros = session.clock().micros()
        state = session.captureAppSessionState()
        message = OscMessage(data)
        print(json.dumps({"address": message.address, "args": list(message.params),
                          "tempo": state.tempo(), "beat": state.beatAtTime(micros, 4)}), flush=True)


sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", port))
threading.Thread(target=listen, args=(sock,), daemon=True).start()
while session.numPeers() < 1:
    time.sleep(0.05)
state = session.captureAppSessionState()
state.setTempo(bpm, session.clock().micros())
session.commitAppSessionState(state)
print(json.dumps({"joined": session.numPeers(), "tempo": bpm}), flush=True)
while True:
    time.sleep(1)
