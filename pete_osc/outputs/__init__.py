"""Outputs: where messages leave the program. The sender (sender.py) owns them all on one
thread; one file per transport, one small class each on :class:`BaseOutput` (mido's
shape: public ``send``/``close``, a private ``_send``), and the per-target rate cap
(pace.py); only these know about sockets and MIDI ports."""

from .base import BaseOutput, Unavailable
from .midi import MidiOutput, list_ports, open_midi_api
from .osc import OscOutput

__all__ = ["BaseOutput", "Unavailable", "MidiOutput", "OscOutput", "list_ports", "open_midi_api"]
