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

The package follows those stages, one module each:

- :mod:`~genre.synth.render`: the track being rendered, notes, filters, effects, the mix bus;
- :mod:`~genre.synth.instruments`: wavetable instruments and formant voices;
- :mod:`~genre.synth.drums`: drum sounds and patterns;
- :mod:`~genre.synth.harmony`: the score (chords, rhythms, bass lines, melodies, singing);
- :mod:`~genre.synth.arrangements`: :func:`render_track`, over the ten arrangers of
  :mod:`~genre.synth.arrange_acoustic` and :mod:`~genre.synth.arrange_electric`;
- :mod:`~genre.synth.writing`: :func:`write_audio` and :func:`write_corpus`;
- :mod:`~genre.synth.other`: styles that are none of the ten genres (drone, techno,
  solo percussion, whispered and voiced speech, a field recording), written to
  ``<root>/_other/`` by :func:`write_other`: outlier exposure for a search, and a probe
  of what label flags.
"""

from genre.synth.arrangements import render_track
from genre.synth.other import OTHER_STYLES, render_other, write_other
from genre.synth.writing import (
    CORPUS_EXTENSIONS,
    CORPUS_SAMPLE_RATES,
    WRITE_FORMATS,
    write_audio,
    write_corpus,
)

__all__ = [
    "CORPUS_EXTENSIONS",
    "CORPUS_SAMPLE_RATES",
    "OTHER_STYLES",
    "WRITE_FORMATS",
    "render_other",
    "render_track",
    "write_audio",
    "write_corpus",
    "write_other",
]
