"""Instruments and voices: wavetable voices with an envelope, and the band that plays them.

:func:`_play` renders a list of notes on an :class:`_Inst`; the constructors below
(``_piano`` … ``_voice``) each draw a per-track variation of one timbre from the
track's score generator. Every name here is a building block private to
:mod:`genre.synth`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from genre.synth.render import _Note, _Track

__all__: list[str] = []

_TABLE = 4096  # wavetable length (a power of two: the phase wraps with a mask)


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
