"""Drums: pitched sine sweeps and filtered noise, placed on sixteenth-note patterns.

Each drum (``_kick``, ``_snare``, ``_cymbal``, …) is one short sound; :func:`_drums`
repeats every part's patterns over the track as an impulse train convolved with
its sound, with fills and crashes. Every name here is a building block private
to :mod:`genre.synth`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import signal

from genre.synth.render import _filter, _Track

__all__: list[str] = []


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
    """Velocities of a pattern's hits: ``x`` normal, ``X`` accent, ``g`` ghost; a little random."""
    level = np.array([{"x": 1.0, "X": 1.3, "g": 0.3}[c] for c in pattern if c != "."])
    return level * tr.rng.uniform(0.85, 1.1, len(level))


@dataclass
class _Part:
    """One drum of a kit: its sound, its patterns (first is the main one), its level."""

    sound: np.ndarray
    patterns: tuple[str, ...]
    gain: float = 1.0
    fills: bool = True  # drops out under fills


def _part_hits(tr: _Track, part: _Part) -> tuple[np.ndarray, np.ndarray]:
    """Beats and velocities of one part over the track: its main pattern, now and then another."""
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
    return np.concatenate(beats), np.concatenate(vels)


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
        b, v = _part_hits(tr, part)
        if part.fills and len(fill_start):
            after = b[:, None] >= fill_start[None, :]
            before = b[:, None] < fill_start[None, :] + fill_beats
            inside = (after & before).any(axis=1)
            b, v = b[~inside], v[~inside]
        out += part.gain * _hits(tr, part.sound, b, v)
    if len(fill_start):
        steps = np.arange(0, fill_beats, 0.25)
        b = (fill_start[:, None] + steps[None, :]).ravel()
        rising = np.tile(np.linspace(0.5, 1.1, len(steps)), len(fill_start))
        v = rising * tr.rng.uniform(0.8, 1.1, len(b))
        keep = tr.rng.random(len(b)) < 0.8
        out += _hits(tr, fill, b[keep], v[keep])
    if crash is not None:
        starts = np.array([(b + 1) * bar for b in fill_bars], dtype=float)
        out += 0.7 * _hits(tr, crash, starts, np.ones(len(starts)))
    return out
