"""Genre arrangements, part two: disco, hip-hop, metal, pop, reggae and rock.

The same recipe as :mod:`genre.synth.arrange_acoustic`: tempo and key, a
progression from a bank, the band into a :class:`_Mix`, a master chain. Every
name here is private to :mod:`genre.synth`; :func:`genre.synth.render_track` is
the way in.
"""

from __future__ import annotations

import numpy as np

from genre.synth.drums import _clap, _click, _cymbal, _drums, _kick, _layer, _Part, _shaker, _snare
from genre.synth.harmony import (
    _arpeggio,
    _comp,
    _consonants,
    _melody,
    _progression,
    _rap,
    _riff,
    _sing,
    _tonic,
)
from genre.synth.instruments import (
    _bass_electric,
    _bass_synth,
    _epiano,
    _guitar_dist,
    _harmonica,
    _lead,
    _organ,
    _pad,
    _piano,
    _play,
    _pluck,
    _strings,
    _sub808,
    _voice,
)
from genre.synth.render import _drive, _echo, _lowpass, _Mix, _Note, _Track

__all__: list[str] = []


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
        _Part(
            _kick(tr, hz=(130, 52), decay_s=r.uniform(0.15, 0.25), click=0.25),
            ("x...x...x...x...",),
            fills=False,
        ),
        _Part(backbeat, ("....x.......x...",)),
        _Part(_cymbal(tr, decay_s=0.035), ("xgxgxgxgxgxgxgxg", "x.x.x.x.x.x.x.x."), gain=0.6),
        _Part(
            _cymbal(tr, decay_s=r.uniform(0.2, 0.35), low_hz=5000), ("..x...x...x...x.",), gain=0.9
        ),
    ]
    if r.random() < 0.4:
        parts.append(_Part(_shaker(tr, decay_s=0.07), ("x.xxx.xxx.xxx.xx",), gain=0.4))
    crash = _cymbal(tr, decay_s=1.2, low_hz=4000)
    drums = _drums(tr, parts, fill_every=8, fill=_snare(tr, decay_s=0.08), crash=crash)
    mix.add(drums, db=(-1, 2), reverb=0.1)
    bounce = ["x-x-x-x-x-x-x-x-", "x.x.x-x.x.x.x-x."]
    octaves = _riff(tr, chords, bounce, ["R", "8"], octave=1, legato=0.7)
    bassist = _bass_synth(tr) if r.random() < 0.4 else _bass_electric(tr)
    mix.add(_play(tr, octaves, bassist), db=(-2, 2), reverb=0.05)
    sixteenths = ["x.xx.x.xx.xx.x.x", ".x.x.xx..x.x.xx."]
    funk = _comp(tr, chords, sixteenths, center=66, legato=0.3, skip_root=True)
    guitar = _play(tr, funk, _pluck(tr, decay_s=(0.12, 0.25), mellow_s=0.05))
    mix.add(guitar, db=(-8, -3), reverb=0.15)
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
        rt60_s=r.uniform(0.8, 1.5),
        wet=r.uniform(0.12, 0.28),
        ratio=r.uniform(2.5, 4.5),
        lowpass_hz=r.uniform(6000, 9000) if r.random() < 0.3 else None,
        noise_db=r.uniform(-60, -40),
        limit=r.uniform(1, 2.5),
        peak=(0.6, 0.98),
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
        _Part(
            _cymbal(tr, decay_s=r.uniform(0.025, 0.05), metal=0.8), hats, gain=r.uniform(0.4, 0.8)
        ),
    ]
    mix.add(_drums(tr, parts, fill_every=0), db=(1, 4), reverb=0.08)
    if eight08:  # a sub that sometimes slides down an octave into the note
        follow = ["x-----x---x-----", "x---------x---x-"]
        bass = _riff(tr, chords, follow, ["R", "R", "b7"], octave=1, legato=1.0)
        bass = [
            _Note(x.beat, x.beats, x.pitches, x.velocity, 12.0 * (r.random() < 0.2)) for x in bass
        ]
        mix.add(_play(tr, bass, _sub808(tr)), db=(0, 3), reverb=0.0)
    else:
        lines = ["x-----x-x-----x-", "x-x-----x---x---"]
        bass = _riff(tr, chords, lines, ["R", "R", "5", "b7"], octave=1)
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
        rt60_s=r.uniform(0.4, 1.0),
        wet=r.uniform(0.08, 0.2),
        ratio=r.uniform(3, 6),
        lowpass_hz=r.uniform(4500, 8000) if lofi else None,
        noise_db=r.uniform(-45, -30) if lofi else r.uniform(-65, -45),
        crackle=r.uniform(0.1, 0.5) if lofi else 0.0,
        limit=r.uniform(1, 3),
        peak=(0.6, 0.98),
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
        _Part(
            _cymbal(tr, decay_s=r.uniform(0.5, 1.0), low_hz=3000, metal=1.5),
            ("x...x...x...x...", "x.x.x.x.x.x.x.x."),
            gain=0.7,
        ),
    ]
    toms = _kick(tr, hz=(180, 90), decay_s=0.2)
    crash = _cymbal(tr, decay_s=1.4, low_hz=3000)
    mix.add(_drums(tr, parts, fill=toms, crash=crash), db=(-1, 2), reverb=0.1)
    riffs = ["X-x.xxx.x.xxX-x.", "xxxxxxxxX---xxxx", "x.xxx.xxx.xxX---", "X---xxxxX---xxxx"]
    chug = _riff(tr, chords, riffs, ["R"], octave=1, legato=0.6, power=True)
    guitars = _play(tr, chug, _guitar_dist(tr))
    guitars = guitars + 0.8 * _play(tr, chug, _guitar_dist(tr))  # double-tracked
    guitars = _drive(
        guitars,
        sample_rate=tr.sample_rate,
        gain=r.uniform(10, 30),
        clip=r.uniform(0.5, 0.8),
        cab_hz=r.uniform(4000, 6500),
    )
    mix.add(guitars, db=(0, 3), reverb=0.1)
    bass = _play(tr, _riff(tr, chords, riffs, ["R"], legato=0.8), _bass_electric(tr))
    mix.add(_drive(bass, sample_rate=tr.sample_rate, gain=2, cab_hz=2500), db=(-4, -1), reverb=0.0)
    if r.random() < 0.4:
        shred = ("xxxxxxxxxxxxxxxx", "x-x-xxxxx-x-x-xx", "x---x---xxxxxxxx")
        solo = _melody(
            tr,
            chords,
            shred,
            tonic=tonic,
            scale="harmonic",
            register=(tonic + 36, tonic + 60),
            rest=0.4,
            bend=0.2,
            legato=1.0,
        )
        lead = _play(tr, solo, _guitar_dist(tr))
        lead = _drive(lead, sample_rate=tr.sample_rate, gain=15, cab_hz=6000)
        mix.add(lead, db=(-4, 0), reverb=0.3)
    if r.random() < 0.6:
        growl = _rap(tr, center=int(r.choice([40, 45, 50])), density=r.uniform(0.15, 0.35))
        growl = [_Note(x.beat, 0.6, x.pitches, x.velocity, 0.0, x.vowel) for x in growl]
        voice = _play(tr, growl, _voice(tr, sung=False)) + 0.5 * _consonants(tr, growl, share=0.8)
        voice = _drive(voice, sample_rate=tr.sample_rate, gain=r.uniform(5, 15))
        mix.add(voice, db=(-3, 0), reverb=0.25)
    return mix.master(
        rt60_s=r.uniform(0.4, 1.0),
        wet=r.uniform(0.08, 0.2),
        ratio=r.uniform(4, 8),
        lowpass_hz=r.uniform(5000, 8000) if r.random() < 0.25 else None,
        noise_db=r.uniform(-60, -40),
        limit=r.uniform(2, 4),
        peak=(0.7, 0.99),
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
        _Part(
            _kick(tr, hz=(140, 50), decay_s=r.uniform(0.15, 0.3), click=0.25), kicks, fills=False
        ),
        _Part(backbeat, ("....x.......x...",)),
        _Part(
            _cymbal(tr, decay_s=r.uniform(0.03, 0.06)),
            ("x.x.x.x.x.x.x.x.", "xxxxxxxxxxxxxxxx"),
            gain=0.6,
        ),
    ]
    if r.random() < 0.5:
        parts.append(_Part(_shaker(tr), ("xxxxxxxxxxxxxxxx",), gain=0.35))
    crash = _cymbal(tr, decay_s=1.2, low_hz=4000)
    drums = _drums(tr, parts, fill_every=8, fill=_snare(tr, decay_s=0.1), crash=crash)
    mix.add(drums, db=(-1, 2), reverb=0.12)
    bass = _riff(tr, chords, ["x-x-x-x-x-x-x-x-", "x--x--x-x--x--x-"], ["R"], octave=1, legato=0.8)
    synth_bass = _lowpass(tr, _play(tr, bass, _bass_synth(tr)), hz=r.uniform(500, 1500))
    mix.add(synth_bass, db=(-2, 2), reverb=0.05)
    keys = r.choice(["piano", "pad", "pluck"])
    if keys == "piano":
        block = _comp(tr, chords, ["x-x-x-x-x-x-x-x-", "x---x---x---x---"], center=62)
        mix.add(_play(tr, block, _piano(tr)), db=(-6, -2), reverb=0.35)
    elif keys == "pad":
        held = _comp(tr, chords, ["x---------------"], center=64, legato=1.0)
        mix.add(_play(tr, held, _pad(tr)), db=(-7, -3), reverb=0.4)
    else:
        up_and_down = (0, 1, 2, 3, 2, 1)
        arp = _arpeggio(tr, chords, ["x.x.x.x.x.x.x.x."], center=70, order=up_and_down, legato=0.5)
        plucks = _play(tr, arp, _pluck(tr, position=(0.2, 0.3), decay_s=(0.15, 0.3)))
        mix.add(plucks, db=(-8, -3), reverb=0.4)
    if r.random() < 0.3:
        riffs = ("x-x-x---x-x-x---", "x---x---x-x-x---")
        hook = _melody(
            tr,
            chords,
            riffs,
            tonic=tonic,
            scale="pent_major",
            register=(tonic + 48, tonic + 62),
            rest=0.5,
            repeat=0.7,
        )
        mix.add(_play(tr, hook, _lead(tr)), db=(-9, -5), reverb=0.35)
    if r.random() < 0.9:
        scale = "pent_major" if r.random() < 0.5 else "major"
        _sing(tr, mix, chords, tonic=tonic, scale=scale, db=(1, 4), repeat=0.65)
    return mix.master(
        rt60_s=r.uniform(0.8, 1.5),
        wet=r.uniform(0.12, 0.28),
        ratio=r.uniform(3, 6),
        noise_db=r.uniform(-70, -50),
        limit=r.uniform(1, 3),
        peak=(0.65, 0.99),
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
    kicks = {
        "one drop": "........x.......",
        "steppers": "x...x...x...x...",
        "rockers": "x.......x.......",
    }
    kick = kicks[style]
    if style == "one drop":
        rims = ("........x.......", "....x.......x...")
    else:
        rims = ("....x.......x...",)
    parts = [
        _Part(_kick(tr, hz=(110, 50), decay_s=0.25, click=0.1), (kick,), fills=False),
        _Part(_click(tr, hz=r.uniform(1500, 2200)), rims),
        _Part(
            _cymbal(tr, decay_s=r.uniform(0.03, 0.06)),
            ("x.x.x.x.x.x.x.x.", "x.xxx.x.x.xxx.x."),
            gain=0.6,
        ),
    ]
    echo_s = 0.75 * 60 / tr.bpm  # a dotted-eighth delay
    drums = _drums(tr, parts, fill_every=8, fill=_snare(tr, tone_hz=220, decay_s=0.1))
    drums = _echo(drums, sample_rate=tr.sample_rate, delay_s=echo_s, feedback=0.25)
    mix.add(drums, db=(-3, 1), reverb=0.2)
    lines = ["x--.x.x.--x-x-..", "x-.x--..x-x.x-..", "x---..x-x-..x-x."]
    bass = _riff(tr, chords, lines, ["R", "R", "5", "8", "b7", "5"], octave=1, legato=0.9)
    deep = _lowpass(tr, _play(tr, bass, _bass_electric(tr)), hz=r.uniform(250, 500))
    mix.add(deep, db=(1, 4), reverb=0.0)
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
        tune = _melody(
            tr,
            chords,
            phrases,
            tonic=tonic,
            scale="major",
            register=(tonic + 36, tonic + 52),
            rest=0.4,
            repeat=0.5,
        )
        mix.add(_play(tr, tune, _harmonica(tr)), db=(-4, 0), reverb=0.35)  # a melodica
    return mix.master(
        rt60_s=r.uniform(0.6, 1.3),
        wet=r.uniform(0.12, 0.3),
        ratio=r.uniform(2, 3.5),
        lowpass_hz=r.uniform(4500, 8000) if r.random() < 0.3 else None,
        noise_db=r.uniform(-60, -38),
        limit=r.uniform(0.5, 2),
        peak=(0.5, 0.95),
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
        _Part(
            _kick(tr, hz=(130, 55), decay_s=0.18, click=r.uniform(0.2, 0.5)),
            ("x.......x.x.....", "x.x.....x.x.....", "x.......x......."),
            fills=False,
        ),
        _Part(
            _snare(tr, tone_hz=r.uniform(180, 240), decay_s=r.uniform(0.12, 0.18)),
            ("....x.......x...", "....x.......x..g"),
        ),
        _Part(cymbal, ("x.x.x.x.x.x.x.x.",), gain=0.7),
    ]
    fill = _snare(tr, decay_s=0.1)
    drums = _drums(tr, parts, fill=fill, crash=_cymbal(tr, decay_s=1.4, low_hz=3500))
    mix.add(drums, db=(-1, 2), reverb=0.15)
    power = chords[0].quality == "5"
    pattern = ["x-x-x-x-x-x-x-x-", "x--x--x-x--x--x-", "x-------x-x-x---"]
    if power:
        chords_played = _riff(tr, chords, pattern, ["R"], octave=1, legato=0.9, power=True)
        guitar = _play(tr, chords_played, _guitar_dist(tr))
    else:  # open chords, strummed, through a crunchier amp
        chords_played = _comp(tr, chords, pattern, center=57, strum_s=0.006)
        guitar = _play(tr, chords_played, _pluck(tr, decay_s=(1.0, 2.0)))
    guitar = _drive(
        guitar,
        sample_rate=tr.sample_rate,
        gain=r.uniform(2.5, 9),
        clip=r.uniform(0.8, 1.0),
        cab_hz=r.uniform(4000, 6500),
    )
    mix.add(guitar, db=(-2, 2), reverb=0.15)
    bass = _riff(tr, chords, ["x-x-x-x-x-x-x-x-", "x---x---x-x-x---"], ["R"], octave=1, legato=0.85)
    mix.add(_play(tr, bass, _bass_electric(tr)), db=(-3, 1), reverb=0.0)
    if r.random() < 0.45:
        licks = ("x-x-x-xxx-------", "x---x-x-x-x-x---", "xxxxx-x-x-------")
        solo = _melody(
            tr,
            chords,
            licks,
            tonic=tonic,
            scale="pent_minor",
            register=(tonic + 36, tonic + 55),
            rest=0.4,
            bend=0.35,
        )
        lead = _play(tr, solo, _pluck(tr, decay_s=(1.0, 2.0)))
        lead = _drive(lead, sample_rate=tr.sample_rate, gain=r.uniform(5, 12), cab_hz=5500)
        mix.add(lead, db=(-4, 0), reverb=0.35)
    if r.random() < 0.2:
        organ = _comp(tr, chords, ["x-------x-------"], center=60, legato=1.0)
        mix.add(_play(tr, organ, _organ(tr)), db=(-10, -5), reverb=0.3)
    if r.random() < 0.7:
        _sing(tr, mix, chords, tonic=tonic, scale="pent_minor" if power else "major", db=(-1, 3))
    return mix.master(
        rt60_s=r.uniform(0.6, 1.3),
        wet=r.uniform(0.1, 0.25),
        ratio=r.uniform(3, 5),
        lowpass_hz=r.uniform(4500, 8000) if r.random() < 0.3 else None,
        noise_db=r.uniform(-60, -40),
        limit=r.uniform(1, 3),
        peak=(0.6, 0.98),
    )
