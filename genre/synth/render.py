"""Rendering and mixing: the track being rendered, its notes, filters, effects and the mix bus.

Every name here is a building block private to :mod:`genre.synth`.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np
import soxr
from scipy import signal

from genre.errors import ParameterError

__all__: list[str] = []

_REVERB_RATE = 11025  # Hz: reverb tails are convolved at this rate


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


def _check_seconds(seconds: float) -> None:
    if (
        not isinstance(seconds, (int, float, np.number))
        or not math.isfinite(seconds)
        or seconds <= 0
    ):
        raise ParameterError(f"seconds={seconds!r} must be a positive number")


def _check_render_args(*, index: int, seed: int, seconds: float, sample_rate: int) -> None:
    """The guards shared by every public render function."""
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


def _new_track(key: str, *, seconds: float, sample_rate: int) -> _Track:
    """A blank track whose two generators are seeded from a stable hash of ``key``."""
    digest = hashlib.sha256(key.encode()).digest()
    return _Track(
        rng=np.random.default_rng(int.from_bytes(digest[:8], "little")),
        noise=np.random.default_rng(int.from_bytes(digest[8:16], "little")),
        sample_rate=int(sample_rate),
        samples=max(1, int(round(seconds * sample_rate))),
    )


def _filter(
    y: np.ndarray, *, sample_rate: int, kind: str, hz: float | tuple[float, float], order: int = 2
) -> np.ndarray:
    """Butterworth ``lowpass``/``highpass``/``bandpass``; corners are kept below Nyquist."""
    nyq = sample_rate / 2
    wn = np.clip(np.asarray(hz, dtype=float) / nyq, 1e-4, 0.95)
    if kind == "bandpass" and wn[0] >= wn[1]:
        wn = np.array([wn[1] * 0.7, wn[1]])
    sos = signal.butter(order, wn, btype=kind, output="sos")
    return signal.sosfilt(sos, y)


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
    """A feed-forward compressor on a 50 ms envelope.

    ``threshold`` is relative to the envelope's peak.
    """
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
