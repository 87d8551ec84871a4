"""The built-in synth's other engine: FluidSynth (the system's libfluidsynth, through
pyfluidsynth) playing General MIDI voices from a SoundFont, with the same face as
:class:`~pete_osc.outputs.synth.Synth` (``send`` a ``mido.Message``, ``render`` frames,
``all_off``, ``voices``), so the player's child process, its ring, its WAV writer and the
offline export use it unchanged.

The shipped SoundFont is ``sf_GMbank.sf2`` (4.2 MB: all 128 General MIDI programs and a
drum kit; public domain, as Debian's copyright file for ``csound-soundfont`` says).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SOUNDFONT = Path(__file__).with_name("sounds") / "sf_GMbank.sf2"
GAIN = 0.5  # FluidSynth's master gain (its default 0.2 is quiet beside the numpy synth)


def missing(soundfont: str = "") -> str | None:
    """Why FluidSynth cannot play here (in words, for the start-up line), or None."""
    try:
        import fluidsynth  # noqa: F401
    except ImportError as exc:
        if "fluidsynth" in str(exc).lower() and "no module" not in str(exc).lower():
            return ("FluidSynth's library is not installed (Debian/Ubuntu: apt install "
                    "libfluidsynth3; macOS: brew install fluid-synth)")
        return "pyfluidsynth is not installed (pip install pyfluidsynth)"
    except OSError as exc:
        return f"FluidSynth's library cannot be loaded ({exc})"
    path = Path(soundfont) if soundfont else SOUNDFONT
    if not path.is_file():
        return f"no SoundFont at {path}"
    return None


class FluidSynth:
    """See the module docstring. ``soundfont``: a .sf2 file (default: the shipped one)."""

    def __init__(self, rate: int = 48000, soundfont: str = ""):
        import fluidsynth

        self.rate = rate
        self.fs = fluidsynth.Synth(samplerate=float(rate), gain=GAIN)
        self.font = self.fs.sfload(str(soundfont or SOUNDFONT))
        if self.font < 0:
            raise ValueError(f"FluidSynth cannot read the SoundFont {soundfont or SOUNDFONT}")
        for channel in range(16):  # General MIDI: channel 10 is the drum kit (bank 128)
            self.fs.program_select(channel, self.font, 128 if channel == 9 else 0, 0)

    def send(self, message) -> None:
        """One ``mido.Message`` (the ones a mapping sends; others are ignored)."""
        kind = message.type
        if kind == "note_on" and message.velocity > 0:
            self.fs.noteon(message.channel, message.note, message.velocity)
        elif kind in ("note_on", "note_off"):
            self.fs.noteoff(message.channel, message.note)
        elif kind == "control_change":
            self.fs.cc(message.channel, message.control, message.value)
        elif kind == "program_change":
            self.fs.program_select(message.channel, self.font,
                                   128 if message.channel == 9 else 0, message.program)
        elif kind == "pitchwheel":
            self.fs.pitch_bend(message.channel, message.pitch)

    def all_off(self) -> None:
        """Every note released (they ring out), every pedal up."""
        for channel in range(16):
            self.fs.cc(channel, 64, 0)
            self.fs.cc(channel, 123, 0)

    @property
    def voices(self) -> int:
        """Voices still making sound."""
        return self.fs.get_active_voice_count()

    def render(self, frames: int) -> np.ndarray:
        """The next ``frames`` samples, stereo float32 in -1..1, shape (frames, 2)."""
        pcm = self.fs.get_samples(frames)
        return (np.asarray(pcm, np.float32) / 32768.0).reshape(frames, 2)

    def close(self) -> None:
        self.fs.delete()
