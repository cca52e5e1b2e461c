"""A synthetic demo corpus: ten genres of deterministic, synthesised music.

Every track is rendered from a *score* (tempo, key, chord progression, drum
patterns, bass line, comping, melody) drawn from a random generator seeded by a
stable hash of ``(genre, index, seed)``, then *performed* by a few small
synthesisers: wavetable voices with an attack/decay envelope (piano, plucked and
distorted guitars, strings, organ, brass, formant voices), drums built from
pitched sine sweeps and filtered noise, and a master chain (reverb, compression,
tone, noise floor, gain). Score decisions use their own generator, so a track
rendered at 16 kHz and at 48 kHz plays the same music.

The genres follow their real counterparts where a classifier would look: tempo
range, drum pattern, instrument timbre, harmony and scale, noise and dynamics.
They overlap the way real genres do (blues, jazz and country share swing and
instruments; rock and metal share distorted guitars; disco and pop share synths
and tempo), and every track draws its own tempo, key, progression, instrument
levels, noise and gain, so no single scalar (tempo, loudness, spectral
centroid, zero-crossing rate) separates the ten classes.

Rendering is vectorised per note (one table look-up over the note's samples)
and per drum (an impulse train convolved with the drum's sound): a 30 s track
takes a fraction of a second.
"""

from __future__ import annotations

import hashlib
import math
import os
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy import signal

from genre.config import GENRES
from genre.errors import ParameterError

__all__ = [
    "CORPUS_EXTENSIONS",
    "CORPUS_SAMPLE_RATES",
    "WRITE_FORMATS",
    "render_track",
    "write_audio",
    "write_corpus",
]

#: Extension → (libsndfile format, subtype) that :func:`write_audio` writes.
WRITE_FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
    ".au": ("AU", "PCM_16"),
    ".aiff": ("AIFF", "PCM_16"),
}

#: Extensions :func:`write_corpus` cycles through, track by track.
CORPUS_EXTENSIONS = (".wav", ".flac", ".ogg")
#: Sample rates :func:`write_corpus` cycles through, in Hz.
CORPUS_SAMPLE_RATES = (22050, 44100, 16000, 48000)
# Tracks whose running number modulo 5 is in this set are written in stereo:
# periods 3, 4 and 5 are coprime, so every combination occurs.
_STEREO_SLOTS = (1, 3)

_TABLE = 4096  # wavetable length (a power of two: the phase wraps with a mask)
_REVERB_RATE = 11025  # Hz: reverb tails are convolved at this rate


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def render_track(
    genre: str, *, index: int, seed: int = 0, seconds: float = 30.0, sample_rate: int = 22050
) -> np.ndarray:
    """Render one synthetic track of ``genre``.

    Parameters
    ----------
    genre : str
        One of :data:`genre.config.GENRES`.
    index : int >= 0
        Track number within the genre; each index is a different piece.
    seed : int
        Corpus seed; the same ``(genre, index, seed)`` gives the same track.
    seconds : float > 0
        Duration in seconds.
    sample_rate : int >= 8000
        Rate in Hz to render at. The music does not depend on it.

    Returns
    -------
    y : np.ndarray [shape=(samples,), dtype=float32]
        Mono audio in [-1, 1], ``samples = round(seconds * sample_rate)``.

    Raises
    ------
    ParameterError
        For an unknown genre or an out-of-range argument.
    """
    if genre not in GENRES:
        raise ParameterError(f"genre={genre!r} is not one of {', '.join(GENRES)}")
    if not isinstance(index, (int, np.integer)) or isinstance(index, bool) or index < 0:
        raise ParameterError(f"index={index!r} must be a non-negative integer")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ParameterError(f"seed={seed!r} must be an integer")
    _check_seconds(seconds)
    if (
        not isinstance(sample_rate, (int, np.integer))
        or isinstance(sample_rate, bool)
        or sample_rate < 8000
    ):
        raise ParameterError(f"sample_rate={sample_rate!r} must be an integer >= 8000")
    digest = hashlib.sha256(f"genre.synth:{genre}:{int(index)}:{int(seed)}".encode()).digest()
    tr = _Track(
        rng=np.random.default_rng(int.from_bytes(digest[:8], "little")),
        noise=np.random.default_rng(int.from_bytes(digest[8:16], "little")),
        sample_rate=int(sample_rate),
        samples=max(1, int(round(seconds * sample_rate))),
    )
    return _ARRANGERS[genre](tr)


def write_audio(path: str | Path, y: np.ndarray, *, sample_rate: int) -> Path:
    """Write ``y`` in the format its extension names (see :data:`WRITE_FORMATS`).

    Parameters
    ----------
    path : str or Path
        Ends in ``.wav``, ``.flac``, ``.ogg``, ``.mp3``, ``.au`` or ``.aiff``;
        missing parent folders are created.
    y : np.ndarray [shape=(samples,) or (samples, channels)]
        Finite audio; samples outside [-1, 1] are clipped.
    sample_rate : int > 0
        Rate in Hz.

    Returns
    -------
    path : Path

    Raises
    ------
    ParameterError
        For an unknown extension or malformed audio.
    """
    path = Path(path)
    fmt = WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ParameterError(f"{path.name}: extension must be one of {', '.join(WRITE_FORMATS)}")
    y = np.asarray(y)
    if y.ndim not in (1, 2) or y.shape[0] == 0 or not np.issubdtype(y.dtype, np.floating):
        raise ParameterError(
            f"y of shape {y.shape} and dtype {y.dtype}: need float (samples,) or (samples, channels)"
        )
    if not np.all(np.isfinite(y)):
        raise ParameterError("y must be finite")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ParameterError(f"sample_rate={sample_rate!r} must be a positive integer")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(y, -1.0, 1.0), int(sample_rate), format=fmt[0], subtype=fmt[1])
    return path


def write_corpus(
    output: str | Path, *, per_genre: int = 10, seconds: float = 30.0, seed: int = 0, workers: int | None = None
) -> list[Path]:
    """Write a GTZAN-style synthetic corpus: ``output/<genre>/<genre>.<NNNNN>.<ext>``.

    Formats, sample rates and channel counts are mixed deterministically: track
    ``k`` (counting across genres) is written as ``CORPUS_EXTENSIONS[k % 3]`` at
    ``CORPUS_SAMPLE_RATES[k % 4]`` Hz, in stereo when ``k % 5`` is 1 or 3 (the
    two channels differ by a small pan and delay). Existing files are overwritten.

    Parameters
    ----------
    output : str or Path
        Folder to write into (created if missing).
    per_genre : int >= 1
        Tracks per genre.
    seconds : float > 0
        Duration of each track in seconds.
    seed : int
        Corpus seed; the same arguments write the same audio.
    workers : int or None
        Processes rendering tracks in parallel (``None``: one per core).

    Returns
    -------
    paths : list[Path]
        ``len(GENRES) * per_genre`` files, genre by genre.

    Raises
    ------
    ParameterError
        For ``per_genre < 1``, ``seconds <= 0`` or an ``output`` that is a file.
    """
    if not isinstance(per_genre, (int, np.integer)) or isinstance(per_genre, bool) or per_genre < 1:
        raise ParameterError(f"per_genre={per_genre!r} must be a positive integer")
    _check_seconds(seconds)
    root = Path(output)
    if root.exists() and not root.is_dir():
        raise ParameterError(f"output={str(root)!r} is a file, not a folder")
    jobs = [(root, genre, i, g * per_genre + i, seed, seconds) for g, genre in enumerate(GENRES) for i in range(per_genre)]
    workers = min(workers if workers is not None else (os.cpu_count() or 1), len(jobs))
    if workers <= 1:
        return [_write_one(*job) for job in jobs]
    # Each track is independent and pure numpy: one process per core (the order of
    # the returned paths and the audio are the same as with one process).
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_write_one, *zip(*jobs, strict=True), chunksize=max(1, len(jobs) // (4 * workers))))


def _write_one(root: Path, genre: str, i: int, k: int, seed: int, seconds: float) -> Path:
    ext = CORPUS_EXTENSIONS[k % len(CORPUS_EXTENSIONS)]
    rate = CORPUS_SAMPLE_RATES[k % len(CORPUS_SAMPLE_RATES)]
    y = render_track(genre, index=i, seed=seed, seconds=seconds, sample_rate=rate)
    if k % 5 in _STEREO_SLOTS:
        y = _stereo(y, sample_rate=rate, k=k)
    return write_audio(root / genre / f"{genre}.{i:05d}{ext}", y, sample_rate=rate)


def _check_seconds(seconds: float) -> None:
    if (
        not isinstance(seconds, (int, float, np.number))
        or not math.isfinite(seconds)
        or seconds <= 0
    ):
        raise ParameterError(f"seconds={seconds!r} must be a positive number")


def _stereo(y: np.ndarray, *, sample_rate: int, k: int) -> np.ndarray:
    """Two slightly different channels: a small pan and a sub-millisecond delay."""
    pan = 0.08 + 0.04 * (k % 3)
    delay = int(round(sample_rate * (0.0002 + 0.0001 * (k % 4))))
    right = np.concatenate([np.zeros(delay, np.float32), y[: len(y) - delay]])
    return np.stack([(1 + pan) * y, (1 - pan) * right], axis=1) / (1 + pan)


# ---------------------------------------------------------------------------
# Performance: tracks, notes, instruments, drums, effects
# ---------------------------------------------------------------------------


@dataclass
class _Track:
    """One track being rendered: its generators, sizes and the time grid."""

    rng: np.random.Generator  # the score: every musical decision (rate independent)
    noise: np.random.Generator  # the signal: noise sources, whose length depends on the rate
    sample_rate: int
    samples: int
    bpm: float = 120.0
    beats_per_bar: int = 4
    swing: float = 0.5  # where the off-beat of each swing unit falls: 0.5 straight, 0.67 triplet
    swing_unit: float = 0.5  # beats: 0.5 swings eighths, 0.25 swings sixteenths
    humanize_s: float = 0.004  # timing jitter (standard deviation)
    tables: dict = field(default_factory=dict)

    @property
    def beats(self) -> int:
        """Beats in the score: whole bars covering the track plus one."""
        bars = math.ceil(self.samples / self.sample_rate * self.bpm / 60 / self.beats_per_bar) + 1
        return bars * self.beats_per_bar

    @property
    def bars(self) -> int:
        return self.beats // self.beats_per_bar

    def seconds(self, beats: np.ndarray) -> np.ndarray:
        """Onset times in seconds of score positions in beats, after swing."""
        b = np.asarray(beats, dtype=float)
        pair = 2 * self.swing_unit
        whole = np.floor(b / pair + 1e-9)
        f = b / pair - whole
        f = np.where(f < 0.5, f * self.swing / 0.5, self.swing + (f - 0.5) * (1 - self.swing) / 0.5)
        return (whole + f) * pair * 60.0 / self.bpm

    def jitter(self, n: int) -> np.ndarray:
        return self.rng.normal(0.0, self.humanize_s, n)


@dataclass(frozen=True)
class _Note:
    beat: float
    beats: float  # how long the key is held
    pitches: tuple[float, ...]  # MIDI numbers, several for a chord
    velocity: float = 1.0
    bend: float = 0.0  # semitones the pitch slides in from (negative: from below)
    vowel: int = 0  # formant voices only


@dataclass(frozen=True)
class _Inst:
    """A wavetable voice: harmonic amplitudes and an envelope."""

    partials: tuple[float, ...]  # amplitude of harmonics 1, 2, 3, ...
    attack_s: float = 0.005
    decay_s: float = 0.5  # time constant of the decay towards ``sustain``
    sustain: float = 0.0
    release_s: float = 0.05
    mellow_s: float = 0.0  # > 0: upper harmonics fade with this time constant (plucked strings)
    vibrato_hz: float = 0.0
    vibrato_depth: float = 0.0  # fraction of the frequency
    vibrato_delay_s: float = 0.15
    detune_cents: float = 0.0  # > 0: two copies detuned apart (ensemble, supersaw)
    glide_s: float = 0.04  # time constant of a note's bend
    formants: bool = False  # partials shaped per note by the note's vowel


def _saw(k: int, tilt: float = 1.0) -> tuple[float, ...]:
    return tuple(1.0 / i**tilt for i in range(1, k + 1))


def _square(k: int, tilt: float = 1.0) -> tuple[float, ...]:
    return tuple((1.0 / i**tilt if i % 2 else 0.12 / i**tilt) for i in range(1, k + 1))


def _plucked(k: int, position: float) -> tuple[float, ...]:
    """A string plucked at ``position`` of its length: a comb-shaped spectrum."""
    return tuple(max(abs(math.sin(math.pi * i * position)), 0.05) / i for i in range(1, k + 1))


# Vowel formants (Hz, bandwidth Hz, gain) of an adult voice: a, e, i, o, u.
_VOWELS = (
    ((730, 90, 1.0), (1090, 110, 0.5), (2440, 170, 0.25)),
    ((530, 60, 1.0), (1840, 150, 0.45), (2480, 200, 0.3)),
    ((300, 50, 1.0), (2250, 170, 0.35), (3000, 250, 0.3)),
    ((570, 70, 1.0), (840, 90, 0.6), (2410, 180, 0.15)),
    ((350, 60, 1.0), (870, 100, 0.3), (2250, 200, 0.1)),
)


def _vowel_partials(f0: float, vowel: int, k: int) -> tuple[float, ...]:
    h = np.arange(1, k + 1) * f0
    env = sum(g * np.exp(-0.5 * ((h - f) / bw) ** 2) for f, bw, g in _VOWELS[vowel % len(_VOWELS)])
    return tuple(np.round((env + 0.02) / np.arange(1, k + 1) ** 0.5, 4))


def _table(tr: _Track, partials: tuple[float, ...], k: int) -> np.ndarray:
    """One period of the first ``k`` harmonics, scaled by the full set's RMS."""
    key = (partials, k)
    table = tr.tables.get(key)
    if table is None:
        spectrum = np.zeros(_TABLE // 2 + 1, dtype=complex)
        spectrum[1 : k + 1] = -1j * np.asarray(partials[:k])
        norm = math.sqrt(sum(p * p for p in partials) / 2) or 1.0
        table = np.fft.irfft(spectrum, _TABLE) * (_TABLE / 2) / norm
        tr.tables[key] = table
    return table


def _play(tr: _Track, notes: Sequence[_Note], inst: _Inst) -> np.ndarray:
    """Render ``notes`` on ``inst``: one table look-up per pitch over the note's samples."""
    sr, n = tr.sample_rate, tr.samples
    out = np.zeros(n)
    if not notes:
        return out
    beat = np.array([x.beat for x in notes])
    starts = np.maximum(tr.seconds(beat) + tr.jitter(len(notes)), 0.0)
    gates = np.maximum(tr.seconds(beat + np.array([x.beats for x in notes])) - starts, 0.02)
    offsets = tr.rng.random(len(notes))
    detunes = (0.0,) if inst.detune_cents == 0 else (-inst.detune_cents / 2, inst.detune_cents / 2)
    tail_s = inst.decay_s * 7 if inst.sustain == 0 else math.inf
    kmax = 48 if inst.formants else len(inst.partials)
    for note, t0, gate, offset in zip(notes, starts, gates, offsets, strict=True):
        i0 = int(t0 * sr)
        if i0 >= n:
            continue
        m = min(int((min(gate, tail_s) + inst.release_s) * sr), n - i0)
        if m <= 0:
            continue
        t = np.arange(m) / sr
        env = np.minimum(t / inst.attack_s, 1.0) * (
            inst.sustain + (1 - inst.sustain) * np.exp(-t / inst.decay_s)
        )
        env *= np.clip((gate + inst.release_s - t) / inst.release_s, 0.0, 1.0)
        fade = np.exp(-t / inst.mellow_s) if inst.mellow_s > 0 else None
        y = np.zeros(m)
        for p in note.pitches:
            for cents in detunes:
                f = 440.0 * 2 ** ((p - 69 + cents / 100) / 12)
                k = max(1, min(kmax, int(0.45 * sr / f)))
                partials = (
                    _vowel_partials(round(f), note.vowel, k) if inst.formants else inst.partials
                )
                k = min(k, len(partials))
                phase = f * t + offset
                if note.bend:
                    f_from = f * 2 ** (note.bend / 12)
                    phase += (f_from - f) * inst.glide_s * (1 - np.exp(-t / inst.glide_s))
                if inst.vibrato_depth:
                    ramp = np.clip(t / inst.vibrato_delay_s - 1.0, 0.0, 1.0)
                    w = 2 * math.pi * inst.vibrato_hz
                    phase += f * inst.vibrato_depth * ramp * np.sin(w * t) / w
                idx = (phase * _TABLE).astype(np.int64) & (_TABLE - 1)
                if fade is None:
                    y += _table(tr, partials, k)[idx]
                else:
                    y += _table(tr, partials, k)[idx] * fade + _table(tr, partials, min(k, 3))[
                        idx
                    ] * (1 - fade)
        out[i0 : i0 + m] += note.velocity * env * y
    return out


def _filter(
    y: np.ndarray, *, sample_rate: int, kind: str, hz: float | tuple[float, float], order: int = 2
) -> np.ndarray:
    """Butterworth ``lowpass``/``highpass``/``bandpass``; corner frequencies are kept below Nyquist."""
    nyq = sample_rate / 2
    wn = np.clip(np.asarray(hz, dtype=float) / nyq, 1e-4, 0.95)
    if kind == "bandpass" and wn[0] >= wn[1]:
        wn = np.array([wn[1] * 0.7, wn[1]])
    sos = signal.butter(order, wn, btype=kind, output="sos")
    return signal.sosfilt(sos, y)


def _hits(tr: _Track, sound: np.ndarray, beats: np.ndarray, velocities: np.ndarray) -> np.ndarray:
    """Place a drum ``sound`` at score positions: an impulse train convolved with it."""
    out = np.zeros(tr.samples)
    if len(beats) == 0:
        return out
    idx = np.round((tr.seconds(beats) + tr.jitter(len(beats))) * tr.sample_rate).astype(np.int64)
    idx = np.maximum(idx, 0)  # a hit played early on the downbeat still sounds
    keep = idx < tr.samples
    idx, velocities = idx[keep], velocities[keep]
    if len(idx) * len(sound) > 4 * tr.samples:  # many long sounds: convolution is cheaper
        np.add.at(out, idx, velocities)
        return signal.oaconvolve(out, sound)[: tr.samples]
    for i, v in zip(idx, velocities, strict=True):
        m = min(len(sound), tr.samples - i)
        out[i : i + m] += v * sound[:m]
    return out


def _decay(tr: _Track, seconds: float, decay_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Sample times ``t`` of a drum sound and its exponential decay ``exp(-t / decay_s)``."""
    t = np.arange(int(seconds * tr.sample_rate)) / tr.sample_rate
    return t, np.exp(-t / decay_s)


def _layer(*sounds: np.ndarray) -> np.ndarray:
    """Sum drum sounds of different lengths (a snare and a clap struck together)."""
    out = np.zeros(max(len(x) for x in sounds))
    for x in sounds:
        out[: len(x)] += x
    return out


def _kick(
    tr: _Track,
    *,
    hz: tuple[float, float] = (140.0, 50.0),
    sweep_s: float = 0.03,
    decay_s: float = 0.18,
    click: float = 0.3,
) -> np.ndarray:
    """A pitched sine sweep with a beater click."""
    t, env = _decay(tr, decay_s * 6, decay_s)
    phase = hz[1] * t + (hz[0] - hz[1]) * sweep_s * (1 - np.exp(-t / sweep_s))
    body = np.sin(2 * np.pi * phase) * env
    noise = tr.noise.standard_normal(len(t)) * np.exp(-t / 0.003)
    return body + click * _filter(noise, sample_rate=tr.sample_rate, kind="highpass", hz=1500)


def _snare(
    tr: _Track,
    *,
    tone_hz: float = 190.0,
    decay_s: float = 0.12,
    band_hz: tuple[float, float] = (1200, 9000),
    tone: float = 0.5,
) -> np.ndarray:
    """A noise burst (the wires) over a short tone (the head)."""
    t, env = _decay(tr, decay_s * 6, decay_s)
    wires = (
        _filter(
            tr.noise.standard_normal(len(t)),
            sample_rate=tr.sample_rate,
            kind="bandpass",
            hz=band_hz,
        )
        * env
    )
    head = (
        np.sin(2 * np.pi * tone_hz * t) + 0.5 * np.sin(2 * np.pi * 1.62 * tone_hz * t)
    ) * np.exp(-t / 0.04)
    return 1.6 * wires + tone * head


def _cymbal(
    tr: _Track, *, decay_s: float, low_hz: float = 6000.0, metal: float = 0.5
) -> np.ndarray:
    """High-passed noise plus inharmonic square partials (hats, ride, crash)."""
    t, env = _decay(tr, decay_s * 5, decay_s)
    partials = sum(
        np.sign(np.sin(2 * np.pi * f * 1.7 * t)) for f in (205.3, 304.4, 369.6, 522.7, 540.0, 800.0)
    )
    raw = tr.noise.standard_normal(len(t)) + metal * partials / 3
    return _filter(raw, sample_rate=tr.sample_rate, kind="highpass", hz=low_hz, order=4) * env


def _click(tr: _Track, *, hz: float = 1700.0, decay_s: float = 0.012) -> np.ndarray:
    """A rim shot or cross-stick: a short high tone and a click."""
    t, env = _decay(tr, decay_s * 8, decay_s)
    tone = np.sin(2 * np.pi * hz * t) + 0.6 * np.sin(2 * np.pi * hz * 0.31 * t)
    return (tone + 0.5 * tr.noise.standard_normal(len(t)) * np.exp(-t / 0.002)) * env


def _clap(tr: _Track, *, decay_s: float = 0.1) -> np.ndarray:
    """Three quick noise bursts and a tail, band-passed around 1-3 kHz."""
    t, env = _decay(tr, decay_s * 6, decay_s)
    bursts = sum(np.exp(-np.clip(t - d, 0, None) / 0.004) * (t >= d) for d in (0.0, 0.011, 0.023))
    raw = tr.noise.standard_normal(len(t)) * np.maximum(bursts * 0.8, env * (t >= 0.023))
    return _filter(raw, sample_rate=tr.sample_rate, kind="bandpass", hz=(800, 3500)) * 2


def _shaker(tr: _Track, *, decay_s: float = 0.05, attack_s: float = 0.012) -> np.ndarray:
    t, env = _decay(tr, decay_s * 6, decay_s)
    raw = tr.noise.standard_normal(len(t)) * env * np.minimum(t / attack_s, 1.0)
    return _filter(raw, sample_rate=tr.sample_rate, kind="bandpass", hz=(4000, 10000))


def _velocities(tr: _Track, pattern: str) -> np.ndarray:
    """Velocities of a drum pattern's hits: ``x`` normal, ``X`` accent, ``g`` ghost; a little random."""
    level = np.array([{"x": 1.0, "X": 1.3, "g": 0.3}[c] for c in pattern if c != "."])
    return level * tr.rng.uniform(0.85, 1.1, len(level))


@dataclass
class _Part:
    """One drum of a kit: its sound, its patterns (first is the main one), its level."""

    sound: np.ndarray
    patterns: tuple[str, ...]
    gain: float = 1.0
    fills: bool = True  # drops out under fills


def _drums(
    tr: _Track,
    parts: Sequence[_Part],
    *,
    fill_every: int = 4,
    fill: np.ndarray | None = None,
    crash: np.ndarray | None = None,
) -> np.ndarray:
    """A drum bus: every part's patterns repeated over the track, with fills and crashes.

    Every ``fill_every`` bars (most of the time) the last half bar gives way to a
    sixteenth-note ``fill`` rising in velocity, and the next bar opens with a ``crash``.
    """
    bar = tr.beats_per_bar
    fill_beats = bar / 2 if bar % 2 == 0 else 1.0
    fill_bars = []
    if fill_every and fill is not None:
        fill_bars = [b for b in range(fill_every - 1, tr.bars, fill_every) if tr.rng.random() < 0.7]
    fill_start = np.array([(b + 1) * bar - fill_beats for b in fill_bars])
    out = np.zeros(tr.samples)
    for part in parts:
        beats, vels = [], []
        cursor = 0.0
        while cursor < tr.beats:
            if tr.rng.random() < 0.75:
                pattern = part.patterns[0]
            else:
                pattern = part.patterns[tr.rng.integers(len(part.patterns))]
            steps = np.array([i for i, c in enumerate(pattern) if c != "."])
            beats.append(cursor + steps / 4)
            vels.append(_velocities(tr, pattern))
            cursor += len(pattern) / 4
        b, v = np.concatenate(beats), np.concatenate(vels)
        if part.fills and len(fill_start):
            after = b[:, None] >= fill_start[None, :]
            before = b[:, None] < fill_start[None, :] + fill_beats
            inside = (after & before).any(axis=1)
            b, v = b[~inside], v[~inside]
        out += part.gain * _hits(tr, part.sound, b, v)
    if len(fill_start):
        steps = np.arange(0, fill_beats, 0.25)
        b = (fill_start[:, None] + steps[None, :]).ravel()
        v = np.tile(np.linspace(0.5, 1.1, len(steps)), len(fill_start)) * tr.rng.uniform(0.8, 1.1, len(b))
        keep = tr.rng.random(len(b)) < 0.8
        out += _hits(tr, fill, b[keep], v[keep])
    if crash is not None:
        starts = np.array([(b + 1) * bar for b in fill_bars], dtype=float)
        out += 0.7 * _hits(tr, crash, starts, np.ones(len(starts)))
    return out


def _lowpass(tr: _Track, y: np.ndarray, *, hz: float) -> np.ndarray:
    return _filter(y, sample_rate=tr.sample_rate, kind="lowpass", hz=hz)


def _drive(
    y: np.ndarray, *, sample_rate: int, gain: float, clip: float = 1.0, cab_hz: float = 5000.0
) -> np.ndarray:
    """Distortion: tighten the lows, saturate, clip, then a guitar cabinet's low-pass."""
    y = _filter(y, sample_rate=sample_rate, kind="highpass", hz=90)
    y = np.tanh(gain * y / (np.max(np.abs(y)) + 1e-9))
    y = np.clip(y, -clip, clip)
    return _filter(y, sample_rate=sample_rate, kind="lowpass", hz=cab_hz, order=4)


def _echo(
    y: np.ndarray, *, sample_rate: int, delay_s: float, feedback: float, taps: int = 4
) -> np.ndarray:
    d = int(delay_s * sample_rate)
    out = y.copy()
    for i in range(1, taps + 1):
        if i * d >= len(y):
            break
        out[i * d :] += feedback**i * y[: len(y) - i * d]
    return out


def _reverb(tr: _Track, y: np.ndarray, *, rt60_s: float) -> np.ndarray:
    """A room: convolution with exponentially decaying noise.

    The tail of a real room is dark, so the convolution runs at 11025 Hz (4x
    cheaper at 44.1 kHz) and the result is resampled back.
    """
    rate = min(tr.sample_rate, _REVERB_RATE)
    x = soxr.resample(y, tr.sample_rate, rate, quality="LQ") if rate != tr.sample_rate else y
    t = np.arange(int(rt60_s * rate)) / rate
    ir = np.concatenate(
        [np.zeros(int(0.015 * rate)), tr.noise.standard_normal(len(t)) * np.exp(-6.9 * t / rt60_s)]
    )
    ir /= np.sqrt(np.sum(ir**2))
    wet = signal.oaconvolve(x, ir)[: len(x)]
    if rate != tr.sample_rate:
        wet = soxr.resample(wet, rate, tr.sample_rate, quality="LQ")
    return np.pad(wet, (0, max(0, len(y) - len(wet))))[: len(y)]


def _compress(
    y: np.ndarray, *, sample_rate: int, ratio: float, threshold: float = 0.35
) -> np.ndarray:
    """A feed-forward compressor on a 50 ms envelope; ``threshold`` is relative to the envelope's peak."""
    a = math.exp(-1.0 / (0.05 * sample_rate))
    start = np.mean(np.abs(y[: int(0.05 * sample_rate)]))
    env = signal.lfilter([1 - a], [1, -a], np.abs(y), zi=[a * start])[0]
    env = env / (np.max(env) + 1e-12) + 1e-9
    return y * np.where(env > threshold, (env / threshold) ** (1 / ratio - 1), 1.0)


def _rms(y: np.ndarray) -> float:
    return float(np.sqrt(np.mean(y * y))) + 1e-12


class _Mix:
    """Voices summed at random levels, with a reverb send."""

    def __init__(self, tr: _Track):
        self.tr = tr
        self.dry = np.zeros(tr.samples)
        self.send = np.zeros(tr.samples)

    def add(self, y: np.ndarray, *, db: tuple[float, float], reverb: float = 0.3) -> None:
        """Add a voice at a level (dB re. full-track RMS 0.1) drawn from ``db``."""
        if not np.any(y):
            return
        y = y * (0.1 * 10 ** (self.tr.rng.uniform(*db) / 20) / _rms(y))
        self.dry += y
        self.send += reverb * y

    def master(
        self,
        *,
        rt60_s: float,
        wet: float,
        ratio: float = 1.0,
        lowpass_hz: float | None = None,
        noise_db: float = -70.0,
        crackle: float = 0.0,
        swell_db: float = 0.0,
        limit: float = 0.0,
        peak: tuple[float, float] = (0.5, 0.95),
    ) -> np.ndarray:
        """Reverb, dynamics, compression, tone, noise floor and gain; float32 in [-1, 1]."""
        tr, sr = self.tr, self.tr.sample_rate
        y = self.dry + wet * _reverb(tr, self.send, rt60_s=rt60_s)
        if swell_db:  # phrase-long crescendi and diminuendi
            knots = np.arange(0, tr.samples / sr + 4, tr.rng.uniform(2.5, 5.0))
            db = tr.rng.uniform(-swell_db, 0, len(knots))
            y *= 10 ** (np.interp(np.arange(tr.samples) / sr, knots, db) / 20)
        if ratio > 1:
            y = _compress(y, sample_rate=sr, ratio=ratio)
        if limit:  # a mastering limiter: loud records trade crest factor for loudness
            y = np.tanh(limit * y / (np.max(np.abs(y)) + 1e-9))
        hiss = tr.noise.standard_normal(tr.samples, dtype=np.float32)
        y += hiss * (_rms(y) * 10 ** (noise_db / 20) / _rms(hiss))
        y = _filter(y, sample_rate=sr, kind="highpass", hz=30)
        if lowpass_hz:  # an old or cheap recording chain: its own hiss is dulled too
            y = _filter(y, sample_rate=sr, kind="lowpass", hz=lowpass_hz, order=4)
        if crackle:
            pops = (tr.noise.random(tr.samples) < 8.0 / sr) * tr.noise.standard_normal(tr.samples)
            y += crackle * _rms(y) * 6 * _filter(pops, sample_rate=sr, kind="highpass", hz=1500)
        y *= tr.rng.uniform(*peak) / (np.max(np.abs(y)) + 1e-9)
        return np.clip(y, -1.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------
# The score: harmony, rhythm, bass lines, comping, melodies
# ---------------------------------------------------------------------------

# Chord qualities as semitones above the root ("5" is a power chord).
_QUALITY = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "5": (0, 7, 12), "dim": (0, 3, 6), "add9": (0, 4, 7, 14),
    "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11), "m7": (0, 3, 7, 10), "m7b5": (0, 3, 6, 10),
    "9": (0, 4, 7, 10, 14), "m9": (0, 3, 7, 10, 14), "maj9": (0, 4, 7, 11, 14), "13": (0, 4, 10, 14, 21),
}

_SCALE = {
    "major": (0, 2, 4, 5, 7, 9, 11), "harmonic": (0, 2, 3, 5, 7, 8, 11),  # harmonic minor
    "dorian": (0, 2, 3, 5, 7, 9, 10), "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "blues": (0, 3, 5, 6, 7, 10), "pent_major": (0, 2, 4, 7, 9), "pent_minor": (0, 3, 5, 7, 10),
}

# Fixed degrees a bass line or riff names, in semitones above the current chord's root;
# "3" and "7" take the chord's own third and seventh, "A" approaches the next root.
_DEGREE = {"R": 0, "5": 7, "6": 9, "b7": 10, "8": 12}


@dataclass(frozen=True)
class _Chord:
    beat: float
    beats: float
    root: int  # MIDI pitch of the root in the bass register (28-39)
    quality: str

    @property
    def intervals(self) -> tuple[int, ...]:
        return _QUALITY[self.quality]


def _tonic(tr: _Track, pitch_classes: Sequence[int]) -> int:
    """A key's tonic in the bass register E1-D#2; 0 is C."""
    return 28 + (int(tr.rng.choice(pitch_classes)) - 4) % 12


def _progression(
    tr: _Track,
    bank: Sequence[Sequence[tuple[int, str, float]]],
    *,
    tonic: int,
    stretch: Sequence[float] = (1.0,),
) -> list[_Chord]:
    """Repeat one progression from ``bank`` — (semitones, quality, bars) — over the track."""
    prog = bank[tr.rng.integers(len(bank))]
    k = float(tr.rng.choice(stretch))
    chords, beat = [], 0.0
    while beat < tr.beats:
        for semis, quality, bars in prog:
            length = bars * k * tr.beats_per_bar
            chords.append(_Chord(beat, length, tonic + (semis % 12), quality))
            beat += length
    return chords


def _chord_at(chords: Sequence[_Chord], beat: float) -> _Chord:
    starts = [c.beat for c in chords]
    return chords[max(0, bisect_right(starts, beat + 1e-6) - 1)]


def _voicing(chord: _Chord, *, center: int, skip_root: bool = False) -> tuple[float, ...]:
    """Close position around ``center``: every chord tone moved to within a fifth of it."""
    ivs = chord.intervals[1:] if skip_root and len(chord.intervals) > 3 else chord.intervals
    pitches = {center - 6 + (chord.root + iv - (center - 6)) % 12 for iv in ivs}
    return tuple(sorted(pitches))


def _rhythm(pattern: str) -> list[tuple[int, int, float]]:
    """Onsets ``(step, steps, velocity)`` of a pattern: ``x`` note, ``X`` accent, ``-`` hold, ``.`` rest."""
    out = []
    for i, c in enumerate(pattern):
        if c in "xX":
            j = i + 1
            while j < len(pattern) and pattern[j] == "-":
                j += 1
            out.append((i, j - i, 1.25 if c == "X" else 1.0))
    return out


def _onsets(
    tr: _Track, patterns: Sequence[str], *, main: float = 0.7
) -> Iterator[tuple[float, float, float, int]]:
    """Onsets ``(beat, beats, velocity, index in pattern)`` of sixteenth-note patterns over the track.

    Each repetition plays the first (main) pattern with probability ``main``,
    otherwise any of them.
    """
    cursor = 0.0
    while cursor < tr.beats:
        if tr.rng.random() < main:
            pattern = patterns[0]
        else:
            pattern = patterns[tr.rng.integers(len(patterns))]
        for n, (step, steps, vel) in enumerate(_rhythm(pattern)):
            yield cursor + step / 4, steps / 4, vel * tr.rng.uniform(0.85, 1.05), n
        cursor += len(pattern) / 4


def _riff(
    tr: _Track,
    chords: Sequence[_Chord],
    patterns: Sequence[str],
    degrees: Sequence[str],
    *,
    octave: int = 0,
    legato: float = 0.9,
    power: bool = False,
) -> list[_Note]:
    """A bass line or riff: the n-th onset of each pattern plays ``degrees[n]`` of the chord.

    With ``power`` every note is a power chord (root, fifth, octave).
    """
    notes = []
    for beat, beats, vel, n in _onsets(tr, patterns):
        chord = _chord_at(chords, beat)
        deg = degrees[n % len(degrees)]
        if deg == "A":
            pitch = _chord_at(chords, chord.beat + chord.beats).root + int(tr.rng.choice([-1, 1, -2]))
        elif deg == "3":
            pitch = chord.root + chord.intervals[1]
        else:
            pitch = chord.root + _DEGREE[deg]
        pitch += 12 * octave
        pitches = (pitch, pitch + 7, pitch + 12) if power else (pitch,)
        notes.append(_Note(beat, beats * legato, pitches, vel))
    return notes


def _walking(tr: _Track, chords: Sequence[_Chord]) -> list[_Note]:
    """A walking bass: root on the change, chord and scale tones, a chromatic approach."""
    notes, prev = [], chords[0].root + 12
    for beat in range(tr.beats):
        chord = _chord_at(chords, beat)
        nxt = _chord_at(chords, beat + 1)
        if beat == chord.beat:
            target = chord.root
        elif nxt is not chord:
            target = nxt.root + int(tr.rng.choice([-1, 1, -2, 2]))
        else:
            target = chord.root + int(tr.rng.choice(chord.intervals[1:] + (2, 5)))
        pitch = min(
            (target + 12 * o for o in range(-1, 3)),
            key=lambda p: abs(p - prev) + (8 if not 28 <= p <= 50 else 0),
        )
        notes.append(_Note(float(beat), 0.9, (pitch,), 1.1 if beat % 2 else 0.95))
        prev = pitch
    return notes


def _comp(
    tr: _Track,
    chords: Sequence[_Chord],
    patterns: Sequence[str],
    *,
    center: int,
    legato: float = 0.95,
    strum_s: float = 0.0,
    skip_root: bool = False,
    main: float = 0.7,
) -> list[_Note]:
    """Chords on a rhythm; with ``strum_s`` the strings sound one after another."""
    notes = []
    for k, (beat, beats, vel, _) in enumerate(_onsets(tr, patterns, main=main)):
        pitches = _voicing(_chord_at(chords, beat), center=center, skip_root=skip_root)
        if strum_s:
            order = pitches if k % 2 == 0 else pitches[::-1]  # down- and up-strokes
            step = strum_s * tr.bpm / 60
            notes += [_Note(beat + i * step, beats * legato, (p,), vel) for i, p in enumerate(order)]
        else:
            notes.append(_Note(beat, beats * legato, pitches, vel))
    return notes


def _arpeggio(
    tr: _Track,
    chords: Sequence[_Chord],
    patterns: Sequence[str],
    *,
    center: int,
    order: Sequence[int] = (0, 1, 2, 1),
    legato: float = 1.5,
) -> list[_Note]:
    """Broken chords (Alberti bass, synth arpeggios): chord tones taken in ``order``."""
    notes = []
    for k, (beat, beats, vel, _) in enumerate(_onsets(tr, patterns)):
        pitches = _voicing(_chord_at(chords, beat), center=center)
        i = order[k % len(order)]
        pitch = pitches[i % len(pitches)] + 12 * (i // len(pitches))
        notes.append(_Note(beat, beats * legato, (pitch,), vel))
    return notes


def _melody(
    tr: _Track,
    chords: Sequence[_Chord],
    rhythms: Sequence[str],
    *,
    tonic: int,
    scale: str | None,
    register: tuple[int, int],
    phrase_bars: int = 2,
    rest: float = 0.3,
    repeat: float = 0.3,
    bend: float = 0.0,
    chromatic: float = 0.0,
    legato: float = 0.9,
    vowels: bool = False,
) -> list[_Note]:
    """A melody in phrases: chord tones on the beat, scale steps between, motifs repeated.

    ``scale=None`` plays each chord's own scale (jazz); ``bend`` is the chance a
    note slides in from below (blue notes, steel guitar); ``chromatic`` the chance
    of a chromatic passing tone.
    """
    rng, lo, hi = tr.rng, register[0], register[1]
    bar = tr.beats_per_bar
    prev = (lo + hi) // 2
    notes: list[_Note] = []
    last: tuple[int, list[_Note]] | None = None
    for start in range(0, tr.bars, phrase_bars):
        if rng.random() < rest:
            continue
        if last is not None and rng.random() < repeat:
            shift = (start - last[0]) * bar
            notes += [
                _Note(x.beat + shift, x.beats, x.pitches, x.velocity, x.bend, x.vowel)
                for x in last[1]
            ]
            continue
        phrase = []
        for b in range(start, start + phrase_bars):
            for step, steps, vel in _rhythm(rhythms[rng.integers(len(rhythms))]):
                beat = b * bar + step / 4
                chord = _chord_at(chords, beat)
                if scale is None:
                    if chord.intervals[1] == 3:
                        mode = "dorian"
                    else:
                        mode = "mixolydian" if 10 in chord.intervals else "major"
                    pcs = {(chord.root + s) % 12 for s in _SCALE[mode]}
                else:
                    pcs = {(tonic + s) % 12 for s in _SCALE[scale]}
                pool = np.array([p for p in range(lo, hi + 1) if p % 12 in pcs])
                if step % 4 == 0:  # on the beat: a chord tone near the last note
                    tones = pool[np.isin(pool % 12, [(chord.root + iv) % 12 for iv in chord.intervals])]
                    near = tones[np.argsort(np.abs(tones - prev))[:3]] if len(tones) else pool
                    pitch = int(rng.choice(near))
                elif rng.random() < chromatic:
                    pitch = prev + int(rng.choice([-1, 1]))
                else:
                    i = int(np.argmin(np.abs(pool - prev))) + int(rng.choice([-2, -1, -1, 1, 1, 2]))
                    i += 1 if prev < lo + 4 else (-1 if prev > hi - 4 else 0)
                    pitch = int(pool[np.clip(i, 0, len(pool) - 1)])
                slide = -float(rng.choice([1, 2])) if rng.random() < bend else 0.0
                vowel = int(rng.integers(len(_VOWELS))) if vowels else 0
                velocity = vel * rng.uniform(0.8, 1.05)
                phrase.append(_Note(beat, steps / 4 * legato, (pitch,), velocity, slide, vowel))
                prev = pitch
        notes += phrase
        last = (start, phrase)
    return notes


def _rap(tr: _Track, *, center: int, density: float) -> list[_Note]:
    """Rapped syllables on sixteenths: speech-like pitch falling through each phrase."""
    rng, notes = tr.rng, []
    for b in range(tr.bars):
        if b % 4 == 3 and rng.random() < 0.5:
            continue  # a breath between verses
        for step in range(16 * tr.beats_per_bar // 4):
            if rng.random() > density or (step >= 14 and b % 2 == 1):
                continue
            contour = 3 - 5 * (((b % 2) * 16 + step) / 32)
            pitch = center + contour + rng.normal(0, 1.0)
            vowel = int(rng.integers(len(_VOWELS)))
            notes.append(_Note(b * tr.beats_per_bar + step / 4, 0.22, (pitch,), rng.uniform(0.7, 1.2), 1.5, vowel))
    return notes


def _consonants(tr: _Track, notes: Sequence[_Note], *, share: float) -> np.ndarray:
    """Noise bursts (s, t, k) at the start of some sung or rapped syllables."""
    t, env = _decay(tr, 0.06, 0.015)
    noise = tr.noise.standard_normal(len(t))
    burst = _filter(noise, sample_rate=tr.sample_rate, kind="bandpass", hz=(3000, 9000)) * env
    beats = np.array([x.beat for x in notes if tr.rng.random() < share])
    return _hits(tr, burst, beats, tr.rng.uniform(0.3, 0.8, len(beats)))


# Instruments; each call draws a per-track variation of the timbre.


def _piano(tr: _Track) -> _Inst:
    return _Inst(
        _saw(24, tr.rng.uniform(1.3, 1.8)),
        attack_s=0.003,
        decay_s=tr.rng.uniform(0.6, 1.4),
        sustain=0.0,
        release_s=0.12,
        mellow_s=0.3,
    )


def _epiano(tr: _Track) -> _Inst:
    return _Inst(
        (1.0, 0.3, 0.06, 0.03, 0.02, 0.0, 0.08 * tr.rng.uniform(0.5, 2)),
        attack_s=0.004,
        decay_s=1.4,
        sustain=0.25,
        release_s=0.2,
        mellow_s=0.15,
    )


def _organ(tr: _Track) -> _Inst:
    bars = tr.rng.uniform(0.3, 1.0, 4)
    return _Inst(
        (1.0, 0.8 * bars[0], 0.6, 0.5 * bars[1], 0.0, 0.3 * bars[2], 0.0, 0.2 * bars[3]),
        attack_s=0.01,
        decay_s=1.0,
        sustain=1.0,
        release_s=0.05,
    )


def _strings(tr: _Track, *, attack_s: float | None = None, solo: bool = False) -> _Inst:
    rolloff = tr.rng.uniform(8, 14)  # harmonics: a bowed sawtooth, darkened by the body
    partials = tuple(p * math.exp(-i / rolloff) for i, p in enumerate(_saw(30)))
    return _Inst(
        partials,
        attack_s=attack_s or tr.rng.uniform(0.12, 0.35),
        decay_s=1.5,
        sustain=0.85,
        release_s=0.3,
        vibrato_hz=tr.rng.uniform(5, 6.5),
        vibrato_depth=0.007 if solo else 0.004,
        detune_cents=0.0 if solo else 9.0,
    )


def _pluck(
    tr: _Track,
    *,
    position: tuple[float, float] = (0.12, 0.22),
    decay_s: tuple[float, float] = (0.5, 1.2),
    mellow_s: float = 0.15,
) -> _Inst:
    return _Inst(
        _plucked(28, tr.rng.uniform(*position)),
        attack_s=0.002,
        decay_s=tr.rng.uniform(*decay_s),
        release_s=0.06,
        mellow_s=mellow_s,
    )


def _twang(tr: _Track) -> _Inst:
    """A bright, fast-decaying plucked string (telecaster, banjo-ish)."""
    return _Inst(
        _plucked(32, tr.rng.uniform(0.06, 0.1)),
        attack_s=0.001,
        decay_s=tr.rng.uniform(0.25, 0.5),
        release_s=0.04,
        mellow_s=0.05,
        glide_s=0.03,
    )


def _guitar_dist(tr: _Track) -> _Inst:
    return _Inst(_saw(20, 0.9), attack_s=0.004, decay_s=1.5, sustain=0.7, release_s=0.04)


def _bass_electric(tr: _Track) -> _Inst:
    return _Inst(
        _saw(12, tr.rng.uniform(1.4, 2.0)),
        attack_s=0.004,
        decay_s=tr.rng.uniform(0.3, 0.8),
        sustain=0.3,
        release_s=0.04,
        mellow_s=0.12,
    )


def _bass_upright(tr: _Track) -> _Inst:
    return _Inst(
        (1.0, 0.55, 0.25, 0.12, 0.06, 0.03),
        attack_s=0.008,
        decay_s=tr.rng.uniform(0.25, 0.45),
        sustain=0.1,
        release_s=0.05,
    )


def _bass_synth(tr: _Track) -> _Inst:
    return _Inst(_saw(14, 1.1), attack_s=0.003, decay_s=0.2, sustain=0.6, release_s=0.03)


def _sub808(tr: _Track) -> _Inst:
    return _Inst(
        (1.0, 0.12, 0.04),
        attack_s=0.004,
        decay_s=tr.rng.uniform(0.5, 1.2),
        sustain=0.0,
        release_s=0.08,
        glide_s=0.08,
    )


def _pad(tr: _Track) -> _Inst:
    return _Inst(
        _saw(30),
        attack_s=tr.rng.uniform(0.05, 0.3),
        decay_s=1.0,
        sustain=0.8,
        release_s=0.3,
        detune_cents=tr.rng.uniform(10, 25),
    )


def _lead(tr: _Track) -> _Inst:
    return _Inst(
        _square(16),
        attack_s=0.01,
        decay_s=0.5,
        sustain=0.8,
        release_s=0.06,
        vibrato_hz=5.5,
        vibrato_depth=0.005,
    )


def _horn(tr: _Track, *, bright: float) -> _Inst:
    """Sax (bright ~0.5) or trumpet (bright ~1): a reed/brass spectrum with vibrato."""
    partials = tuple(
        (1.0 / i ** (1.4 - 0.6 * bright)) * (1.0 if i % 2 else 0.7) for i in range(1, 18)
    )
    return _Inst(
        partials,
        attack_s=0.04,
        decay_s=0.8,
        sustain=0.8,
        release_s=0.06,
        vibrato_hz=5.0,
        vibrato_depth=0.006,
        glide_s=0.03,
    )


def _flute(tr: _Track) -> _Inst:
    return _Inst(
        (1.0, 0.25, 0.1, 0.04),
        attack_s=0.06,
        decay_s=1.0,
        sustain=0.85,
        release_s=0.1,
        vibrato_hz=5.0,
        vibrato_depth=0.005,
    )


def _harmonica(tr: _Track) -> _Inst:
    return _Inst(
        (1.0, 0.6, 0.7, 0.35, 0.3, 0.2, 0.12, 0.1),
        attack_s=0.02,
        decay_s=0.6,
        sustain=0.8,
        release_s=0.05,
        vibrato_hz=6.0,
        vibrato_depth=0.008,
        glide_s=0.06,
    )


def _steel(tr: _Track) -> _Inst:
    return _Inst(
        (1.0, 0.45, 0.2, 0.1, 0.05),
        attack_s=0.03,
        decay_s=2.0,
        sustain=0.5,
        release_s=0.2,
        vibrato_hz=5.0,
        vibrato_depth=0.004,
        glide_s=0.15,
    )


def _voice(tr: _Track, *, sung: bool = True) -> _Inst:
    """A formant voice: sung (held, with delayed vibrato) or spoken/rapped (short syllables)."""
    if sung:
        return _Inst(
            (),
            attack_s=0.04,
            decay_s=1.0,
            sustain=0.9,
            release_s=0.08,
            vibrato_hz=tr.rng.uniform(4.8, 6.2),
            vibrato_depth=0.012,
            vibrato_delay_s=0.25,
            glide_s=0.05,
            formants=True,
        )
    return _Inst(
        (), attack_s=0.012, decay_s=0.12, sustain=0.55, release_s=0.03, glide_s=0.1, formants=True
    )


def _sing(
    tr: _Track,
    mix: _Mix,
    chords: Sequence[_Chord],
    *,
    tonic: int,
    scale: str,
    db: tuple[float, float],
    rhythms: Sequence[str] = ("x-x-x---x-x-x---", "x--x--x-x-------", "..x-x-x-x---x---", "x---x-x-x-x-----"),
    reverb: float = 0.35,
    **melody: float,
) -> None:
    """Add a lead vocal to ``mix``: a melody on a formant voice, with its consonants."""
    low = int(tr.rng.choice([50, 55, 57, 60]))  # baritone to alto
    options = {"rest": 0.25, "repeat": 0.45, **melody}
    notes = _melody(tr, chords, rhythms, tonic=tonic, scale=scale, register=(low, low + 15), vowels=True, **options)
    voice = _play(tr, notes, _voice(tr)) + 0.25 * _consonants(tr, notes, share=0.4)
    mix.add(voice, db=db, reverb=reverb)


# ---------------------------------------------------------------------------
# The ten genres: tempo and key, progression, band, mix and master
# ---------------------------------------------------------------------------
# Progressions are (semitones above the tonic, chord quality, bars); patterns are
# sixteenths: x note, X accent, g ghost, - hold, . rest.


def _blues(tr: _Track) -> np.ndarray:
    """Shuffle, 12-bar I7-IV7-V7, boogie bass and rhythm, blue-note licks; often old and noisy."""
    r = tr.rng
    tr.bpm, tr.swing, tr.humanize_s = r.uniform(60, 125), r.uniform(0.62, 0.71), 0.008
    tonic = _tonic(tr, [4, 9, 7, 10, 0, 2])
    d7 = "9" if r.random() < 0.3 else "7"
    twelve = [(s, d7, 1) for s in (0, 0, 0, 0, 5, 5, 0, 0, 7, 5, 0, 7)]
    quick_change = [(s, d7, 1) for s in (0, 5, 0, 0, 5, 5, 0, 0, 7, 5, 0, 7)]
    minor = [(0, "m7", 4), (5, "m7", 2), (0, "m7", 2), (8, "7", 1), (7, "7", 1), (0, "m7", 1), (7, "7", 1)]
    chords = _progression(tr, [twelve, quick_change, minor], tonic=tonic)
    mix = _Mix(tr)
    if r.random() < 0.7:  # a band; otherwise a solo guitarist
        if r.random() < 0.6:
            hat = _cymbal(tr, decay_s=r.uniform(0.04, 0.09), low_hz=6000)
        else:
            hat = _cymbal(tr, decay_s=0.8, low_hz=3500, metal=1.0)  # a ride
        parts = [
            _Part(_kick(tr, hz=(110, 55), decay_s=0.2, click=0.15),
                  ("x.......x.......", "x.......x.....x.")),
            _Part(_snare(tr, tone_hz=r.uniform(170, 220), decay_s=0.1),
                  ("....x.......x...", "....x.....g.x...")),
            _Part(hat, ("x.x.x.x.x.x.x.x.", "x...x.x.x...x.x.")),
        ]
        crash = _cymbal(tr, decay_s=1.2, low_hz=4000)
        mix.add(_drums(tr, parts, fill=_snare(tr, decay_s=0.08), crash=crash), db=(-2, 2), reverb=0.15)
        if r.random() < 0.6:  # boogie-woogie: up the chord and back on swung eighths
            boogie = ["R", "3", "5", "6", "b7", "6", "5", "3"]
            bass = _riff(tr, chords, ["x-x-x-x-x-x-x-x-"], boogie, octave=1)
        else:
            bass = _walking(tr, chords)
        upright = r.random() < 0.5
        bassist = _bass_upright(tr) if upright else _bass_electric(tr)
        mix.add(_play(tr, bass, bassist), db=(-3, 1), reverb=0.05)
        if r.random() < 0.5:
            keys = _comp(tr, chords, ["x--x-x--x--x-x--", "x-----x---x-----"], center=62, legato=0.6)
            mix.add(_play(tr, keys, _piano(tr)), db=(-7, -2))
        else:
            keys = _comp(tr, chords, ["x-----x---x-----"], center=62, legato=1.0)
            mix.add(_play(tr, keys, _organ(tr)), db=(-9, -4))
    # The boogie rhythm figure: root under a fifth-sixth-seventh walk, on swung eighths.
    roots = _riff(tr, chords, ["x-x-x-x-x-x-x-x-"], ["R"], octave=1)
    walk = ["5", "5", "6", "6", "b7", "b7", "6", "6"]
    upper = _riff(tr, chords, ["x-x-x-x-x-x-x-x-"], walk, octave=1)
    rhythm = _play(tr, roots + upper, _pluck(tr, decay_s=(0.3, 0.7)))
    if r.random() < 0.5:
        rhythm = _drive(rhythm, sample_rate=tr.sample_rate, gain=r.uniform(1.5, 4), cab_hz=4500)
    mix.add(rhythm, db=(-5, 0))
    licks = ("x-x-xx--x-------", "x--x--x-x-x-x---", "..x-x-x-x-----..", "x-----x-x-xx-x--")
    lead = _melody(tr, chords, licks, tonic=tonic, scale="blues", register=(tonic + 28, tonic + 50),
                   rest=0.5, repeat=0.2, bend=0.35)
    if r.random() < 0.4:
        mix.add(_play(tr, lead, _harmonica(tr)), db=(-4, 0), reverb=0.4)
    else:
        guitar = _play(tr, lead, _pluck(tr, decay_s=(0.8, 1.5)))
        mix.add(_drive(guitar, sample_rate=tr.sample_rate, gain=r.uniform(2, 8)), db=(-4, 0), reverb=0.4)
    if r.random() < 0.6:
        phrases = ("x--x--x-x-------", "x-x---x---x-x---", "........x-x-x---")
        _sing(tr, mix, chords, tonic=tonic, scale="blues", db=(-3, 1), bend=0.3, rhythms=phrases)
    old = r.random() < 0.35  # a 78 transfer: narrow band, hiss and crackle
    return mix.master(
        rt60_s=r.uniform(0.8, 1.6), wet=r.uniform(0.15, 0.35), ratio=r.uniform(1, 3),
        lowpass_hz=r.uniform(3000, 6000) if old else None,
        noise_db=r.uniform(-42, -30) if old else r.uniform(-65, -45), crackle=0.3 if old else 0.0,
        swell_db=r.uniform(0, 4), limit=r.uniform(0, 1.5), peak=(0.45, 0.95),
    )


def _classical(tr: _Track) -> np.ndarray:
    """No drums: strings, piano or winds, functional harmony, slow attacks, hall, wide dynamics."""
    r = tr.rng
    tr.bpm, tr.beats_per_bar, tr.humanize_s = r.uniform(60, 140), int(r.choice([3, 4, 4])), 0.012
    minor = r.random() < 0.45
    tonic = _tonic(tr, range(12)) + 12
    if minor:
        bank = [
            [(0, "min", 1), (5, "min", 1), (7, "maj", 1), (0, "min", 1)],
            [(0, "min", 1), (8, "maj", 1), (2, "dim", 1), (7, "7", 1)],
            [(0, "min", 1), (3, "maj", 1), (5, "min", 1), (7, "7", 1)],
        ]
    else:
        bank = [
            [(0, "maj", 1), (5, "maj", 1), (7, "maj", 1), (0, "maj", 1)],
            [(0, "maj", 1), (9, "min", 1), (2, "min", 1), (7, "7", 1)],
            [(0, "maj", 1), (7, "maj", 1), (9, "min", 1), (4, "min", 1),
             (5, "maj", 1), (0, "maj", 1), (5, "maj", 1), (7, "maj", 1)],  # Pachelbel
        ]
    waltz = tr.beats_per_bar == 3
    chords = _progression(tr, bank, tonic=tonic, stretch=(1.0,) if waltz else (1.0, 0.5))
    scale = "harmonic" if minor else "major"
    held = ("x-----------",) if waltz else ("x---------------",)
    eighths = ("x-x-x-x-x-x-",) if waltz else ("x-x-x-x-x-x-x-x-",)
    if waltz:
        tunes = ("x-----x---x-", "x---x---x---", "x-x-x-x-x---", "x-----------")
    else:
        tunes = ("x-------x---x---", "x---x---x---x---", "x-x-x-x-x-------", "x-------x-------",
                 "x-x-x-x-x-x-x-x-")
    mix = _Mix(tr)
    ensemble = r.choice(["strings", "piano", "chamber", "piano"])
    if ensemble in ("strings", "chamber"):
        cellos = _riff(tr, chords, held, ["R"], octave=1, legato=1.0)
        mix.add(_play(tr, cellos, _strings(tr, solo=True)), db=(-4, 0), reverb=0.6)
        if r.random() < 0.6:
            inner = _comp(tr, chords, held, center=60, legato=1.0)
        else:
            inner = _arpeggio(tr, chords, eighths, center=60, order=(0, 1, 2, 1))
        mix.add(_play(tr, inner, _strings(tr)), db=(-5, -1), reverb=0.6)
        lead = _flute(tr) if ensemble == "chamber" else _strings(tr, attack_s=0.06, solo=True)
        tune = _melody(tr, chords, tunes, tonic=tonic, scale=scale, register=(tonic + 24, tonic + 43),
                       phrase_bars=4, rest=0.15, repeat=0.3, legato=1.0)
        mix.add(_play(tr, tune, lead), db=(-2, 2), reverb=0.6)
    else:
        order = (0, 2, 1, 2) if r.random() < 0.5 else (0, 1, 2, 3)  # Alberti bass or broken chords
        left = _arpeggio(tr, chords, eighths, center=54, order=order, legato=3.0)
        mix.add(_play(tr, left, _piano(tr)), db=(-5, -1), reverb=0.6)
        tune = _melody(tr, chords, tunes, tonic=tonic, scale=scale, register=(tonic + 24, tonic + 46),
                       phrase_bars=4, rest=0.1, repeat=0.3, legato=1.2)
        mix.add(_play(tr, tune, _piano(tr)), db=(-2, 2), reverb=0.6)
    return mix.master(
        rt60_s=r.uniform(1.6, 2.6), wet=r.uniform(0.3, 0.6), ratio=1.0,
        lowpass_hz=r.uniform(5000, 9000) if r.random() < 0.3 else None,
        noise_db=r.uniform(-68, -42), swell_db=r.uniform(8, 20), peak=(0.06, 0.45),
    )


def _country(tr: _Track) -> np.ndarray:
    """Boom-chick: root-fifth bass, strummed acoustic, twangy lead, fiddle or steel, a singer."""
    r = tr.rng
    tr.bpm, tr.swing, tr.humanize_s = r.uniform(85, 160), r.uniform(0.5, 0.58), 0.006
    tonic = _tonic(tr, [7, 2, 9, 4, 0])
    bank = [
        [(0, "maj", 2), (5, "maj", 1), (0, "maj", 1), (7, "maj", 1), (0, "maj", 1)],
        [(0, "maj", 1), (5, "maj", 1), (7, "7", 1), (0, "maj", 1)],
        [(0, "maj", 1), (7, "maj", 1), (9, "min", 1), (5, "maj", 1)],
        [(0, "maj", 2), (5, "maj", 2), (7, "7", 2), (0, "maj", 2)],
    ]
    chords = _progression(tr, bank, tonic=tonic)
    mix = _Mix(tr)
    train = r.random() < 0.3  # the train beat: brushed sixteenths
    if r.random() < 0.5:
        snare = _click(tr, hz=r.uniform(1400, 2000))  # cross-stick
    else:
        snare = _snare(tr, tone_hz=r.uniform(180, 230), decay_s=0.09)
    parts = [
        _Part(_kick(tr, hz=(120, 55), decay_s=0.15, click=0.2), ("x.......x.......", "x.......x...x...")),
        _Part(snare, ("....x.......x...",)),
        _Part(_cymbal(tr, decay_s=r.uniform(0.03, 0.07)), ("x.x.x.x.x.x.x.x.",), gain=0.8),
    ]
    if train:
        parts.append(_Part(_shaker(tr, decay_s=0.04, attack_s=0.02), ("ggggXgggggggXggg",)))
    drums = _drums(tr, parts, fill=_snare(tr, decay_s=0.08), crash=_cymbal(tr, decay_s=1.0, low_hz=4000))
    mix.add(drums, db=(-3, 1), reverb=0.15)
    boom = _riff(tr, chords, ["x---x---x---x---", "x---x---x---x-x-"], ["R", "5", "R", "5", "A"], octave=1)
    bassist = _bass_electric(tr) if r.random() < 0.6 else _bass_upright(tr)
    mix.add(_play(tr, boom, bassist), db=(-3, 1), reverb=0.05)
    strums = ["x-x-x-x-x-x-x-x-", "x---x-x-x---x-x-", "x-xxx-x-x-xxx-x-"]
    strum = _comp(tr, chords, strums, center=60, legato=0.8, strum_s=0.008)
    mix.add(_play(tr, strum, _pluck(tr, position=(0.08, 0.14), decay_s=(0.3, 0.7))), db=(-6, -1))
    licks = ("x-x-x-xxx-------", "x.x.x.x.x-x-x---", "....x-x-x-x-x-x-", "x-xx-xx-x-------")
    lick = _melody(tr, chords, licks, tonic=tonic, scale="pent_major", register=(tonic + 36, tonic + 52),
                   rest=0.45, repeat=0.2, bend=0.4, legato=0.8)
    mix.add(_play(tr, lick, _twang(tr)), db=(-5, -1), reverb=0.25)
    extra = r.choice(["fiddle", "steel", "piano", "none"])
    if extra == "fiddle":
        bowing = ("x-x-x-x-x-x-x-x-", "x---x-x-x-------")
        line = _melody(tr, chords, bowing, tonic=tonic, scale="major", register=(tonic + 43, tonic + 60),
                       rest=0.5)
        mix.add(_play(tr, line, _strings(tr, attack_s=0.04, solo=True)), db=(-7, -2), reverb=0.35)
    elif extra == "steel":
        swells = ("x-------x-------", "x---------------")
        line = _melody(tr, chords, swells, tonic=tonic, scale="major", register=(tonic + 36, tonic + 52),
                       rest=0.3, bend=0.6, legato=1.2)
        mix.add(_play(tr, line, _steel(tr)), db=(-7, -2), reverb=0.45)
    elif extra == "piano":
        keys = _comp(tr, chords, ["..x...x...x...x.", "x-x-x-x-x-x-x-x-"], center=66, legato=0.5)
        mix.add(_play(tr, keys, _piano(tr)), db=(-9, -4))
    if r.random() < 0.75:
        _sing(tr, mix, chords, tonic=tonic, scale="pent_major", db=(-2, 2), bend=0.2)
    return mix.master(
        rt60_s=r.uniform(0.6, 1.3), wet=r.uniform(0.12, 0.3), ratio=r.uniform(1.5, 3),
        lowpass_hz=r.uniform(4000, 7000) if r.random() < 0.2 else None,
        noise_db=r.uniform(-65, -40), swell_db=r.uniform(0, 3), limit=r.uniform(0, 1.5), peak=(0.5, 0.95),
    )


def _disco(tr: _Track) -> np.ndarray:
    """Four on the floor, open hats on the off-beats, octave bass, funk guitar, strings."""
    r = tr.rng
    tr.bpm, tr.humanize_s = r.uniform(115, 130), 0.003
    tonic = _tonic(tr, range(12))
    bank = [
        [(0, "m7", 2), (5, "m7", 2)],
        [(0, "m7", 1), (5, "9", 1)],
        [(0, "maj7", 1), (9, "m7", 1), (2, "m7", 1), (7, "9", 1)],
        [(0, "m9", 2), (10, "maj7", 1), (8, "maj7", 1)],
    ]
    chords = _progression(tr, bank, tonic=tonic)
    mix = _Mix(tr)
    if r.random() < 0.5:
        backbeat = _layer(_clap(tr), 0.6 * _snare(tr, tone_hz=200, decay_s=0.1))
    else:
        backbeat = _snare(tr, tone_hz=r.uniform(190, 240), decay_s=0.12)
    parts = [
        _Part(_kick(tr, hz=(130, 52), decay_s=r.uniform(0.15, 0.25), click=0.25),
              ("x...x...x...x...",), fills=False),
        _Part(backbeat, ("....x.......x...",)),
        _Part(_cymbal(tr, decay_s=0.035), ("xgxgxgxgxgxgxgxg", "x.x.x.x.x.x.x.x."), gain=0.6),
        _Part(_cymbal(tr, decay_s=r.uniform(0.2, 0.35), low_hz=5000), ("..x...x...x...x.",), gain=0.9),
    ]
    if r.random() < 0.4:
        parts.append(_Part(_shaker(tr, decay_s=0.07), ("x.xxx.xxx.xxx.xx",), gain=0.4))
    crash = _cymbal(tr, decay_s=1.2, low_hz=4000)
    drums = _drums(tr, parts, fill_every=8, fill=_snare(tr, decay_s=0.08), crash=crash)
    mix.add(drums, db=(-1, 2), reverb=0.1)
    octaves = _riff(tr, chords, ["x-x-x-x-x-x-x-x-", "x.x.x-x.x.x.x-x."], ["R", "8"], octave=1, legato=0.7)
    bassist = _bass_synth(tr) if r.random() < 0.4 else _bass_electric(tr)
    mix.add(_play(tr, octaves, bassist), db=(-2, 2), reverb=0.05)
    sixteenths = ["x.xx.x.xx.xx.x.x", ".x.x.xx..x.x.xx."]
    funk = _comp(tr, chords, sixteenths, center=66, legato=0.3, skip_root=True)
    mix.add(_play(tr, funk, _pluck(tr, decay_s=(0.12, 0.25), mellow_s=0.05)), db=(-8, -3), reverb=0.15)
    if r.random() < 0.7:
        strings = _comp(tr, chords, ["x---------------"], center=67, legato=1.0)
        mix.add(_play(tr, strings, _strings(tr)), db=(-8, -3), reverb=0.5)
    if r.random() < 0.5:
        stabs = ["..x...x...x...x.", "x--x--x---x--x--"]
        keys = _comp(tr, chords, stabs, center=62, skip_root=True, legato=0.6)
        mix.add(_play(tr, keys, _epiano(tr)), db=(-9, -4))
    if r.random() < 0.75:
        _sing(tr, mix, chords, tonic=tonic, scale="dorian", db=(-2, 2))
    return mix.master(
        rt60_s=r.uniform(0.8, 1.5), wet=r.uniform(0.12, 0.28), ratio=r.uniform(2.5, 4.5),
        lowpass_hz=r.uniform(6000, 9000) if r.random() < 0.3 else None,
        noise_db=r.uniform(-60, -40), limit=r.uniform(1, 2.5), peak=(0.6, 0.98),
    )


def _hiphop(tr: _Track) -> np.ndarray:
    """Boom-bap on swung sixteenths, 808 or filtered bass, a looped jazzy sample, rap."""
    r = tr.rng
    tr.bpm, tr.swing, tr.humanize_s = r.uniform(80, 100), r.uniform(0.5, 0.62), 0.003
    tr.swing_unit = 0.25  # sixteenths swing, not eighths
    tonic = _tonic(tr, range(12))
    bank = [
        [(0, "m9", 1), (8, "maj7", 1)],
        [(0, "m7", 1), (5, "m7", 1)],
        [(0, "m7", 2)],
        [(0, "min", 1), (10, "maj", 1), (8, "maj", 1), (10, "maj", 1)],
        [(0, "m9", 1), (1, "maj7", 1)],
    ]
    chords = _progression(tr, bank, tonic=tonic, stretch=(1.0, 2.0))
    mix = _Mix(tr)
    eight08 = r.random() < 0.5
    if eight08:
        kick = _kick(tr, hz=(90, 48), sweep_s=0.06, decay_s=r.uniform(0.4, 0.8), click=0.1)
    else:
        kick = _kick(tr, hz=(120, 50), decay_s=0.22, click=0.35)
    snare = _snare(tr, tone_hz=r.uniform(160, 210), decay_s=r.uniform(0.08, 0.14), tone=0.7)
    if r.random() < 0.5:
        snare = _layer(snare, 0.8 * _clap(tr))
    kicks = (  # two-bar boom-bap kick patterns
        "x.....x...x.....x.........x.....",
        "x......x..x.....x.x.......x..x..",
        "x.........x.......x.......x.....",
    )
    if r.random() < 0.6:
        hats = ("x.x.x.x.x.x.x.x.", "xgx.xgx.xgx.xgxg", "x.xxx.x.x.xxx.x.")
    else:
        hats = ("xxxxxxxxxxxxxxxx", "xxxgxxxgxxxxxxxx")
    parts = [
        _Part(kick, kicks[r.integers(len(kicks)) :], fills=False),
        _Part(snare, ("....x.......x...", "....x.......x..g")),
        _Part(_cymbal(tr, decay_s=r.uniform(0.025, 0.05), metal=0.8), hats, gain=r.uniform(0.4, 0.8)),
    ]
    mix.add(_drums(tr, parts, fill_every=0), db=(1, 4), reverb=0.08)
    if eight08:  # a sub that sometimes slides down an octave into the note
        follow = ["x-----x---x-----", "x---------x---x-"]
        bass = _riff(tr, chords, follow, ["R", "R", "b7"], octave=1, legato=1.0)
        bass = [_Note(x.beat, x.beats, x.pitches, x.velocity, 12.0 * (r.random() < 0.2)) for x in bass]
        mix.add(_play(tr, bass, _sub808(tr)), db=(0, 3), reverb=0.0)
    else:
        bass = _riff(tr, chords, ["x-----x-x-----x-", "x-x-----x---x---"], ["R", "R", "5", "b7"], octave=1)
        mix.add(_lowpass(tr, _play(tr, bass, _bass_electric(tr)), hz=600), db=(-2, 2), reverb=0.0)
    center = int(r.choice([60, 64, 67]))
    loop = _comp(tr, chords, ["x---------------"], center=center, skip_root=True, legato=1.0)
    sample = _play(tr, loop, r.choice([_epiano, _piano, _strings])(tr))
    mix.add(_lowpass(tr, sample, hz=r.uniform(1800, 5000)), db=(-7, -2), reverb=0.2)
    if r.random() < 0.85:
        rap = _rap(tr, center=int(r.choice([45, 48, 52, 55])), density=r.uniform(0.45, 0.8))
        voice = _play(tr, rap, _voice(tr, sung=False)) + 0.4 * _consonants(tr, rap, share=0.6)
        mix.add(voice, db=(0, 3), reverb=0.1)
    lofi = r.random() < 0.5
    return mix.master(
        rt60_s=r.uniform(0.4, 1.0), wet=r.uniform(0.08, 0.2), ratio=r.uniform(3, 6),
        lowpass_hz=r.uniform(4500, 8000) if lofi else None,
        noise_db=r.uniform(-45, -30) if lofi else r.uniform(-65, -45),
        crackle=r.uniform(0.1, 0.5) if lofi else 0.0, limit=r.uniform(1, 3), peak=(0.6, 0.98),
    )


def _jazz(tr: _Track) -> np.ndarray:
    """Swing ride, walking bass, rootless extended chords, a horn playing bebop lines."""
    r = tr.rng
    tr.bpm = r.choice([r.uniform(85, 130), r.uniform(130, 230)])
    # Swing straightens as the tempo rises.
    tr.swing = float(np.clip(0.7 - (tr.bpm - 90) / 1400 + r.normal(0, 0.02), 0.56, 0.72))
    tr.humanize_s = 0.008
    tonic = _tonic(tr, [5, 10, 3, 0, 7, 8])
    bank = [
        [(2, "m9", 1), (7, "13", 1), (0, "maj9", 2)],  # ii-V-I
        [(0, "maj7", 0.5), (9, "7", 0.5), (2, "m7", 0.5), (7, "7", 0.5)],  # I-vi-ii-V
        [(2, "m7b5", 1), (7, "7", 1), (0, "m9", 2)],  # minor ii-V-i
        [(0, "7", 1), (5, "7", 1), (0, "7", 2), (5, "7", 2), (0, "7", 1), (9, "7", 1), (2, "m7", 1),
         (7, "7", 1), (0, "7", 0.5), (9, "7", 0.5), (2, "m7", 0.5), (7, "7", 0.5)],  # jazz blues
        [(0, "m9", 4), (1, "m9", 2), (0, "m9", 2)],  # modal
    ]
    chords = _progression(tr, bank, tonic=tonic)
    mix = _Mix(tr)
    brushes = r.random() < 0.35
    ride = _cymbal(tr, decay_s=r.uniform(0.7, 1.3), low_hz=3500, metal=1.0)
    comping = "".join("g" if r.random() < 0.18 else "." for _ in range(32))  # snare chatter
    if brushes:
        snare = _Part(_shaker(tr, decay_s=0.15, attack_s=0.03), ("x.x.x.x.x.x.x.x.",), gain=0.5)
    else:
        snare = _Part(_snare(tr, tone_hz=r.uniform(200, 260), decay_s=0.08), (comping,), gain=0.9)
    parts = [
        _Part(ride, ("x...x.x.x...x.x.", "x...x.x.x.x.x.x.", "x...x...x...x.x."), gain=r.uniform(0.4, 0.8)),
        _Part(_cymbal(tr, decay_s=0.03, low_hz=5000), ("....x.......x...",), gain=0.5),  # foot hat
        _Part(_kick(tr, hz=(95, 55), decay_s=0.2, click=0.05), ("g...g...g...g...",), gain=0.6),
        snare,
    ]
    mix.add(_drums(tr, parts, fill_every=8, fill=_snare(tr, decay_s=0.06)), db=(-8, -3), reverb=0.2)
    mix.add(_play(tr, _walking(tr, chords), _bass_upright(tr)), db=(-1, 3), reverb=0.1)
    charleston = ["x-----x---------", "..x-----...x----", "x-------..x-----", "......x-----x---"]
    if r.random() < 0.7:
        comper = _piano(tr)
    else:
        comper = _pluck(tr, position=(0.3, 0.45), decay_s=(0.4, 0.8))  # a mellow archtop
    voicings = _comp(tr, chords, charleston, center=62, skip_root=True, legato=0.8, main=0.4)
    mix.add(_play(tr, voicings, comper), db=(-6, -2), reverb=0.35)
    lines = ("x-x-x-x-x-x-x-x-", "x-x-x-x-x-x-----", "..x-x-x-x-x-x-x-", "x-------x-x-x---",
             "x---x---x-------")
    solo = _melody(tr, chords, lines, tonic=tonic, scale=None, register=(tonic + 26, tonic + 50),
                   rest=0.3, repeat=0.1, chromatic=0.25, legato=0.95)
    soloist = _horn(tr, bright=r.uniform(0.3, 1.0)) if r.random() < 0.75 else _piano(tr)
    mix.add(_play(tr, solo, soloist), db=(-3, 1), reverb=0.35)
    old = r.random() < 0.25
    return mix.master(
        rt60_s=r.uniform(0.8, 1.6), wet=r.uniform(0.15, 0.35), ratio=r.uniform(1, 2),
        lowpass_hz=r.uniform(3500, 6000) if old else None,
        noise_db=r.uniform(-40, -28) if old else r.uniform(-65, -45), crackle=0.25 if old else 0.0,
        swell_db=r.uniform(2, 8), limit=r.uniform(0, 0.8), peak=(0.35, 0.9),
    )


def _metal(tr: _Track) -> np.ndarray:
    """Fast double kick, palm-muted chugs and power chords through heavy distortion, growls."""
    r = tr.rng
    tr.bpm, tr.humanize_s = r.uniform(140, 200), 0.002
    tonic = _tonic(tr, [4, 2, 1, 11])  # low E, D, C#, B
    bank = [
        [(0, "5", 1), (8, "5", 1), (10, "5", 1), (0, "5", 1)],  # i-bVI-bVII-i
        [(0, "5", 1), (1, "5", 1), (0, "5", 1), (10, "5", 1)],  # phrygian bII
        [(0, "5", 2), (5, "5", 1), (6, "5", 1)],  # the tritone
        [(0, "5", 1), (10, "5", 1), (8, "5", 1), (7, "5", 1)],
    ]
    chords = _progression(tr, bank, tonic=tonic, stretch=(0.5, 1.0))
    mix = _Mix(tr)
    fast = tr.bpm > 175
    kick = _kick(tr, hz=(160, 60), sweep_s=0.015, decay_s=0.1, click=r.uniform(0.5, 1.0))
    if fast and r.random() < 0.5:
        backbeat = ("..x...x...x...x.",)  # blast-ish: snare on every off-beat
    else:
        backbeat = ("....x.......x...", "........x.......")
    # Double kick: sixteenths, gallops, or eighths when sixteenths get too fast.
    double = ("x.x.x.x.x.x.x.x.",) if fast else ("xxxxxxxxxxxxxxxx", "x.xxx.xxx.xxx.xx")
    parts = [
        _Part(kick, double, fills=False),
        _Part(_snare(tr, tone_hz=r.uniform(200, 260), decay_s=0.12), backbeat),
        _Part(_cymbal(tr, decay_s=r.uniform(0.5, 1.0), low_hz=3000, metal=1.5),
              ("x...x...x...x...", "x.x.x.x.x.x.x.x."), gain=0.7),
    ]
    toms = _kick(tr, hz=(180, 90), decay_s=0.2)
    crash = _cymbal(tr, decay_s=1.4, low_hz=3000)
    mix.add(_drums(tr, parts, fill=toms, crash=crash), db=(-1, 2), reverb=0.1)
    riffs = ["X-x.xxx.x.xxX-x.", "xxxxxxxxX---xxxx", "x.xxx.xxx.xxX---", "X---xxxxX---xxxx"]
    chug = _riff(tr, chords, riffs, ["R"], octave=1, legato=0.6, power=True)
    guitars = _play(tr, chug, _guitar_dist(tr)) + 0.8 * _play(tr, chug, _guitar_dist(tr))  # double-tracked
    guitars = _drive(guitars, sample_rate=tr.sample_rate, gain=r.uniform(10, 30), clip=r.uniform(0.5, 0.8),
                     cab_hz=r.uniform(4000, 6500))
    mix.add(guitars, db=(0, 3), reverb=0.1)
    bass = _play(tr, _riff(tr, chords, riffs, ["R"], legato=0.8), _bass_electric(tr))
    mix.add(_drive(bass, sample_rate=tr.sample_rate, gain=2, cab_hz=2500), db=(-4, -1), reverb=0.0)
    if r.random() < 0.4:
        shred = ("xxxxxxxxxxxxxxxx", "x-x-xxxxx-x-x-xx", "x---x---xxxxxxxx")
        solo = _melody(tr, chords, shred, tonic=tonic, scale="harmonic", register=(tonic + 36, tonic + 60),
                       rest=0.4, bend=0.2, legato=1.0)
        lead = _drive(_play(tr, solo, _guitar_dist(tr)), sample_rate=tr.sample_rate, gain=15, cab_hz=6000)
        mix.add(lead, db=(-4, 0), reverb=0.3)
    if r.random() < 0.6:
        growl = _rap(tr, center=int(r.choice([40, 45, 50])), density=r.uniform(0.15, 0.35))
        growl = [_Note(x.beat, 0.6, x.pitches, x.velocity, 0.0, x.vowel) for x in growl]
        voice = _play(tr, growl, _voice(tr, sung=False)) + 0.5 * _consonants(tr, growl, share=0.8)
        mix.add(_drive(voice, sample_rate=tr.sample_rate, gain=r.uniform(5, 15)), db=(-3, 0), reverb=0.25)
    return mix.master(
        rt60_s=r.uniform(0.4, 1.0), wet=r.uniform(0.08, 0.2), ratio=r.uniform(4, 8),
        lowpass_hz=r.uniform(5000, 8000) if r.random() < 0.25 else None,
        noise_db=r.uniform(-60, -40), limit=r.uniform(2, 4), peak=(0.7, 0.99),
    )


def _pop(tr: _Track) -> np.ndarray:
    """Clean and bright: major progressions, synth bass, piano or pads, a hooky lead vocal."""
    r = tr.rng
    tr.bpm, tr.humanize_s = r.uniform(100, 125), 0.002
    tonic = _tonic(tr, range(12))
    bank = [
        [(0, "maj", 1), (7, "maj", 1), (9, "min", 1), (5, "maj", 1)],  # I-V-vi-IV
        [(9, "min", 1), (5, "maj", 1), (0, "maj", 1), (7, "maj", 1)],
        [(0, "maj", 1), (9, "min", 1), (5, "maj", 1), (7, "maj", 1)],
        [(5, "maj", 1), (0, "maj", 1), (7, "maj", 1), (9, "min", 1)],
        [(0, "add9", 1), (5, "maj7", 1)],
    ]
    chords = _progression(tr, bank, tonic=tonic)
    mix = _Mix(tr)
    four = r.random() < 0.3  # four on the floor, as in disco
    kicks = ("x...x...x...x...",) if four else ("x.......x.x.....", "x.....x.x.......")
    backbeat = _layer(_snare(tr, tone_hz=r.uniform(180, 240), decay_s=0.12), 0.8 * _clap(tr))
    parts = [
        _Part(_kick(tr, hz=(140, 50), decay_s=r.uniform(0.15, 0.3), click=0.25), kicks, fills=False),
        _Part(backbeat, ("....x.......x...",)),
        _Part(_cymbal(tr, decay_s=r.uniform(0.03, 0.06)), ("x.x.x.x.x.x.x.x.", "xxxxxxxxxxxxxxxx"), gain=0.6),
    ]
    if r.random() < 0.5:
        parts.append(_Part(_shaker(tr), ("xxxxxxxxxxxxxxxx",), gain=0.35))
    crash = _cymbal(tr, decay_s=1.2, low_hz=4000)
    drums = _drums(tr, parts, fill_every=8, fill=_snare(tr, decay_s=0.1), crash=crash)
    mix.add(drums, db=(-1, 2), reverb=0.12)
    bass = _riff(tr, chords, ["x-x-x-x-x-x-x-x-", "x--x--x-x--x--x-"], ["R"], octave=1, legato=0.8)
    mix.add(_lowpass(tr, _play(tr, bass, _bass_synth(tr)), hz=r.uniform(500, 1500)), db=(-2, 2), reverb=0.05)
    keys = r.choice(["piano", "pad", "pluck"])
    if keys == "piano":
        block = _comp(tr, chords, ["x-x-x-x-x-x-x-x-", "x---x---x---x---"], center=62)
        mix.add(_play(tr, block, _piano(tr)), db=(-6, -2), reverb=0.35)
    elif keys == "pad":
        held = _comp(tr, chords, ["x---------------"], center=64, legato=1.0)
        mix.add(_play(tr, held, _pad(tr)), db=(-7, -3), reverb=0.4)
    else:
        arp = _arpeggio(tr, chords, ["x.x.x.x.x.x.x.x."], center=70, order=(0, 1, 2, 3, 2, 1), legato=0.5)
        mix.add(_play(tr, arp, _pluck(tr, position=(0.2, 0.3), decay_s=(0.15, 0.3))), db=(-8, -3), reverb=0.4)
    if r.random() < 0.3:
        riffs = ("x-x-x---x-x-x---", "x---x---x-x-x---")
        hook = _melody(tr, chords, riffs, tonic=tonic, scale="pent_major", register=(tonic + 48, tonic + 62),
                       rest=0.5, repeat=0.7)
        mix.add(_play(tr, hook, _lead(tr)), db=(-9, -5), reverb=0.35)
    if r.random() < 0.9:
        scale = "pent_major" if r.random() < 0.5 else "major"
        _sing(tr, mix, chords, tonic=tonic, scale=scale, db=(1, 4), repeat=0.65)
    return mix.master(
        rt60_s=r.uniform(0.8, 1.5), wet=r.uniform(0.12, 0.28), ratio=r.uniform(3, 6),
        noise_db=r.uniform(-70, -50), limit=r.uniform(1, 3), peak=(0.65, 0.99),
    )


def _reggae(tr: _Track) -> np.ndarray:
    """One drop (or steppers), deep melodic bass, off-beat skank and organ bubble, dub echo."""
    r = tr.rng
    tr.bpm, tr.swing, tr.humanize_s = r.uniform(68, 92), r.uniform(0.5, 0.62), 0.006
    tonic = _tonic(tr, range(12))
    bank = [
        [(0, "maj", 1), (5, "maj", 1)],
        [(0, "maj", 1), (7, "maj", 1)],
        [(0, "min", 1), (5, "min", 1)],
        [(0, "maj", 1), (9, "min", 1), (5, "maj", 1), (7, "maj", 1)],
        [(0, "min", 1), (10, "maj", 1)],
    ]
    chords = _progression(tr, bank, tonic=tonic, stretch=(1.0, 2.0))
    mix = _Mix(tr)
    style = r.choice(["one drop", "one drop", "steppers", "rockers"])
    kicks = {"one drop": "........x.......", "steppers": "x...x...x...x...", "rockers": "x.......x......."}
    kick = kicks[style]
    rims = ("........x.......", "....x.......x...") if style == "one drop" else ("....x.......x...",)
    parts = [
        _Part(_kick(tr, hz=(110, 50), decay_s=0.25, click=0.1), (kick,), fills=False),
        _Part(_click(tr, hz=r.uniform(1500, 2200)), rims),
        _Part(_cymbal(tr, decay_s=r.uniform(0.03, 0.06)), ("x.x.x.x.x.x.x.x.", "x.xxx.x.x.xxx.x."), gain=0.6),
    ]
    echo_s = 0.75 * 60 / tr.bpm  # a dotted-eighth delay
    drums = _drums(tr, parts, fill_every=8, fill=_snare(tr, tone_hz=220, decay_s=0.1))
    mix.add(_echo(drums, sample_rate=tr.sample_rate, delay_s=echo_s, feedback=0.25), db=(-3, 1), reverb=0.2)
    lines = ["x--.x.x.--x-x-..", "x-.x--..x-x.x-..", "x---..x-x-..x-x."]
    bass = _riff(tr, chords, lines, ["R", "R", "5", "8", "b7", "5"], octave=1, legato=0.9)
    mix.add(_lowpass(tr, _play(tr, bass, _bass_electric(tr)), hz=r.uniform(250, 500)), db=(1, 4), reverb=0.0)
    offbeats = ["....x.......x..."] if r.random() < 0.6 else ["..x...x...x...x."]
    skank = _comp(tr, chords, offbeats, center=int(r.choice([62, 66])), legato=0.12)
    chops = _play(tr, skank, _pluck(tr, position=(0.1, 0.18), decay_s=(0.1, 0.2), mellow_s=0.04))
    chops = _echo(chops, sample_rate=tr.sample_rate, delay_s=echo_s, feedback=r.uniform(0.1, 0.4))
    mix.add(chops, db=(-6, -2), reverb=0.25)
    if r.random() < 0.7:
        bubble = _comp(tr, chords, ["..x-x-x...x-x-x."], center=60, legato=0.5, main=1.0)
        mix.add(_play(tr, bubble, _organ(tr)), db=(-10, -5), reverb=0.2)
    if r.random() < 0.7:
        scale = "pent_major" if chords[0].quality == "maj" else "pent_minor"
        phrases = ("x---x-x-x-------", "..x-x---x-x-----", "x-x-x---x---x---")
        _sing(tr, mix, chords, tonic=tonic, scale=scale, db=(-1, 3), rhythms=phrases)
    elif r.random() < 0.5:
        phrases = ("x---x-x-x-------", "x-x-x---x---x---")
        tune = _melody(tr, chords, phrases, tonic=tonic, scale="major", register=(tonic + 36, tonic + 52),
                       rest=0.4, repeat=0.5)
        mix.add(_play(tr, tune, _harmonica(tr)), db=(-4, 0), reverb=0.35)  # a melodica
    return mix.master(
        rt60_s=r.uniform(0.6, 1.3), wet=r.uniform(0.12, 0.3), ratio=r.uniform(2, 3.5),
        lowpass_hz=r.uniform(4500, 8000) if r.random() < 0.3 else None,
        noise_db=r.uniform(-60, -38), limit=r.uniform(0.5, 2), peak=(0.5, 0.95),
    )


def _rock(tr: _Track) -> np.ndarray:
    """Backbeat drums, overdriven power chords or strummed crunch, eighth-note bass, a singer."""
    r = tr.rng
    tr.bpm, tr.swing, tr.humanize_s = r.uniform(100, 140), r.uniform(0.5, 0.54), 0.004
    tonic = _tonic(tr, [4, 9, 2, 7, 0])
    bank = [
        [(0, "5", 1), (10, "5", 1), (5, "5", 1), (0, "5", 1)],  # I-bVII-IV-I
        [(0, "5", 1), (5, "5", 1), (7, "5", 1), (5, "5", 1)],
        [(0, "maj", 1), (7, "maj", 1), (9, "min", 1), (5, "maj", 1)],
        [(0, "5", 1), (8, "5", 1), (10, "5", 1), (0, "5", 1)],
    ]
    chords = _progression(tr, bank, tonic=tonic, stretch=(0.5, 1.0))
    mix = _Mix(tr)
    if r.random() < 0.3:
        cymbal = _cymbal(tr, decay_s=0.9, low_hz=3500, metal=1.0)  # ride
    else:
        cymbal = _cymbal(tr, decay_s=r.uniform(0.04, 0.08))
    parts = [
        _Part(_kick(tr, hz=(130, 55), decay_s=0.18, click=r.uniform(0.2, 0.5)),
              ("x.......x.x.....", "x.x.....x.x.....", "x.......x......."), fills=False),
        _Part(_snare(tr, tone_hz=r.uniform(180, 240), decay_s=r.uniform(0.12, 0.18)),
              ("....x.......x...", "....x.......x..g")),
        _Part(cymbal, ("x.x.x.x.x.x.x.x.",), gain=0.7),
    ]
    drums = _drums(tr, parts, fill=_snare(tr, decay_s=0.1), crash=_cymbal(tr, decay_s=1.4, low_hz=3500))
    mix.add(drums, db=(-1, 2), reverb=0.15)
    power = chords[0].quality == "5"
    pattern = ["x-x-x-x-x-x-x-x-", "x--x--x-x--x--x-", "x-------x-x-x---"]
    if power:
        chords_played = _riff(tr, chords, pattern, ["R"], octave=1, legato=0.9, power=True)
        guitar = _play(tr, chords_played, _guitar_dist(tr))
    else:  # open chords, strummed, through a crunchier amp
        chords_played = _comp(tr, chords, pattern, center=57, strum_s=0.006)
        guitar = _play(tr, chords_played, _pluck(tr, decay_s=(1.0, 2.0)))
    guitar = _drive(guitar, sample_rate=tr.sample_rate, gain=r.uniform(2.5, 9), clip=r.uniform(0.8, 1.0),
                    cab_hz=r.uniform(4000, 6500))
    mix.add(guitar, db=(-2, 2), reverb=0.15)
    bass = _riff(tr, chords, ["x-x-x-x-x-x-x-x-", "x---x---x-x-x---"], ["R"], octave=1, legato=0.85)
    mix.add(_play(tr, bass, _bass_electric(tr)), db=(-3, 1), reverb=0.0)
    if r.random() < 0.45:
        licks = ("x-x-x-xxx-------", "x---x-x-x-x-x---", "xxxxx-x-x-------")
        solo = _melody(tr, chords, licks, tonic=tonic, scale="pent_minor", register=(tonic + 36, tonic + 55),
                       rest=0.4, bend=0.35)
        lead = _play(tr, solo, _pluck(tr, decay_s=(1.0, 2.0)))
        lead = _drive(lead, sample_rate=tr.sample_rate, gain=r.uniform(5, 12), cab_hz=5500)
        mix.add(lead, db=(-4, 0), reverb=0.35)
    if r.random() < 0.2:
        organ = _comp(tr, chords, ["x-------x-------"], center=60, legato=1.0)
        mix.add(_play(tr, organ, _organ(tr)), db=(-10, -5), reverb=0.3)
    if r.random() < 0.7:
        _sing(tr, mix, chords, tonic=tonic, scale="pent_minor" if power else "major", db=(-1, 3))
    return mix.master(
        rt60_s=r.uniform(0.6, 1.3), wet=r.uniform(0.1, 0.25), ratio=r.uniform(3, 5),
        lowpass_hz=r.uniform(4500, 8000) if r.random() < 0.3 else None,
        noise_db=r.uniform(-60, -40), limit=r.uniform(1, 3), peak=(0.6, 0.98),
    )


_ARRANGERS: dict[str, Callable[[_Track], np.ndarray]] = {
    "blues": _blues,
    "classical": _classical,
    "country": _country,
    "disco": _disco,
    "hiphop": _hiphop,
    "jazz": _jazz,
    "metal": _metal,
    "pop": _pop,
    "reggae": _reggae,
    "rock": _rock,
}
