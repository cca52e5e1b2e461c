"""Corpus writing: audio files in every format the pipeline reads, and the demo corpus.

Track ``k`` of a corpus (counting across genres) is written as
``CORPUS_EXTENSIONS[k % 3]`` at ``CORPUS_SAMPLE_RATES[k % 4]`` Hz, in stereo when
``k % 5`` is 1 or 3, so a small corpus already mixes every format, rate and channel
count the extractor has to decode.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from genre.config import GENRES
from genre.errors import ParameterError
from genre.synth.arrangements import render_track
from genre.synth.render import _check_seconds

__all__ = [
    "CORPUS_EXTENSIONS",
    "CORPUS_SAMPLE_RATES",
    "WRITE_FORMATS",
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

# A function that renders one mono track: (name, index=, seed=, seconds=, sample_rate=) → y.
_Render = Callable[..., np.ndarray]


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
            f"y of shape {y.shape} and dtype {y.dtype}: "
            "need float (samples,) or (samples, channels)"
        )
    if not np.all(np.isfinite(y)):
        raise ParameterError("y must be finite")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ParameterError(f"sample_rate={sample_rate!r} must be a positive integer")
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(y, -1.0, 1.0), int(sample_rate), format=fmt[0], subtype=fmt[1])
    return path


def write_corpus(
    output: str | Path,
    *,
    per_genre: int = 10,
    seconds: float = 30.0,
    seed: int = 0,
    workers: int | None = None,
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
    root = _check_corpus_args(output, per_genre=per_genre, seconds=seconds)
    jobs = [
        (render_track, root / genre, genre, i, g * per_genre + i, seed, seconds)
        for g, genre in enumerate(GENRES)
        for i in range(per_genre)
    ]
    return _write_all(jobs, workers=workers)


def _check_corpus_args(output: str | Path, *, seconds: float, **counts: int) -> Path:
    """The guards shared by the corpus writers; ``counts`` are positive integers by name."""
    for name, count in counts.items():
        if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 1:
            raise ParameterError(f"{name}={count!r} must be a positive integer")
    _check_seconds(seconds)
    root = Path(output)
    if root.exists() and not root.is_dir():
        raise ParameterError(f"output={str(root)!r} is a file, not a folder")
    return root


def _write_all(jobs: Sequence[tuple], *, workers: int | None) -> list[Path]:
    """Run :func:`_write_one` over ``jobs``, in order, on up to ``workers`` processes."""
    workers = min(workers if workers is not None else (os.cpu_count() or 1), len(jobs))
    if workers <= 1:
        return [_write_one(*job) for job in jobs]
    # Each track is independent and pure numpy: one process per core (the order of
    # the returned paths and the audio are the same as with one process).
    from concurrent.futures import ProcessPoolExecutor

    chunksize = max(1, len(jobs) // (4 * workers))
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_write_one, *zip(*jobs, strict=True), chunksize=chunksize))


def _write_one(
    render: _Render, folder: Path, name: str, i: int, k: int, seed: int, seconds: float
) -> Path:
    """Render track ``i`` of ``name`` and write it as ``folder/<name>.<i:05d><ext>``.

    ``k`` is the track's running number in the corpus: it picks the format, the
    rate and whether the file is stereo.
    """
    ext = CORPUS_EXTENSIONS[k % len(CORPUS_EXTENSIONS)]
    rate = CORPUS_SAMPLE_RATES[k % len(CORPUS_SAMPLE_RATES)]
    y = render(name, index=i, seed=seed, seconds=seconds, sample_rate=rate)
    if k % 5 in _STEREO_SLOTS:
        y = _stereo(y, sample_rate=rate, k=k)
    return write_audio(folder / f"{name}.{i:05d}{ext}", y, sample_rate=rate)


def _stereo(y: np.ndarray, *, sample_rate: int, k: int) -> np.ndarray:
    """Two slightly different channels: a small pan and a sub-millisecond delay."""
    pan = 0.08 + 0.04 * (k % 3)
    delay = int(round(sample_rate * (0.0002 + 0.0001 * (k % 4))))
    right = np.concatenate([np.zeros(delay, np.float32), y[: len(y) - delay]])
    return np.stack([(1 + pan) * y, (1 - pan) * right], axis=1) / (1 + pan)
