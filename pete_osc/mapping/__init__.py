"""The mapping: events to messages. The mapping file's records (config.py) and its
loader with its checks, the router that turns events into OSC and MIDI messages
(router.py) with its value shaping (shape.py), chords (harmony.py) and the note ledger
(notes.py), and learn mode's sweeps (learn.py). Pure, the time passed in. Gives
:class:`~pete_osc.records.OscMessage` and :class:`~pete_osc.records.MidiMessage`."""
