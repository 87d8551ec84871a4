"""Which output each of a mapping's targets gets (OSC, notes as OSC, Lyria RealTime, the
built-in synth, a MIDI port), keeping the open ones a reloaded mapping did not change."""

from __future__ import annotations

from ..errors import PeteError
from ..mapping.config import MappingConfig
from .base import BaseOutput
from .lyria import LyriaOutput
from .midi import MidiOutput
from .osc import OscNotes, OscOutput
from .synth_output import SynthOutput


def outputs_for(sender, mapping: MappingConfig) -> tuple[dict[str, BaseOutput], list]:
    """The outputs ``mapping`` names, for ``sender`` (its open outputs, its MIDI backend,
    where its synth plays): those already open where the target did not change, new ones
    (not yet opened) for the rest; and the open ones no longer named."""
    outputs: dict[str, BaseOutput] = {}
    for name, target in mapping.osc.items():
        out = sender.outputs.get(name)
        if out is not None and out.same_target(target):
            outputs[name] = out
        else:
            outputs[name] = OscOutput(target, mapping.bundle, mapping.bundle_delay)
    for name, target in mapping.lyria.items():
        out = sender.outputs.get(name)
        outputs[name] = out if out is not None and out.same_target(target) else \
            LyriaOutput(target, sender.play or "default", where=f"{mapping.path}:{target.line}: ")
    ports = any(not t.synth and not t.osc for t in mapping.midi.values())
    backend = sender._midi_backend(mapping) if ports else None
    for name, target in mapping.midi.items():
        out = sender.outputs.get(name)
        if out is not None and out.same_target(target):
            outputs[name] = out
        elif target.osc:  # notes as OSC, through that target's output
            outputs[name] = OscNotes(target, lambda t=target.osc: sender.outputs.get(t))
        elif target.synth:
            outputs[name] = SynthOutput(target, sender.play)
        elif backend is not None:
            try:  # a port named in the mapping must exist before anything opens
                outputs[name] = MidiOutput(target, backend, sender.midi_api)
            except PeteError as exc:
                raise PeteError(f"{mapping.path}:{target.line}: {exc}") from None
    gone = [out for name, out in sender.outputs.items() if outputs.get(name) is not out]
    return outputs, gone
