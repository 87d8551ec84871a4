"""Inputs from the DAW: the OSC input that hears the DAW's state and /pete/context values
(daw.py), and the clocks quantised routes wait for: Ableton Link or MIDI clock
(clock.py)."""
