"""Pretrained features in the pipeline: segments → musicnn patches → embedding columns.

The pretrained extractors (:mod:`genre.pretrained`) take 3 s of 16 kHz audio; the
pipeline decodes once, at the feature config's rate (22 050 Hz). :func:`patches` turns
those same segments into musicnn's input (soxr to 16 kHz, then its log-mel: cheap numpy,
done in the CPU tasks that decode), and an :class:`Embedder`, held by a Ray Data actor
that loads it once, maps patches to the three columns of each extractor::

    musicnn_msd       (segments, 200)   the penultimate layer: the embedding
    musicnn_msd_pool  (segments, 1506)  753 mid-level features, max then mean over time
    musicnn_msd_tags  (segments, 50)    tag probabilities, vocabulary TAGS["musicnn_msd"]
    vgg_msd           (segments, 256)   the VGG's last pool, max then mean over time
    vgg_msd_pool      (segments, 1280)  its five pools, max then mean over time and mel
    vgg_msd_tags      (segments, 50)    tag probabilities, vocabulary TAGS["vgg_msd"]

All four models (``musicnn_msd``, ``musicnn_mtt``, ``vgg_msd``, ``vgg_mtt``) read the
same patches, so asking for several costs one front end. On a GPU the front end runs
inside the compiled step instead (``Embedder(..., waveform_samples=n)``,
:mod:`genre.frontend`): the decode tasks hand on :func:`waveforms` (16 kHz audio) and the
host computes no log-mel at all.
The feature config names the extractors (its musicnn columns) and the weights (the
wheel's sha256): extract writes it into the shards, tune into the model card, and
label reads it from there and computes the same columns itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from genre.backend import gpu_count
from genre.config import FeatureConfig
from genre.errors import ConfigMismatchError, ParameterError
from genre.musicnn_spec import N_MELS, PATCH_FRAMES, SAMPLE_RATE, WHEEL_SHA256
from genre.pretrained import TAGS, MusicnnExtractor, log_mel, weights_folder

__all__ = [
    "CPU_PATCHES",
    "GPU_PATCHES",
    "SOURCE",
    "patch_shape",
    "waveform_samples",
    "waveforms",
    "patches",
    "Embedder",
    "describe",
    "check_extractors",
]

#: Patches per compiled musicnn call: on a CPU 16 and 32 perform alike; a GPU wants more
#: (the timbral block's intermediate is ~15 MB a patch: 256 would take ~4 GB of a CPU's RAM).
CPU_PATCHES, GPU_PATCHES = 32, 256
#: Where the extractors come from, as the model card and the README say it.
SOURCE = "musicnn 0.1.0 (PyPI wheel; Pons & Serra, ISMIR 2019 LBD; ISC licence)"


def patch_shape() -> tuple[int, int]:
    """``(frames, mel bands)`` of one musicnn patch: ``(187, 96)``."""

    return (PATCH_FRAMES, N_MELS)


def waveform_samples(cfg: FeatureConfig) -> int:
    """Samples of one segment at 16 kHz: what :func:`waveforms` gives per segment of ``cfg``."""
    return int(round(cfg.segment_seconds * SAMPLE_RATE))


def waveforms(segments: np.ndarray, *, sample_rate: int, samples: int) -> np.ndarray:
    """Segments at 16 kHz, musicnn's rate: soxr (HQ) when ``sample_rate`` is another.

    Parameters
    ----------
    segments : np.ndarray [shape=(segments, n)]
        Mono audio at ``sample_rate``.
    sample_rate : int > 0
    samples : int > 0
        Samples a segment out (trimmed or zero-padded by the sample a resampler may add
        or drop), :func:`waveform_samples`.

    Returns
    -------
    np.ndarray [shape=(segments, samples), dtype=float32]
    """
    import soxr

    x = np.asarray(segments, dtype=np.float32)
    if x.ndim != 2:
        raise ParameterError(f"segments of shape {x.shape} must be (segments, samples)")
    if len(x) and sample_rate != SAMPLE_RATE:
        # Segments as channels: one soxr call resamples the whole batch, each independently.
        x = soxr.resample(x.T, sample_rate, SAMPLE_RATE, quality="HQ").T
    if x.shape[1] < samples:
        x = np.pad(x, ((0, 0), (0, samples - x.shape[1])))
    return np.ascontiguousarray(x[:, :samples], dtype=np.float32)


def patches(segments: np.ndarray, *, sample_rate: int) -> np.ndarray:
    """musicnn's input for each segment: resampled to 16 kHz, then its log-mel.

    Parameters
    ----------
    segments : np.ndarray [shape=(segments, samples)]
        Mono audio at ``sample_rate``, at least 2.976 s a segment.
    sample_rate : int > 0

    Returns
    -------
    patches : np.ndarray [shape=(segments, 187, 96), dtype=float32]
        One patch from the start of each segment (:func:`genre.pretrained.log_mel`).

    Raises
    ------
    ParameterError
        Segments that are not a finite 2-D float array, or too short for one patch.
    """
    x = np.asarray(segments, dtype=np.float32)
    if x.ndim != 2:
        raise ParameterError(f"segments of shape {x.shape} must be (segments, samples)")
    if len(x) == 0:
        return np.zeros((0, *patch_shape()), np.float32)
    n = int(round(x.shape[1] * SAMPLE_RATE / sample_rate))
    return log_mel(waveforms(x, sample_rate=sample_rate, samples=n))


class Embedder:
    """The pretrained extractors of a feature config, loaded once: patches → columns.

    Parameters
    ----------
    extractors : tuple of str
        Names of :data:`genre.config.PRETRAINED` (a config's ``extractors``).
    batch_size : int > 0 or None
        Patches per compiled call; ``None``: :data:`GPU_PATCHES` when the backend sees a
        GPU, else :data:`CPU_PATCHES` (an actor given a GPU share decides by what it sees).
    waveform_samples : int or None
        ``None``: calls take log-mel patches (:func:`patches`). An int: they take 16 kHz
        :func:`waveforms` of that many samples, and musicnn's log-mel is computed inside
        each model's compiled step (:func:`genre.frontend.device_frontend`).

    Raises
    ------
    ParameterError
        An unknown extractor, or weights that are not installed.
    """

    def __init__(
        self,
        extractors: tuple[str, ...],
        *,
        batch_size: int | None = None,
        waveform_samples: int | None = None,
    ):
        if not extractors:
            raise ParameterError("an Embedder needs at least one pretrained extractor")
        if batch_size is None:
            batch_size = GPU_PATCHES if gpu_count() > 0 else CPU_PATCHES
        self.models = {
            name: MusicnnExtractor(name, batch_size=batch_size, waveform_samples=waveform_samples)
            for name in extractors
        }

    def __call__(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        """Every column of every extractor for a batch of patches (or waveforms).

        Parameters
        ----------
        patches : np.ndarray [shape=(segments, 187, 96) or (segments, waveform_samples)]
            As :func:`patches` returns them, or :func:`waveforms` for an Embedder on
            waveforms.

        Returns
        -------
        dict[str, np.ndarray]
            ``<name>``, ``<name>_pool`` and ``<name>_tags`` for each extractor, float32,
            ``(segments, dims)`` with the dims of :data:`genre.musicnn_spec.COLUMN_DIMS`
            (musicnn 200, 1 506, 50; VGG 256, 1 280, 50).
        """
        out: dict[str, np.ndarray] = {}
        for name, model in self.models.items():
            values = model.predict(patches)
            out[name] = values["embedding"].astype(np.float32, copy=False)
            out[f"{name}_pool"] = values["pool"].astype(np.float32, copy=False)
            out[f"{name}_tags"] = values["tags"].astype(np.float32, copy=False)
        return out


def describe(cfg: FeatureConfig) -> dict[str, Any] | None:
    """The model card's ``extractor`` entry for features of ``cfg`` (``None`` without any).

    It names the extractor, its models, the weights' sha256, the input it takes and the
    tag vocabularies; label recomputes the columns from ``cfg`` itself.
    """
    if not cfg.extractors:
        return None

    return {
        "name": "musicnn",
        "models": list(cfg.extractors),
        "weights_sha256": cfg.musicnn_weights,
        "source": SOURCE,
        "input": "segment resampled to 16 kHz (soxr HQ); log10(10000 mel + 1), 96 bands, "
        "187 frames of 256 samples, float32",
        "columns": [c for c in cfg.features if c.startswith(cfg.extractors)],
        "tags": {name: list(TAGS[name]) for name in cfg.extractors},
    }


def check_extractors(cfg: FeatureConfig) -> None:
    """Refuse, before any work starts, features this installation cannot compute.

    Raises
    ------
    ConfigMismatchError
        ``cfg`` was made with other musicnn weights than the ones genre installs.
    ParameterError
        The weights are not installed (the message names the install command).
    """
    if not cfg.extractors:
        return

    if cfg.musicnn_weights != WHEEL_SHA256:
        raise ConfigMismatchError(
            f"the features {','.join(cfg.extractors)} were computed with the musicnn wheel "
            f"sha256 {cfg.musicnn_weights[:12]}…, this genre uses {WHEEL_SHA256[:12]}…: "
            "the same weights are needed to compute the same features"
        )
    for name in cfg.extractors:
        weights_folder(name)
