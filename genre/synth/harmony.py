"""Harmony and melody: the score of a track, drawn from its score generator.

Chords and progressions, rhythms written as sixteenth-note patterns (``x`` note,
``X`` accent, ``g`` ghost, ``-`` hold, ``.`` rest), bass lines and riffs, comping
and arpeggios, melodies in phrases, rapped and sung lines. Every name here is a
building block private to :mod:`genre.synth`.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from genre.synth.drums import _decay, _hits
from genre.synth.instruments import _VOWELS, _play, _voice
from genre.synth.render import _filter, _Mix, _Note, _Track

__all__: list[str] = []

# Chord qualities as semitones above the root ("5" is a power chord).
_QUALITY = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "5": (0, 7, 12),
    "dim": (0, 3, 6),
    "add9": (0, 4, 7, 14),
    "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "m7": (0, 3, 7, 10),
    "m7b5": (0, 3, 6, 10),
    "9": (0, 4, 7, 10, 14),
    "m9": (0, 3, 7, 10, 14),
    "maj9": (0, 4, 7, 11, 14),
    "13": (0, 4, 10, 14, 21),
}

_SCALE = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "harmonic": (0, 2, 3, 5, 7, 8, 11),  # harmonic minor
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "blues": (0, 3, 5, 6, 7, 10),
    "pent_major": (0, 2, 4, 7, 9),
    "pent_minor": (0, 3, 5, 7, 10),
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
    """Onsets ``(step, steps, velocity)`` of a pattern.

    ``x`` is a note, ``X`` an accent, ``-`` holds the note before, ``.`` rests.
    """
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
    """Onsets ``(beat, beats, velocity, index in pattern)`` of sixteenth-note patterns.

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
            following = _chord_at(chords, chord.beat + chord.beats)
            pitch = following.root + int(tr.rng.choice([-1, 1, -2]))
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
            notes += [
                _Note(beat + i * step, beats * legato, (p,), vel) for i, p in enumerate(order)
            ]
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


def _scale_pool(
    chord: _Chord, *, tonic: int, scale: str | None, register: tuple[int, int]
) -> np.ndarray:
    """Pitches in ``register`` of the scale in force: the key's, or (``None``) the chord's mode."""
    if scale is None:
        if chord.intervals[1] == 3:
            mode = "dorian"
        else:
            mode = "mixolydian" if 10 in chord.intervals else "major"
        pcs = {(chord.root + s) % 12 for s in _SCALE[mode]}
    else:
        pcs = {(tonic + s) % 12 for s in _SCALE[scale]}
    return np.array([p for p in range(register[0], register[1] + 1) if p % 12 in pcs])


def _next_pitch(
    rng: np.random.Generator,
    pool: np.ndarray,
    chord: _Chord,
    *,
    step: int,
    prev: int,
    register: tuple[int, int],
    chromatic: float,
) -> int:
    """A melody's next pitch from ``pool``: a chord tone on the beat, a step or a slide between."""
    if step % 4 == 0:  # on the beat: a chord tone near the last note
        tones = pool[np.isin(pool % 12, [(chord.root + iv) % 12 for iv in chord.intervals])]
        near = tones[np.argsort(np.abs(tones - prev))[:3]] if len(tones) else pool
        return int(rng.choice(near))
    if rng.random() < chromatic:
        return prev + int(rng.choice([-1, 1]))
    lo, hi = register
    i = int(np.argmin(np.abs(pool - prev))) + int(rng.choice([-2, -1, -1, 1, 1, 2]))
    i += 1 if prev < lo + 4 else (-1 if prev > hi - 4 else 0)
    return int(pool[np.clip(i, 0, len(pool) - 1)])


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
    rng, bar = tr.rng, tr.beats_per_bar
    prev = (register[0] + register[1]) // 2
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
                pool = _scale_pool(chord, tonic=tonic, scale=scale, register=register)
                pitch = _next_pitch(
                    rng, pool, chord, step=step, prev=prev, register=register, chromatic=chromatic
                )
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
            velocity = rng.uniform(0.7, 1.2)
            beat = b * tr.beats_per_bar + step / 4
            notes.append(_Note(beat, 0.22, (pitch,), velocity, 1.5, vowel))
    return notes


def _consonants(tr: _Track, notes: Sequence[_Note], *, share: float) -> np.ndarray:
    """Noise bursts (s, t, k) at the start of some sung or rapped syllables."""
    t, env = _decay(tr, 0.06, 0.015)
    noise = tr.noise.standard_normal(len(t))
    burst = _filter(noise, sample_rate=tr.sample_rate, kind="bandpass", hz=(3000, 9000)) * env
    beats = np.array([x.beat for x in notes if tr.rng.random() < share])
    return _hits(tr, burst, beats, tr.rng.uniform(0.3, 0.8, len(beats)))


# The rhythms a singer phrases in unless the arrangement gives its own.
_SUNG_RHYTHMS = ("x-x-x---x-x-x---", "x--x--x-x-------", "..x-x-x-x---x---", "x---x-x-x-x-----")


def _sing(
    tr: _Track,
    mix: _Mix,
    chords: Sequence[_Chord],
    *,
    tonic: int,
    scale: str,
    db: tuple[float, float],
    rhythms: Sequence[str] = _SUNG_RHYTHMS,
    reverb: float = 0.35,
    **melody: float,
) -> None:
    """Add a lead vocal to ``mix``: a melody on a formant voice, with its consonants."""
    low = int(tr.rng.choice([50, 55, 57, 60]))  # baritone to alto
    options = {"rest": 0.25, "repeat": 0.45, **melody}
    register = (low, low + 15)
    notes = _melody(
        tr, chords, rhythms, tonic=tonic, scale=scale, register=register, vowels=True, **options
    )
    voice = _play(tr, notes, _voice(tr)) + 0.25 * _consonants(tr, notes, share=0.4)
    mix.add(voice, db=db, reverb=reverb)
