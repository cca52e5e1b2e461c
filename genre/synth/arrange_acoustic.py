"""Genre arrangements, part one: blues, classical, country and jazz.

Each arranger draws a tempo and key, picks a progression from a bank, builds the
band (drums, bass, harmony, melody, voice) into a :class:`_Mix` and masters it.
Progressions are (semitones above the tonic, chord quality, bars); patterns are
sixteenths: ``x`` note, ``X`` accent, ``g`` ghost, ``-`` hold, ``.`` rest. Every
name here is private to :mod:`genre.synth`; :func:`genre.synth.render_track` is
the way in.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from genre.synth.drums import _click, _cymbal, _drums, _kick, _Part, _shaker, _snare
from genre.synth.harmony import (
    _arpeggio,
    _Chord,
    _comp,
    _melody,
    _progression,
    _riff,
    _sing,
    _tonic,
    _walking,
)
from genre.synth.instruments import (
    _bass_electric,
    _bass_upright,
    _flute,
    _harmonica,
    _horn,
    _organ,
    _piano,
    _play,
    _pluck,
    _steel,
    _strings,
    _twang,
)
from genre.synth.render import _drive, _Mix, _Track

__all__: list[str] = []


def _blues(tr: _Track) -> np.ndarray:
    """Shuffle, 12-bar I7-IV7-V7, boogie bass and rhythm, blue-note licks; often old and noisy."""
    r = tr.rng
    tr.bpm, tr.swing, tr.humanize_s = r.uniform(60, 125), r.uniform(0.62, 0.71), 0.008
    tonic = _tonic(tr, [4, 9, 7, 10, 0, 2])
    d7 = "9" if r.random() < 0.3 else "7"
    twelve = [(s, d7, 1) for s in (0, 0, 0, 0, 5, 5, 0, 0, 7, 5, 0, 7)]
    quick_change = [(s, d7, 1) for s in (0, 5, 0, 0, 5, 5, 0, 0, 7, 5, 0, 7)]
    minor = [
        (0, "m7", 4),
        (5, "m7", 2),
        (0, "m7", 2),
        (8, "7", 1),
        (7, "7", 1),
        (0, "m7", 1),
        (7, "7", 1),
    ]
    chords = _progression(tr, [twelve, quick_change, minor], tonic=tonic)
    mix = _Mix(tr)
    if r.random() < 0.7:  # a band; otherwise a solo guitarist
        _blues_band(tr, mix, chords)
    # The boogie rhythm figure: root under a fifth-sixth-seventh walk, on swung eighths.
    roots = _riff(tr, chords, ["x-x-x-x-x-x-x-x-"], ["R"], octave=1)
    walk = ["5", "5", "6", "6", "b7", "b7", "6", "6"]
    upper = _riff(tr, chords, ["x-x-x-x-x-x-x-x-"], walk, octave=1)
    rhythm = _play(tr, roots + upper, _pluck(tr, decay_s=(0.3, 0.7)))
    if r.random() < 0.5:
        rhythm = _drive(rhythm, sample_rate=tr.sample_rate, gain=r.uniform(1.5, 4), cab_hz=4500)
    mix.add(rhythm, db=(-5, 0))
    licks = ("x-x-xx--x-------", "x--x--x-x-x-x---", "..x-x-x-x-----..", "x-----x-x-xx-x--")
    lead = _melody(
        tr,
        chords,
        licks,
        tonic=tonic,
        scale="blues",
        register=(tonic + 28, tonic + 50),
        rest=0.5,
        repeat=0.2,
        bend=0.35,
    )
    if r.random() < 0.4:
        mix.add(_play(tr, lead, _harmonica(tr)), db=(-4, 0), reverb=0.4)
    else:
        guitar = _play(tr, lead, _pluck(tr, decay_s=(0.8, 1.5)))
        guitar = _drive(guitar, sample_rate=tr.sample_rate, gain=r.uniform(2, 8))
        mix.add(guitar, db=(-4, 0), reverb=0.4)
    if r.random() < 0.6:
        phrases = ("x--x--x-x-------", "x-x---x---x-x---", "........x-x-x---")
        _sing(tr, mix, chords, tonic=tonic, scale="blues", db=(-3, 1), bend=0.3, rhythms=phrases)
    old = r.random() < 0.35  # a 78 transfer: narrow band, hiss and crackle
    return mix.master(
        rt60_s=r.uniform(0.8, 1.6),
        wet=r.uniform(0.15, 0.35),
        ratio=r.uniform(1, 3),
        lowpass_hz=r.uniform(3000, 6000) if old else None,
        noise_db=r.uniform(-42, -30) if old else r.uniform(-65, -45),
        crackle=0.3 if old else 0.0,
        swell_db=r.uniform(0, 4),
        limit=r.uniform(0, 1.5),
        peak=(0.45, 0.95),
    )


def _blues_band(tr: _Track, mix: _Mix, chords: Sequence[_Chord]) -> None:
    """The blues band behind the guitarist: shuffle drums, boogie or walking bass, keys."""
    r = tr.rng
    if r.random() < 0.6:
        hat = _cymbal(tr, decay_s=r.uniform(0.04, 0.09), low_hz=6000)
    else:
        hat = _cymbal(tr, decay_s=0.8, low_hz=3500, metal=1.0)  # a ride
    parts = [
        _Part(
            _kick(tr, hz=(110, 55), decay_s=0.2, click=0.15),
            ("x.......x.......", "x.......x.....x."),
        ),
        _Part(
            _snare(tr, tone_hz=r.uniform(170, 220), decay_s=0.1),
            ("....x.......x...", "....x.....g.x..."),
        ),
        _Part(hat, ("x.x.x.x.x.x.x.x.", "x...x.x.x...x.x.")),
    ]
    crash = _cymbal(tr, decay_s=1.2, low_hz=4000)
    drums = _drums(tr, parts, fill=_snare(tr, decay_s=0.08), crash=crash)
    mix.add(drums, db=(-2, 2), reverb=0.15)
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


def _classical(tr: _Track) -> np.ndarray:
    """No drums: strings, piano or winds, functional harmony, slow attacks, hall, wide dynamics."""
    r = tr.rng
    tr.bpm, tr.beats_per_bar, tr.humanize_s = r.uniform(60, 140), int(r.choice([3, 4, 4])), 0.012
    minor = r.random() < 0.45
    tonic = _tonic(tr, range(12)) + 12
    waltz = tr.beats_per_bar == 3
    stretch = (1.0,) if waltz else (1.0, 0.5)
    chords = _progression(tr, _classical_bank(minor=minor), tonic=tonic, stretch=stretch)
    scale = "harmonic" if minor else "major"
    held, eighths, tunes = _classical_patterns(waltz=waltz)
    mix = _Mix(tr)
    ensemble = r.choice(["strings", "piano", "chamber", "piano"])
    if ensemble in ("strings", "chamber"):
        chamber = ensemble == "chamber"
        patterns = (held, eighths, tunes)
        _classical_strings(tr, mix, chords, patterns, tonic=tonic, scale=scale, chamber=chamber)
    else:
        _classical_piano(tr, mix, chords, (eighths, tunes), tonic=tonic, scale=scale)
    return mix.master(
        rt60_s=r.uniform(1.6, 2.6),
        wet=r.uniform(0.3, 0.6),
        ratio=1.0,
        lowpass_hz=r.uniform(5000, 9000) if r.random() < 0.3 else None,
        noise_db=r.uniform(-68, -42),
        swell_db=r.uniform(8, 20),
        peak=(0.06, 0.45),
    )


def _classical_bank(*, minor: bool) -> list[list[tuple[int, str, float]]]:
    """Cadences of the common-practice period, in minor or major."""
    if minor:
        return [
            [(0, "min", 1), (5, "min", 1), (7, "maj", 1), (0, "min", 1)],
            [(0, "min", 1), (8, "maj", 1), (2, "dim", 1), (7, "7", 1)],
            [(0, "min", 1), (3, "maj", 1), (5, "min", 1), (7, "7", 1)],
        ]
    return [
        [(0, "maj", 1), (5, "maj", 1), (7, "maj", 1), (0, "maj", 1)],
        [(0, "maj", 1), (9, "min", 1), (2, "min", 1), (7, "7", 1)],
        [
            (0, "maj", 1),
            (7, "maj", 1),
            (9, "min", 1),
            (4, "min", 1),
            (5, "maj", 1),
            (0, "maj", 1),
            (5, "maj", 1),
            (7, "maj", 1),
        ],  # Pachelbel
    ]


def _classical_patterns(*, waltz: bool) -> tuple[tuple[str, ...], ...]:
    """Held notes, running eighths and melody rhythms, in 3/4 or 4/4."""
    held = ("x-----------",) if waltz else ("x---------------",)
    eighths = ("x-x-x-x-x-x-",) if waltz else ("x-x-x-x-x-x-x-x-",)
    if waltz:
        tunes = ("x-----x---x-", "x---x---x---", "x-x-x-x-x---", "x-----------")
    else:
        tunes = (
            "x-------x---x---",
            "x---x---x---x---",
            "x-x-x-x-x-------",
            "x-------x-------",
            "x-x-x-x-x-x-x-x-",
        )
    return held, eighths, tunes


def _classical_strings(
    tr: _Track,
    mix: _Mix,
    chords: Sequence[_Chord],
    patterns: tuple[tuple[str, ...], ...],
    *,
    tonic: int,
    scale: str,
    chamber: bool,
) -> None:
    """A string section, the tune on a solo violin, or (``chamber``) on a flute."""
    r = tr.rng
    held, eighths, tunes = patterns
    cellos = _riff(tr, chords, held, ["R"], octave=1, legato=1.0)
    mix.add(_play(tr, cellos, _strings(tr, solo=True)), db=(-4, 0), reverb=0.6)
    if r.random() < 0.6:
        inner = _comp(tr, chords, held, center=60, legato=1.0)
    else:
        inner = _arpeggio(tr, chords, eighths, center=60, order=(0, 1, 2, 1))
    mix.add(_play(tr, inner, _strings(tr)), db=(-5, -1), reverb=0.6)
    lead = _flute(tr) if chamber else _strings(tr, attack_s=0.06, solo=True)
    tune = _melody(
        tr,
        chords,
        tunes,
        tonic=tonic,
        scale=scale,
        register=(tonic + 24, tonic + 43),
        phrase_bars=4,
        rest=0.15,
        repeat=0.3,
        legato=1.0,
    )
    mix.add(_play(tr, tune, lead), db=(-2, 2), reverb=0.6)


def _classical_piano(
    tr: _Track,
    mix: _Mix,
    chords: Sequence[_Chord],
    patterns: tuple[tuple[str, ...], ...],
    *,
    tonic: int,
    scale: str,
) -> None:
    """Solo piano: broken chords in the left hand, the tune in the right."""
    r = tr.rng
    eighths, tunes = patterns
    order = (0, 2, 1, 2) if r.random() < 0.5 else (0, 1, 2, 3)  # Alberti bass or broken chords
    left = _arpeggio(tr, chords, eighths, center=54, order=order, legato=3.0)
    mix.add(_play(tr, left, _piano(tr)), db=(-5, -1), reverb=0.6)
    tune = _melody(
        tr,
        chords,
        tunes,
        tonic=tonic,
        scale=scale,
        register=(tonic + 24, tonic + 46),
        phrase_bars=4,
        rest=0.1,
        repeat=0.3,
        legato=1.2,
    )
    mix.add(_play(tr, tune, _piano(tr)), db=(-2, 2), reverb=0.6)


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
        _Part(
            _kick(tr, hz=(120, 55), decay_s=0.15, click=0.2),
            ("x.......x.......", "x.......x...x..."),
        ),
        _Part(snare, ("....x.......x...",)),
        _Part(_cymbal(tr, decay_s=r.uniform(0.03, 0.07)), ("x.x.x.x.x.x.x.x.",), gain=0.8),
    ]
    if train:
        parts.append(_Part(_shaker(tr, decay_s=0.04, attack_s=0.02), ("ggggXgggggggXggg",)))
    fill = _snare(tr, decay_s=0.08)
    drums = _drums(tr, parts, fill=fill, crash=_cymbal(tr, decay_s=1.0, low_hz=4000))
    mix.add(drums, db=(-3, 1), reverb=0.15)
    boom_chick = ["x---x---x---x---", "x---x---x---x-x-"]
    boom = _riff(tr, chords, boom_chick, ["R", "5", "R", "5", "A"], octave=1)
    bassist = _bass_electric(tr) if r.random() < 0.6 else _bass_upright(tr)
    mix.add(_play(tr, boom, bassist), db=(-3, 1), reverb=0.05)
    strums = ["x-x-x-x-x-x-x-x-", "x---x-x-x---x-x-", "x-xxx-x-x-xxx-x-"]
    strum = _comp(tr, chords, strums, center=60, legato=0.8, strum_s=0.008)
    mix.add(_play(tr, strum, _pluck(tr, position=(0.08, 0.14), decay_s=(0.3, 0.7))), db=(-6, -1))
    licks = ("x-x-x-xxx-------", "x.x.x.x.x-x-x---", "....x-x-x-x-x-x-", "x-xx-xx-x-------")
    lick = _melody(
        tr,
        chords,
        licks,
        tonic=tonic,
        scale="pent_major",
        register=(tonic + 36, tonic + 52),
        rest=0.45,
        repeat=0.2,
        bend=0.4,
        legato=0.8,
    )
    mix.add(_play(tr, lick, _twang(tr)), db=(-5, -1), reverb=0.25)
    _country_extra(tr, mix, chords, tonic=tonic)
    if r.random() < 0.75:
        _sing(tr, mix, chords, tonic=tonic, scale="pent_major", db=(-2, 2), bend=0.2)
    return mix.master(
        rt60_s=r.uniform(0.6, 1.3),
        wet=r.uniform(0.12, 0.3),
        ratio=r.uniform(1.5, 3),
        lowpass_hz=r.uniform(4000, 7000) if r.random() < 0.2 else None,
        noise_db=r.uniform(-65, -40),
        swell_db=r.uniform(0, 3),
        limit=r.uniform(0, 1.5),
        peak=(0.5, 0.95),
    )


def _country_extra(tr: _Track, mix: _Mix, chords: Sequence[_Chord], *, tonic: int) -> None:
    """A fiddle, a pedal steel, a honky-tonk piano, or nobody."""
    r = tr.rng
    extra = r.choice(["fiddle", "steel", "piano", "none"])
    if extra == "fiddle":
        bowing = ("x-x-x-x-x-x-x-x-", "x---x-x-x-------")
        line = _melody(
            tr,
            chords,
            bowing,
            tonic=tonic,
            scale="major",
            register=(tonic + 43, tonic + 60),
            rest=0.5,
        )
        mix.add(_play(tr, line, _strings(tr, attack_s=0.04, solo=True)), db=(-7, -2), reverb=0.35)
    elif extra == "steel":
        swells = ("x-------x-------", "x---------------")
        line = _melody(
            tr,
            chords,
            swells,
            tonic=tonic,
            scale="major",
            register=(tonic + 36, tonic + 52),
            rest=0.3,
            bend=0.6,
            legato=1.2,
        )
        mix.add(_play(tr, line, _steel(tr)), db=(-7, -2), reverb=0.45)
    elif extra == "piano":
        keys = _comp(tr, chords, ["..x...x...x...x.", "x-x-x-x-x-x-x-x-"], center=66, legato=0.5)
        mix.add(_play(tr, keys, _piano(tr)), db=(-9, -4))


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
        [
            (0, "7", 1),
            (5, "7", 1),
            (0, "7", 2),
            (5, "7", 2),
            (0, "7", 1),
            (9, "7", 1),
            (2, "m7", 1),
            (7, "7", 1),
            (0, "7", 0.5),
            (9, "7", 0.5),
            (2, "m7", 0.5),
            (7, "7", 0.5),
        ],  # jazz blues
        [(0, "m9", 4), (1, "m9", 2), (0, "m9", 2)],  # modal
    ]
    chords = _progression(tr, bank, tonic=tonic)
    mix = _Mix(tr)
    mix.add(_jazz_drums(tr), db=(-8, -3), reverb=0.2)
    _jazz_band(tr, mix, chords, tonic=tonic)
    old = r.random() < 0.25
    return mix.master(
        rt60_s=r.uniform(0.8, 1.6),
        wet=r.uniform(0.15, 0.35),
        ratio=r.uniform(1, 2),
        lowpass_hz=r.uniform(3500, 6000) if old else None,
        noise_db=r.uniform(-40, -28) if old else r.uniform(-65, -45),
        crackle=0.25 if old else 0.0,
        swell_db=r.uniform(2, 8),
        limit=r.uniform(0, 0.8),
        peak=(0.35, 0.9),
    )


def _jazz_drums(tr: _Track) -> np.ndarray:
    """Swing on the ride, hi-hat on two and four, feathered kick; brushes or snare chatter."""
    r = tr.rng
    brushes = r.random() < 0.35
    ride = _cymbal(tr, decay_s=r.uniform(0.7, 1.3), low_hz=3500, metal=1.0)
    comping = "".join("g" if r.random() < 0.18 else "." for _ in range(32))  # snare chatter
    if brushes:
        snare = _Part(_shaker(tr, decay_s=0.15, attack_s=0.03), ("x.x.x.x.x.x.x.x.",), gain=0.5)
    else:
        snare = _Part(_snare(tr, tone_hz=r.uniform(200, 260), decay_s=0.08), (comping,), gain=0.9)
    parts = [
        _Part(
            ride,
            ("x...x.x.x...x.x.", "x...x.x.x.x.x.x.", "x...x...x...x.x."),
            gain=r.uniform(0.4, 0.8),
        ),
        _Part(_cymbal(tr, decay_s=0.03, low_hz=5000), ("....x.......x...",), gain=0.5),  # foot hat
        _Part(_kick(tr, hz=(95, 55), decay_s=0.2, click=0.05), ("g...g...g...g...",), gain=0.6),
        snare,
    ]
    return _drums(tr, parts, fill_every=8, fill=_snare(tr, decay_s=0.06))


def _jazz_band(tr: _Track, mix: _Mix, chords: Sequence[_Chord], *, tonic: int) -> None:
    """Walking upright bass, Charleston comping on piano or archtop, a bebop solo."""
    r = tr.rng
    mix.add(_play(tr, _walking(tr, chords), _bass_upright(tr)), db=(-1, 3), reverb=0.1)
    charleston = ["x-----x---------", "..x-----...x----", "x-------..x-----", "......x-----x---"]
    if r.random() < 0.7:
        comper = _piano(tr)
    else:
        comper = _pluck(tr, position=(0.3, 0.45), decay_s=(0.4, 0.8))  # a mellow archtop
    voicings = _comp(tr, chords, charleston, center=62, skip_root=True, legato=0.8, main=0.4)
    mix.add(_play(tr, voicings, comper), db=(-6, -2), reverb=0.35)
    lines = (
        "x-x-x-x-x-x-x-x-",
        "x-x-x-x-x-x-----",
        "..x-x-x-x-x-x-x-",
        "x-------x-x-x---",
        "x---x---x-------",
    )
    solo = _melody(
        tr,
        chords,
        lines,
        tonic=tonic,
        scale=None,
        register=(tonic + 26, tonic + 50),
        rest=0.3,
        repeat=0.1,
        chromatic=0.25,
        legato=0.95,
    )
    soloist = _horn(tr, bright=r.uniform(0.3, 1.0)) if r.random() < 0.75 else _piano(tr)
    mix.add(_play(tr, solo, soloist), db=(-3, 1), reverb=0.35)
