"""Styles outside the taxonomy: synthetic audio that is none of the ten genres.

A probe for out-of-distribution scores without real music. Each style lacks
something every one of the ten genres has, or has something none of them has:

- ``drone``: sustained, detuned pads over a sub tone, with slow swells and a slowly
  moving filter; no beat, no melody, chords that change every 8 to 16 seconds.
- ``techno``: a four-on-the-floor kick, off-beat hats and a percussive bass stab
  on one pitch; no chords, no melody, no voice.
- ``percussion``: tuned hand drums (tabla-like strokes with ringing, harmonic
  heads and a bass drum whose pitch rises) in irregular cycles of 7 to 16 steps;
  no tonal instrument.
- ``speech``: noise through moving vowel formants, opened and closed 4 to 6 times
  a second in phrases with pauses, with fricative bursts: whispered talk.
- ``talk``: a voiced speaker, as in an audiobook or a podcast: a buzzing glottal source at
  a speaking pitch that wanders and falls over each phrase (not the held, stepped pitches
  of a singer), through the same moving formants, with fricatives and pauses.
- ``field``: a field recording: a wind or traffic rumble that comes and goes, rain or
  gravel crackle, birds' short chirps, now and then a passing car; no beat, no pitch
  that lasts.

Tracks are seeded like the genres' (a stable hash of ``(style, index, seed)``)
and written by :func:`write_other` into ``<output>/_other/`` with the corpus's mix
of formats, rates and channels. :func:`genre.corpus.list_tracks` leaves files in
folders whose name starts with ``_`` unlabelled, so extraction and tuning never
take ``_other`` for a genre.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import signal

from genre.config import OTHER_FOLDER
from genre.errors import ParameterError
from genre.synth.drums import _clap, _click, _cymbal, _decay, _drums, _hits, _kick, _Part, _shaker
from genre.synth.harmony import _onsets
from genre.synth.instruments import _VOWELS, _Inst, _play, _saw
from genre.synth.render import _check_render_args, _filter, _Mix, _new_track, _Note, _Track
from genre.synth.writing import _check_corpus_args, _write_all

__all__ = ["OTHER_STYLES", "render_other", "write_other"]

#: The styles :func:`render_other` knows, none of them one of :data:`genre.config.GENRES`.
#: New styles go at the end: track ``k`` of :func:`write_other` counts across styles.
OTHER_STYLES = ("drone", "techno", "percussion", "speech", "talk", "field")


def render_other(
    style: str, *, index: int, seed: int = 0, seconds: float = 30.0, sample_rate: int = 22050
) -> np.ndarray:
    """Render one track of a style outside the taxonomy.

    Parameters
    ----------
    style : str
        One of :data:`OTHER_STYLES`.
    index : int >= 0
        Track number within the style; each index is a different piece.
    seed : int
        Corpus seed; the same ``(style, index, seed)`` gives the same track.
    seconds : float > 0
        Duration in seconds.
    sample_rate : int >= 8000
        Rate in Hz to render at. The piece does not depend on it.

    Returns
    -------
    y : np.ndarray [shape=(samples,), dtype=float32]
        Mono audio in [-1, 1], ``samples = round(seconds * sample_rate)``.

    Raises
    ------
    ParameterError
        For an unknown style or an out-of-range argument.
    """
    if style not in OTHER_STYLES:
        raise ParameterError(f"style={style!r} is not one of {', '.join(OTHER_STYLES)}")
    _check_render_args(index=index, seed=seed, seconds=seconds, sample_rate=sample_rate)
    key = f"genre.synth.other:{style}:{int(index)}:{int(seed)}"
    tr = _new_track(key, seconds=seconds, sample_rate=sample_rate)
    return _STYLES[style](tr)


def write_other(
    output: str | Path,
    *,
    per_style: int = 10,
    seconds: float = 30.0,
    seed: int = 0,
    workers: int | None = None,
) -> list[Path]:
    """Write the out-of-taxonomy styles: ``output/_other/<style>.<NNNNN>.<ext>``
    (:data:`genre.config.OTHER_FOLDER`).

    Formats, sample rates and channel counts are mixed as
    :func:`genre.synth.write_corpus` mixes them, track ``k`` counting across
    styles. Existing files are overwritten; the genre folders are not touched.

    Parameters
    ----------
    output : str or Path
        Corpus root (created if missing); the files go to its ``_other`` folder.
    per_style : int >= 1
        Tracks per style.
    seconds : float > 0
        Duration of each track in seconds.
    seed : int
        Corpus seed; the same arguments write the same audio.
    workers : int or None
        Processes rendering tracks in parallel (``None``: one per core).

    Returns
    -------
    paths : list[Path]
        ``len(OTHER_STYLES) * per_style`` files, style by style.

    Raises
    ------
    ParameterError
        For ``per_style < 1``, ``seconds <= 0`` or an ``output`` that is a file.
    """
    root = _check_corpus_args(output, per_style=per_style, seconds=seconds)
    jobs = [
        (render_other, root / OTHER_FOLDER, style, i, s * per_style + i, seed, seconds)
        for s, style in enumerate(OTHER_STYLES)
        for i in range(per_style)
    ]
    return _write_all(jobs, workers=workers)


# ---------------------------------------------------------------------------
# Slow movements
# ---------------------------------------------------------------------------


def _wander(tr: _Track, *, period_s: tuple[float, float]) -> np.ndarray:
    """A slow random curve in [0, 1] over the track: cosine steps between random knots.

    ``period_s`` bounds the time between knots; the knots come from the score
    generator and are placed in seconds, so the curve does not depend on the rate.
    """
    step = tr.rng.uniform(*period_s)
    knots = tr.rng.random(int(tr.samples / tr.sample_rate / step) + 2)
    x = np.arange(tr.samples) / tr.sample_rate / step
    i = np.minimum(x.astype(np.int64), len(knots) - 2)
    w = (1 - np.cos(np.pi * (x - i))) / 2
    return knots[i] * (1 - w) + knots[i + 1] * w


def _sweep(tr: _Track, y: np.ndarray, *, dark_hz: float, bright_hz: float) -> np.ndarray:
    """A low-pass whose corner wanders between ``dark_hz`` and ``bright_hz`` every few seconds.

    A crossfade between the two low-passed signals: cheaper than a time-varying
    filter and, at these rates of movement, heard the same way.
    """
    sr = tr.sample_rate
    dark = _filter(y, sample_rate=sr, kind="lowpass", hz=dark_hz)
    bright = _filter(y, sample_rate=sr, kind="lowpass", hz=bright_hz)
    m = _wander(tr, period_s=(3.0, 9.0))
    return dark * (1 - m) + bright * m


# ---------------------------------------------------------------------------
# The styles
# ---------------------------------------------------------------------------


def _drone(tr: _Track) -> np.ndarray:
    """Detuned pads over a sub tone, chords changing every 8-16 s, slow swells and sweeps."""
    r = tr.rng
    tr.bpm, tr.humanize_s = 60.0, 0.0  # one beat per second: the score counts seconds
    root = 36 + int(r.integers(12))
    voicings = ((0, 7, 12, 19), (0, 7, 14, 19), (0, 5, 12, 17), (0, 2, 7, 12), (0, 12, 19, 24))
    chords, beat = [], 0.0
    while beat < tr.beats:
        length = r.uniform(8.0, 16.0)
        shift = int(r.choice([0, 0, 5, 7, -5]))  # the root drifts now and then
        pitches = tuple(root + shift + iv for iv in voicings[r.integers(len(voicings))])
        chords.append(_Note(beat, length + 2.0, pitches, r.uniform(0.7, 1.0)))  # overlapping
        beat += length
    pad = _Inst(
        _saw(24, r.uniform(1.0, 1.6)),
        attack_s=r.uniform(1.0, 3.0),
        decay_s=4.0,
        sustain=0.85,
        release_s=3.0,
        detune_cents=r.uniform(12, 30),
        vibrato_hz=r.uniform(0.1, 0.3),
        vibrato_depth=0.002,
        vibrato_delay_s=0.5,
    )
    pads = _sweep(
        tr, _play(tr, chords, pad), dark_hz=r.uniform(250, 500), bright_hz=r.uniform(1500, 4000)
    )
    mix = _Mix(tr)
    mix.add(pads * (0.35 + 0.65 * _wander(tr, period_s=(4.0, 10.0))), db=(0, 2), reverb=0.8)
    sub = _Inst((1.0, 0.08), attack_s=2.0, decay_s=4.0, sustain=1.0, release_s=2.0)
    mix.add(_play(tr, [_Note(0.0, float(tr.beats), (root - 12,))], sub), db=(-8, -3), reverb=0.1)
    if r.random() < 0.5:  # wind: band-passed noise that comes and goes
        wind = _filter(
            tr.noise.standard_normal(tr.samples),
            sample_rate=tr.sample_rate,
            kind="bandpass",
            hz=(r.uniform(200, 500), r.uniform(1200, 3000)),
        )
        mix.add(wind * _wander(tr, period_s=(3.0, 8.0)), db=(-14, -8), reverb=0.6)
    return mix.master(
        rt60_s=r.uniform(2.5, 4.0),
        wet=r.uniform(0.4, 0.7),
        noise_db=r.uniform(-70, -50),
        swell_db=r.uniform(2, 6),
        peak=(0.3, 0.8),
    )


def _techno(tr: _Track) -> np.ndarray:
    """Four on the floor, off-beat open hats, sixteenth closed hats, a one-note bass stab."""
    r = tr.rng
    tr.bpm, tr.humanize_s = r.uniform(124, 140), 0.0005  # machines keep time
    kick = _kick(
        tr,
        hz=(r.uniform(150, 200), r.uniform(45, 55)),
        sweep_s=0.02,
        decay_s=r.uniform(0.18, 0.3),
        click=r.uniform(0.3, 0.7),
    )
    parts = [
        _Part(kick, ("x...x...x...x...",), fills=False),
        _Part(
            _cymbal(tr, decay_s=r.uniform(0.12, 0.2), low_hz=6000), ("..x...x...x...x.",), gain=0.7
        ),
        _Part(
            _cymbal(tr, decay_s=r.uniform(0.02, 0.04), low_hz=7000),
            ("xxxxxxxxxxxxxxxx", "x.xxx.xxx.xxx.xx"),
            gain=r.uniform(0.3, 0.6),
        ),
    ]
    if r.random() < 0.6:
        parts.append(_Part(_clap(tr), ("....x.......x...",), gain=0.7))
    if r.random() < 0.5:
        rim = "".join("x" if r.random() < 0.3 else "." for _ in range(16))
        parts.append(_Part(_click(tr, hz=r.uniform(800, 1400)), (rim,), gain=0.5))
    mix = _Mix(tr)
    mix.add(_drums(tr, parts, fill_every=0), db=(1, 4), reverb=0.05)
    pitch = 33 + int(r.integers(10))  # one note throughout
    stabs = ("..x...x...x...x.", "..x..x....x..x..", "x..x..x...x..x..", ".xx..x.x.xx..x.x")
    pattern = stabs[r.integers(len(stabs))]
    notes = [_Note(beat, 0.15, (pitch,), vel) for beat, _, vel, _ in _onsets(tr, [pattern])]
    stab = _Inst(_saw(16), attack_s=0.002, decay_s=r.uniform(0.06, 0.15), release_s=0.02)
    bass = _sweep(
        tr, _play(tr, notes, stab), dark_hz=r.uniform(200, 400), bright_hz=r.uniform(1500, 3500)
    )
    mix.add(bass, db=(-3, 1), reverb=0.1)
    return mix.master(
        rt60_s=r.uniform(0.5, 1.2),
        wet=r.uniform(0.05, 0.15),
        ratio=r.uniform(3, 6),
        noise_db=r.uniform(-75, -60),
        limit=r.uniform(1.5, 3),
        peak=(0.8, 0.99),
    )


# Mode frequencies of a tabla's loaded head (near-harmonic, thanks to the syahi) and of
# an unloaded circular membrane (a conga or djembe), relative to the lowest mode.
_HARMONIC_HEAD = (1.0, 2.0, 3.0, 4.0, 5.0)
_PLAIN_HEAD = (1.0, 1.59, 2.14, 2.30, 2.65)


def _membrane(
    tr: _Track,
    *,
    hz: float,
    decay_s: float,
    modes: tuple[float, ...],
    glide: float = 0.0,
    slap: float = 0.3,
) -> np.ndarray:
    """A struck, tuned drum head: decaying modes, a pitch that may rise, a slap of noise.

    ``glide`` is how far (a fraction of ``hz``) the pitch rises over ~80 ms after
    the stroke, as when a player presses the bass head with the wrist.
    """
    t, _ = _decay(tr, decay_s * 6, decay_s)
    tau = 0.08
    time = t + glide * (t - tau * (1 - np.exp(-t / tau)))  # integral of the rising pitch
    body = sum(
        np.sin(2 * np.pi * hz * ratio * time) * np.exp(-t * (1 + 0.7 * j) / decay_s) / (1 + j)
        for j, ratio in enumerate(modes)
    )
    noise = tr.noise.standard_normal(len(t)) * np.exp(-t / 0.004)
    return body + slap * _filter(
        noise, sample_rate=tr.sample_rate, kind="bandpass", hz=(1500, 6000)
    )


def _hand_drums(tr: _Track) -> dict[str, np.ndarray]:
    """A pair of hand drums, one sound per stroke: ringing, damped, bass, slapped, plain."""
    r = tr.rng
    treble = r.uniform(260, 420)
    bass = r.uniform(75, 110)
    plain = r.uniform(150, 260)
    return {
        "na": _membrane(tr, hz=treble, decay_s=r.uniform(0.25, 0.4), modes=_HARMONIC_HEAD),
        "tin": _membrane(tr, hz=treble, decay_s=0.06, modes=_HARMONIC_HEAD, slap=0.6),
        "ge": _membrane(
            tr,
            hz=bass,
            decay_s=r.uniform(0.3, 0.5),
            modes=_HARMONIC_HEAD[:3],
            glide=r.uniform(0.2, 0.6),
            slap=0.1,
        ),
        "ke": _membrane(tr, hz=bass * 1.5, decay_s=0.025, modes=_PLAIN_HEAD, slap=1.0),
        "tum": _membrane(tr, hz=plain, decay_s=r.uniform(0.15, 0.25), modes=_PLAIN_HEAD),
    }


def _cycle(r: np.random.Generator, steps: int, strokes: list[str]) -> list[str | None]:
    """A rhythm cycle of ``steps`` sixteenths: bass strokes open its groups of 2 to 4."""
    cycle: list[str | None] = []
    while len(cycle) < steps:
        group = min(int(r.integers(2, 5)), steps - len(cycle))
        cycle.append("ge" if r.random() < 0.7 else "tum")
        cycle += [
            strokes[r.integers(len(strokes))] if r.random() < 0.65 else None
            for _ in range(group - 1)
        ]
    return cycle


def _percussion(tr: _Track) -> np.ndarray:
    """Tuned hand drums in an irregular cycle, varied as it repeats, with rolls; no pitches."""
    r = tr.rng
    tr.bpm, tr.humanize_s = r.uniform(70, 125), 0.006
    kit = _hand_drums(tr)
    steps = int(r.choice([7, 10, 11, 12, 14, 16]))
    theme = _cycle(r, steps, ["na", "tin", "na", "ke", "tum"])
    hits: dict[str, list[tuple[float, float]]] = {stroke: [] for stroke in kit}
    beat = 0.0
    while beat < tr.beats:
        variation = _cycle(r, steps, ["na", "tin", "ke", "tum"])
        for step, stroke in enumerate(theme):
            if r.random() < 0.35:  # improvise on the theme
                stroke = variation[step]
            if stroke is None:
                continue
            accent = 1.2 if step == 0 else r.uniform(0.6, 1.0)
            strokes = 4 if r.random() < 0.08 else 1  # a roll: four strokes in one step
            for k in range(strokes):
                hits[stroke if k == 0 else "tin"].append((beat + step / 4 + k / 16, accent))
        beat += steps / 4
    mix = _Mix(tr)
    bus = np.zeros(tr.samples)
    for stroke, placed in hits.items():
        if placed:
            beats, velocities = np.array(placed).T
            bus += _hits(tr, kit[stroke], beats, velocities)
    mix.add(bus, db=(0, 3), reverb=0.25)
    if r.random() < 0.4:  # ankle bells or a shaker, on its own irregular pattern
        bells = "".join("x" if r.random() < 0.5 else "." for _ in range(steps))
        mix.add(_drums(tr, [_Part(_shaker(tr), (bells,))], fill_every=0), db=(-12, -6))
    return mix.master(
        rt60_s=r.uniform(0.6, 1.4),
        wet=r.uniform(0.1, 0.3),
        ratio=r.uniform(1, 2),
        noise_db=r.uniform(-65, -45),
        swell_db=r.uniform(0, 4),
        peak=(0.5, 0.95),
    )


def _syllables(tr: _Track, *, rate_hz: float) -> list[tuple[float, float, int, float]]:
    """Syllables ``(start s, length s, vowel, level)`` in phrases of 1-3.5 s with pauses."""
    r, total = tr.rng, tr.samples / tr.sample_rate
    syllables, t = [], r.uniform(0.0, min(0.3, total / 2))  # at least one syllable
    while t < total:
        phrase_end = t + r.uniform(1.0, 3.5)
        while t < min(phrase_end, total):
            length = r.uniform(0.7, 1.3) / rate_hz
            syllables.append((t, length, int(r.integers(len(_VOWELS))), r.uniform(0.5, 1.0)))
            t += length
        t += r.uniform(0.25, 0.8)  # a breath
    return syllables


def _formants(
    tr: _Track,
    source: np.ndarray,
    syllables: list[tuple[float, float, int, float]],
    *,
    scale: float,
) -> np.ndarray:
    """``source`` (noise: whispered; a glottal buzz: voiced) through three formants gliding
    from each syllable's vowel to the next."""
    sr = tr.sample_rate
    nperseg = 2 ** round(math.log2(0.032 * sr))  # ~32 ms frames at any rate
    hop = nperseg // 4
    freqs, times, spec = signal.stft(source, fs=sr, nperseg=nperseg, noverlap=nperseg - hop)
    centers = np.array([start + length / 2 for start, length, _, _ in syllables])
    envelope = np.full((len(freqs), len(times)), 0.02)
    for k in range(3):  # F1, F2, F3
        hz = np.array([_VOWELS[v][k][0] for _, _, v, _ in syllables]) * scale
        bw = np.array([_VOWELS[v][k][1] for _, _, v, _ in syllables]) * scale * 1.5
        gain = np.array([_VOWELS[v][k][2] for _, _, v, _ in syllables])
        at = [np.interp(times, centers, x) for x in (hz, bw, gain)]
        envelope += at[2] * np.exp(-0.5 * ((freqs[:, None] - at[0]) / at[1]) ** 2)
    _, y = signal.istft(spec * envelope, fs=sr, nperseg=nperseg, noverlap=nperseg - hop)
    return np.pad(y, (0, max(0, tr.samples - len(y))))[: tr.samples]


def _speech(tr: _Track) -> np.ndarray:
    """Whispered talk: formant-shaped noise opened at 4-6 syllables a second, fricatives."""
    r = tr.rng
    tr.bpm, tr.humanize_s = 60.0, 0.0  # one beat per second: hits are placed in seconds
    scale = r.uniform(0.85, 1.2)  # a shorter vocal tract raises every formant
    syllables = _syllables(tr, rate_hz=r.uniform(4.0, 6.0))
    voice = _formants(tr, tr.noise.standard_normal(tr.samples), syllables, scale=scale)
    voice *= _opening(tr, syllables)
    fricatives = _fricatives(tr, syllables, share=0.5)
    mix = _Mix(tr)
    mix.add(voice, db=(0, 2), reverb=0.15)
    mix.add(fricatives, db=(-10, -5), reverb=0.15)
    return mix.master(
        rt60_s=r.uniform(0.3, 0.8),
        wet=r.uniform(0.05, 0.2),
        ratio=r.uniform(1.5, 3),
        lowpass_hz=r.uniform(3400, 7000) if r.random() < 0.4 else None,
        noise_db=r.uniform(-60, -40),
        peak=(0.4, 0.9),
    )


def _opening(tr: _Track, syllables: list[tuple[float, float, int, float]]) -> np.ndarray:
    """The mouth opening over the track: a raised-cosine bump per syllable."""
    t = np.arange(tr.samples) / tr.sample_rate
    opening = np.zeros(tr.samples)
    for start, length, _, level in syllables:
        inside = (t >= start) & (t < start + length)
        opening[inside] += level * np.sin(np.pi * (t[inside] - start) / length) ** 2
    return opening


def _fricatives(
    tr: _Track, syllables: list[tuple[float, float, int, float]], *, share: float
) -> np.ndarray:
    """Short high noise bursts (s, f, t) at the start of ``share`` of the syllables."""
    r = tr.rng
    t_burst, env = _decay(tr, 0.05, 0.012)
    burst = (
        _filter(
            tr.noise.standard_normal(len(t_burst)),
            sample_rate=tr.sample_rate,
            kind="bandpass",
            hz=(3000, 8000),
        )
        * env
    )
    onsets = np.array([start for start, _, _, _ in syllables if r.random() < share])
    return _hits(tr, burst, onsets, r.uniform(0.2, 0.6, len(onsets)))


def _talk(tr: _Track) -> np.ndarray:
    """A voiced speaker: a glottal buzz whose pitch glides and falls over each phrase,
    through moving formants, with fricatives and breaths between phrases."""
    r = tr.rng
    tr.bpm, tr.humanize_s = 60.0, 0.0  # one beat per second: hits are placed in seconds
    scale = r.uniform(0.85, 1.2)
    base_hz = r.uniform(95, 210)  # a speaking voice, low or high
    syllables = _syllables(tr, rate_hz=r.uniform(3.5, 5.5))
    sr = tr.sample_rate
    t = np.arange(tr.samples) / sr
    # Declination: the pitch falls by 15-30 % over each phrase of 1.5-3 s, then resets; on top
    # of it a quick wander of a few semitones (intonation), never held on one note.
    phrase_s = r.uniform(1.5, 3.0)
    fall = 1.0 - r.uniform(0.15, 0.3) * ((t / phrase_s) % 1.0)
    f0 = base_hz * fall * 2 ** ((_wander(tr, period_s=(0.15, 0.4)) - 0.5) * r.uniform(0.3, 0.6))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    buzz = signal.sawtooth(phase) + 0.15 * tr.noise.standard_normal(tr.samples)  # + breath
    voice = _formants(tr, buzz, syllables, scale=scale) * _opening(tr, syllables)
    mix = _Mix(tr)
    mix.add(voice, db=(0, 2), reverb=r.uniform(0.05, 0.3))
    mix.add(_fricatives(tr, syllables, share=0.35), db=(-14, -8), reverb=0.1)
    return mix.master(
        rt60_s=r.uniform(0.2, 0.7),
        wet=r.uniform(0.03, 0.2),
        ratio=r.uniform(1.5, 4),
        lowpass_hz=r.uniform(3400, 8000) if r.random() < 0.5 else None,  # phone, radio
        noise_db=r.uniform(-65, -40),
        peak=(0.4, 0.95),
    )


def _chirps(tr: _Track) -> np.ndarray:
    """Birds: bursts of a few short downward or upward whistles at 2-7 kHz."""
    r, sr = tr.rng, tr.sample_rate
    out = np.zeros(tr.samples)
    total = tr.samples / sr
    for _ in range(int(r.integers(3, 12) * total / 10)):
        start = r.uniform(0, total)
        hz, sweep = r.uniform(2000, min(7000, 0.45 * sr)), r.uniform(-0.5, 0.5)
        for k in range(int(r.integers(2, 7))):
            length = r.uniform(0.03, 0.12)
            t = np.arange(int(length * sr)) / sr
            f = hz * (1 + sweep * t / length)
            whistle = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.sin(np.pi * t / length) ** 2
            at = int((start + k * r.uniform(0.08, 0.2)) * sr)
            end = min(tr.samples, at + len(whistle))
            if at < end:
                out[at:end] += whistle[: end - at]
    return out


def _field(tr: _Track) -> np.ndarray:
    """A field recording: a rumble that comes and goes, crackle, birds, a passing car."""
    r, sr = tr.rng, tr.sample_rate
    tr.bpm, tr.humanize_s = 60.0, 0.0
    mix = _Mix(tr)
    brown = np.cumsum(tr.noise.standard_normal(tr.samples))
    brown = _filter(brown - brown.mean(), sample_rate=sr, kind="highpass", hz=20)
    rumble = _filter(brown, sample_rate=sr, kind="lowpass", hz=r.uniform(200, 800))
    mix.add(rumble * (0.3 + 0.7 * _wander(tr, period_s=(2.0, 6.0))), db=(-2, 2), reverb=0.0)
    if r.random() < 0.6:  # rain, or steps on gravel: sparse, bright clicks
        drops = (tr.noise.random(tr.samples) < r.uniform(50, 400) / sr) * tr.noise.random(
            tr.samples
        )
        crackle = _filter(drops, sample_rate=sr, kind="highpass", hz=r.uniform(1500, 4000))
        mix.add(crackle, db=(-12, -4), reverb=0.2)
    if r.random() < 0.7:
        mix.add(_chirps(tr), db=(-14, -6), reverb=0.5)
    if r.random() < 0.5:  # a car passing: band noise that swells and fades over seconds
        t = np.arange(tr.samples) / sr
        at, width = r.uniform(0, t[-1] + 1e-9), r.uniform(1.0, 3.0)
        swell = np.exp(-0.5 * ((t - at) / width) ** 2)
        car = _filter(
            tr.noise.standard_normal(tr.samples), sample_rate=sr, kind="bandpass", hz=(80, 1500)
        )
        mix.add(car * swell, db=(-6, 0), reverb=0.1)
    return mix.master(
        rt60_s=r.uniform(0.1, 0.5),
        wet=r.uniform(0.0, 0.1),
        noise_db=r.uniform(-50, -30),  # a cheap recorder's hiss
        peak=(0.2, 0.8),
    )


_STYLES: dict[str, Callable[[_Track], np.ndarray]] = {
    "drone": _drone,
    "techno": _techno,
    "percussion": _percussion,
    "speech": _speech,
    "talk": _talk,
    "field": _field,
}
