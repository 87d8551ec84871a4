"""Outputs: where messages leave the program. One file per transport, one small class each
with ``send`` and ``close``; only these know about sockets and MIDI ports."""

from .base import Output, Unavailable
from .midi import MidiOutput, list_ports, open_midi_api
from .osc import OscOutput

__all__ = ["Output", "Unavailable", "MidiOutput", "OscOutput", "list_ports", "open_midi_api"]
