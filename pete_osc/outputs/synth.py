"""The built-in synth's sound (issue 30): a small polyphonic synth played by ``mido``
messages, in numpy, with time passed in as samples: ``send(message)`` then
``render(frames)`` gives the next stereo samples. No clock, no thread, no device: the
real-time player and the offline render (``pete-osc export ... -o show.wav``) both drive
this core.

Voices are additive: each oscillator is a sum of harmonics up to the Nyquist limit (no
aliasing), and the resonant low-pass filter (CC 74 cutoff, CC 71 resonance) is each
harmonic's gain through a two-pole low-pass's magnitude response, so it costs nothing per
sample and cannot blow up. A channel's program picks its patch (General MIDI's families:
bass 32-39, pads and strings 48-55 and 88-95, leads 80-87, everything else a pluck);
channel 10 is a drum kit. CC 73 / 72 scale the attack and release, CC 7 is the volume,
CC 10 the pan, CC 91 the reverb send, CC 64 the sustain pedal, pitch bend ±2 semitones;
CC 120 / 123 and :meth:`Synth.all_off` end every note.

The rules of the MIDI outputs hold: a pitch is never on twice on a channel (a second
note-on retriggers its voice), every note-off releases its voice (or hands it to the
pedal), and after the last note-off and its release the output is silent.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RATE = 48000
CHUNK = 512  # samples rendered at a time at most (shorter than every reverb delay)
TABLE = 2048  # samples in one cycle of a voice's wave (remade when its pitch or filter moves)
DRUMS = 9  # channel 10, counted from 0 as mido counts
GAIN = 3.0  # the mix into the soft clip (a pad chord of five notes peaks near -6 dBFS)


@dataclass(frozen=True)
class Patch:
    name: str
    wave: str  # saw | square | sine
    cutoff: float  # Hz at CC 74 = 64
    attack: float  # s
    decay: float  # s
    sustain: float  # level 0-1
    release: float  # s
    detune: float = 0.0  # cents of a second oscillator (0: none)
    level: float = 0.5


PATCHES = {
    "pluck": Patch("pluck", "saw", 2400, 0.003, 0.35, 0.0, 0.25),
    "bass": Patch("bass", "square", 700, 0.005, 0.2, 0.7, 0.12, level=0.6),
    "pad": Patch("pad", "saw", 1500, 0.6, 0.5, 0.8, 1.2, detune=9.0, level=0.35),
    "lead": Patch("lead", "saw", 3500, 0.01, 0.2, 0.7, 0.15, detune=5.0, level=0.4),
}


def patch_for(program: int) -> Patch:
    """The patch a General MIDI program number sounds with."""
    if 32 <= program <= 39:
        return PATCHES["bass"]
    if 48 <= program <= 55 or 88 <= program <= 95:
        return PATCHES["pad"]
    if 80 <= program <= 87:
        return PATCHES["lead"]
    return PATCHES["pluck"]


def _amplitudes(wave: str, count: int) -> np.ndarray:
    k = np.arange(1, count + 1, dtype=np.float64)
    if wave == "sine":
        return (k == 1).astype(np.float64)
    if wave == "square":
        return np.where(k % 2 == 1, 1.0 / k, 0.0)
    return 1.0 / k


@dataclass
class Channel:
    patch: Patch = PATCHES["pluck"]
    volume: int = 100
    pan: int = 64
    cutoff: int = 64
    resonance: int = 0
    attack: int = 64
    release: int = 64
    reverb: int = 40
    bend: float = 0.0  # semitones
    pedal: bool = False


class Voice:
    """One sounding note: its oscillators' phases and its envelope."""

    def __init__(self, channel: int, note: int, velocity: int, patch: Patch, age: int):
        self.channel, self.note, self.patch, self.age = channel, note, patch, age
        self.velocity = velocity
        self.phases = [0.0, 0.25] if patch.detune else [0.0]
        self.level = 0.0
        self.stage = "attack"  # attack | decay | sustain | release | done
        self.released = False  # the key is up (a pedal may still hold it)
        self.held = False  # released while the pedal was down
        self.drum_t = 0.0
        self._tables: dict[int, tuple] = {}

    def table(self, i: int, wave: str, f: float, cutoff: float, q: float, rate: int):
        """One cycle of oscillator ``i``: its harmonics below Nyquist, each through the
        low-pass's gain at its frequency (one inverse FFT, remade only on a change)."""
        key = (i, wave, round(f, 3), round(cutoff, 1), round(q, 3))
        if self._tables.get(i, (None,))[0] != key:
            count = max(1, min(TABLE // 2 - 1, int(0.45 * rate / f)))
            k = np.arange(1, count + 1)
            ratio = k * f / cutoff
            gain = _amplitudes(wave, count) / np.sqrt((1 - ratio ** 2) ** 2 + (ratio / q) ** 2)
            spectrum = np.zeros(TABLE // 2 + 1, complex)
            spectrum[1:count + 1] = -0.5j * TABLE * gain
            self._tables[i] = (key, np.fft.irfft(spectrum, TABLE))
        return self._tables[i][1]

    def retrigger(self, velocity: int, age: int) -> None:
        self.velocity, self.age = velocity, age
        self.stage, self.released, self.held = "attack", False, False
        self.drum_t = 0.0

    def release(self) -> None:
        self.released = True
        if self.stage != "done":
            self.stage = "release"

    def envelope(self, n: int, attack: float, release: float) -> np.ndarray:
        """The next ``n`` levels, linear segments, stage changes inside the chunk."""
        p, out, at = self.patch, np.empty(n), 0
        while at < n:
            if self.stage == "attack":
                step = 1.0 / max(1.0, attack * RATE)
                count = min(n - at, int(np.ceil((1.0 - self.level) / step)))
                out[at:at + count] = self.level + step * np.arange(1, count + 1)
                self.level = min(1.0, self.level + step * count)
                if self.level >= 1.0:
                    self.level, self.stage = 1.0, "decay"
            elif self.stage == "decay":
                step = (1.0 - p.sustain) / max(1.0, p.decay * RATE)
                count = min(n - at, max(1, int(np.ceil((self.level - p.sustain) / max(step, 1e-12)))))
                out[at:at + count] = np.maximum(p.sustain, self.level - step * np.arange(1, count + 1))
                self.level = max(p.sustain, self.level - step * count)
                if self.level <= p.sustain:
                    self.stage = "sustain" if p.sustain > 0 else "done"
            elif self.stage == "sustain":
                out[at:] = self.level
                count = n - at
            elif self.stage == "release":
                step = 1.0 / max(1.0, release * RATE)
                count = min(n - at, max(1, int(np.ceil(self.level / step))))
                out[at:at + count] = np.maximum(0.0, self.level - step * np.arange(1, count + 1))
                self.level = max(0.0, self.level - step * count)
                if self.level <= 0.0:
                    self.stage = "done"
            else:
                out[at:] = 0.0
                count = n - at
            at += count
        return out


class Synth:
    """See the module docstring. ``voices``: at most this many sound at once (the oldest
    gives way)."""

    def __init__(self, rate: int = RATE, voices: int = 32, seed: int = 0):
        self.rate, self.max_voices = rate, voices
        self.channels = [Channel() for _ in range(16)]
        self.channels[DRUMS].reverb = 20
        self.voices: list[Voice] = []
        self._age = 0
        self._noise = np.random.default_rng(seed)
        delays = [1687, 1601, 2053, 2251, 1867, 2399]  # samples at 48 kHz: 33-50 ms
        self._combs = [np.zeros(d) for d in delays]
        self._comb_at = [0] * len(delays)

    # ---- messages ----------------------------------------------------------------------
    def send(self, message) -> None:
        """Apply a ``mido.Message`` at the start of the next rendered sample."""
        kind = message.type
        if kind == "note_on" and message.velocity > 0:
            self._note_on(message.channel, message.note, message.velocity)
        elif kind in ("note_on", "note_off"):
            self._note_off(message.channel, message.note)
        elif kind == "control_change":
            self._control(message.channel, message.control, message.value)
        elif kind == "program_change":
            self.channels[message.channel].patch = patch_for(message.program)
        elif kind == "pitchwheel":
            self.channels[message.channel].bend = 2.0 * message.pitch / 8192.0

    def _note_on(self, channel: int, note: int, velocity: int) -> None:
        self._age += 1
        for voice in self.voices:  # never the same pitch twice on a channel
            if voice.channel == channel and voice.note == note and voice.stage != "done":
                voice.retrigger(velocity, self._age)
                return
        if len(self.voices) >= self.max_voices:
            self.voices.remove(min(self.voices, key=lambda v: (not v.released, v.age)))
        patch = self.channels[channel].patch
        self.voices.append(Voice(channel, note, velocity, patch, self._age))

    def _note_off(self, channel: int, note: int) -> None:
        for voice in self.voices:
            if voice.channel == channel and voice.note == note and not voice.released:
                if channel != DRUMS and self.channels[channel].pedal:
                    voice.released = voice.held = True
                elif channel != DRUMS:
                    voice.release()
                else:
                    voice.released = True

    def _control(self, channel: int, control: int, value: int) -> None:
        ch = self.channels[channel]
        names = {7: "volume", 10: "pan", 74: "cutoff", 71: "resonance", 73: "attack",
                 72: "release", 91: "reverb"}
        if control in names:
            setattr(ch, names[control], value)
        elif control == 64:
            ch.pedal = value >= 64
            if not ch.pedal:
                for voice in self.voices:
                    if voice.channel == channel and voice.held:
                        voice.held = False
                        voice.release()
        elif control in (120, 123):
            for voice in self.voices:
                if voice.channel == channel:
                    voice.release()
                    if control == 120:
                        voice.stage = "done"

    def all_off(self) -> None:
        """Every note released, every pedal up (the end of a show, a reload, a signal)."""
        for ch in self.channels:
            ch.pedal = False
        for voice in self.voices:
            voice.held = False
            voice.release()

    @property
    def sounding(self) -> list[tuple[int, int]]:
        """(channel, note) of every voice still making sound."""
        return [(v.channel, v.note) for v in self.voices if v.stage != "done"]

    # ---- sound -------------------------------------------------------------------------
    def render(self, frames: int) -> np.ndarray:
        """The next ``frames`` samples, stereo float32 in -1..1, shape (frames, 2)."""
        out = np.zeros((frames, 2), np.float32)
        at = 0
        while at < frames:
            n = min(CHUNK, frames - at)
            out[at:at + n] = self._chunk(n)
            at += n
        return out

    def _chunk(self, n: int) -> np.ndarray:
        dry = np.zeros((n, 2))
        send = np.zeros(n)
        for voice in self.voices:
            ch = self.channels[voice.channel]
            mono = self._drum(voice, n) if voice.channel == DRUMS else self._tone(voice, ch, n)
            gain = (ch.volume / 127.0) ** 2
            angle = ch.pan / 127.0 * np.pi / 2
            dry[:, 0] += mono * gain * np.cos(angle)
            dry[:, 1] += mono * gain * np.sin(angle)
            send += mono * gain * (ch.reverb / 127.0)
        self.voices = [v for v in self.voices if v.stage != "done"]
        wet = self._reverb(send)
        return np.tanh(GAIN * (dry + wet * 0.35)).astype(np.float32)

    def _tone(self, voice: Voice, ch: Channel, n: int) -> np.ndarray:
        p = voice.patch
        env = voice.envelope(n, p.attack * 2 ** ((ch.attack - 64) / 21.0),
                             p.release * 2 ** ((ch.release - 64) / 21.0))
        f0 = 440.0 * 2 ** ((voice.note - 69 + ch.bend) / 12.0)
        cutoff = min(0.45 * self.rate, p.cutoff * 2 ** ((ch.cutoff - 64) / 16.0)
                     * (0.6 + 0.8 * voice.velocity / 127.0))
        q = 0.707 + 11.0 * ch.resonance / 127.0
        t = np.arange(n)
        out = np.zeros(n)
        for i, phase in enumerate(voice.phases):
            f = f0 * 2 ** ((p.detune if i else 0.0) / 1200.0)
            table = voice.table(i, p.wave, f, cutoff, q, self.rate)
            at = (phase + f / self.rate * t) % 1.0 * TABLE
            low = at.astype(np.int64)
            frac = at - low
            out += table[low] + frac * (table[(low + 1) % TABLE] - table[low])
            voice.phases[i] = (phase + f / self.rate * n) % 1.0
        level = p.level * (voice.velocity / 127.0) ** 1.5 / len(voice.phases)
        return out * env * level * 0.5

    def _drum(self, voice: Voice, n: int) -> np.ndarray:
        t = voice.drum_t + np.arange(n) / self.rate
        voice.drum_t += n / self.rate
        note, v = voice.note, (voice.velocity / 127.0) ** 1.5
        if note in (35, 36):  # kick: a falling sine
            phase = 2 * np.pi * (45 * t + 75 * 0.04 * (1 - np.exp(-t / 0.04)))
            sound, length = np.sin(phase) * np.exp(-t / 0.18), 0.9
        elif note in (38, 40, 37, 39):  # snare, clap: noise and a tone
            noise = self._noise.standard_normal(n)
            sound = (0.6 * noise + 0.5 * np.sin(2 * np.pi * 185 * t)) * np.exp(-t / 0.07)
            length = 0.5
        elif note in (42, 44, 46, 49, 51, 57):  # hats, cymbals: bright noise
            noise = np.diff(self._noise.standard_normal(n + 1))
            tail = 0.04 if note in (42, 44) else 0.35 if note in (46, 51) else 0.9
            sound, length = 0.35 * noise * np.exp(-t / tail), tail * 8
        else:  # toms and the rest: a sine at the note's pitch
            f = 440.0 * 2 ** ((note - 69) / 12.0)
            sound, length = np.sin(2 * np.pi * f * t) * np.exp(-t / 0.2), 1.2
        if voice.stage == "release":  # all notes off: a 50 ms fade, then done
            voice.level = max(voice.level, 1e-9) if voice.level else 1.0
            sound = sound * voice.envelope(n, 0.0, 0.05)
        elif t[-1] >= length:
            voice.stage = "done"
        return sound * v * 0.6

    def _reverb(self, send: np.ndarray) -> np.ndarray:
        """Parallel feedback combs, their delays longer than a chunk (so a chunk reads
        only the past): the left channel sums half of them, the right the other half."""
        n = len(send)
        out = np.zeros((n, 2))
        for i, ring in enumerate(self._combs):
            d, at = len(ring), self._comb_at[i]
            idx = (at + np.arange(n)) % d
            y = send + 0.78 * ring[idx]
            ring[idx] = y
            self._comb_at[i] = (at + n) % d
            out[:, i % 2] += y / (len(self._combs) / 2)
        return out


def render_timed(timed, end: float, rate: int = RATE, tail: float = 3.0,
                 synth=None) -> np.ndarray:
    """Offline: ``timed`` (seconds, ``mido.Message``) in time order played into one synth
    (``synth``, else a new :class:`Synth`) from 0 to ``end``, then every note released
    and ``tail`` seconds of its ringing out (cut where all is silent). Stereo float32,
    shape (samples, 2)."""
    synth = synth if synth is not None else Synth(rate)
    parts, done = [], 0
    for at, message in timed:
        sample = max(done, int(round(at * rate)))
        if sample > done:
            parts.append(synth.render(sample - done))
            done = sample
        synth.send(message)
    if int(end * rate) > done:
        parts.append(synth.render(int(end * rate) - done))
    synth.all_off()
    for _ in range(int(tail * rate / CHUNK)):  # the releases and the reverb ring out
        parts.append(synth.render(CHUNK))
        if not synth.voices and np.abs(parts[-1]).max() < 1e-4:
            break
    return np.concatenate(parts) if parts else np.zeros((0, 2), np.float32)


def write_wav(path, samples: np.ndarray, rate: int = RATE) -> None:
    """16-bit stereo WAV (the standard library's ``wave``)."""
    import wave

    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm.tobytes())
