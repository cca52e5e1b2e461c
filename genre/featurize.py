"""Label-side decoding: files → the model's input per track (Ray Data CPU tasks).

:func:`featurize_batch` decodes up to ``max_segments`` spread segments per file inside the
output folder's crash journal and turns them into what the predictors take: the model's
hand-crafted features, or musicnn patches for a model on pretrained features (and, for a
card whose blend or out-of-taxonomy score needs musicnn too, patches beside the features).
"""

from __future__ import annotations

import numpy as np

from genre.audio import MAX_DURATION_S, load_segments
from genre.config import FeatureConfig
from genre.embeddings import patch_shape, patches
from genre.errors import AudioFileError
from genre.features import extract
from genre.store import AttemptJournal
from genre.training import stack_features

__all__ = ["featurize_batch"]


def featurize_batch(
    batch: dict[str, np.ndarray],
    *,
    cfg: FeatureConfig,
    features: tuple[str, ...],
    max_segments: int,
    max_duration_s: float = MAX_DURATION_S,
    journal: str | None = None,
    patches_too: bool = False,
) -> dict[str, np.ndarray]:
    """Decode up to ``max_segments`` spread segments per file and compute the model's features.

    With ``journal`` (the output folder) each file is decoded inside its crash journal
    (:class:`genre.store.AttemptJournal`): a file that kills its worker twice becomes a
    ``crashed`` error row and the rest of the batch is labelled.

    Returns one row per file: ``path``, ``track_id``, ``n_segments``, ``duration_s``,
    ``reason``/``error`` (``""`` on success), ``warning_kind``/``warning`` (``""`` unless
    less decoded than the file's header promised, see :class:`genre.audio.DecodeWarning`)
    and ``x``: an object array holding each
    file's ``(n_segments, frames, bins)`` float32 features (empty on failure), or, when
    ``features`` are pretrained columns, its ``(n_segments, 187, 96)`` musicnn patches
    (the predictor computes the columns). With ``patches_too`` (a model on hand-crafted
    features whose card needs musicnn columns too) also ``patches``: each file's musicnn
    patches beside its features.
    """
    attempts = AttemptJournal(journal) if journal else None
    rows: dict[str, list] = {
        k: []
        for k in (
            "path",
            "track_id",
            "n_segments",
            "duration_s",
            "reason",
            "error",
            "warning_kind",
            "warning",
            "x",
        )
    }
    segs, owners = [], []
    for i, (path, track_id) in enumerate(zip(batch["path"], batch["track_id"], strict=True)):
        reason = error = warning_kind = warning = ""
        n, duration = 0, 0.0

        def decode(path=str(path)):
            return load_segments(
                path,
                sample_rate=cfg.sample_rate,
                segment_seconds=cfg.segment_seconds,
                max_segments=max_segments,
                max_duration_s=max_duration_s,
            )

        try:
            s = attempts.decode(str(path), str(path), decode) if attempts else decode()
            segs.append(s.audio)
            owners.append(i)
            n, duration = len(s), s.duration_s
            if s.warning is not None:
                warning_kind, warning = s.warning.kind, s.warning.message
        except AudioFileError as exc:
            reason, error = exc.reason, str(exc)
        except Exception as exc:  # one odd file must not abort the whole collection
            reason, error = "internal", f"{path}: {type(exc).__name__}: {exc}"
        for key, value in zip(
            rows,
            (str(path), str(track_id), n, duration, reason, error, warning_kind, warning, None),
            strict=True,
        ):
            rows[key].append(value)
    out = {k: np.asarray(v, dtype=object) for k, v in rows.items() if k != "x"}
    out["n_segments"] = np.asarray(rows["n_segments"], dtype=np.int32)
    out["duration_s"] = np.asarray(rows["duration_s"], dtype=np.float32)
    audio = np.concatenate(segs) if segs else None
    out["x"] = _per_file(
        audio,
        segs,
        owners,
        len(rows["path"]),
        shape=_segment_input_shape(cfg, features),
        compute=lambda a: _segments_input(a, cfg=cfg, features=features),
    )
    if patches_too:
        out["patches"] = _per_file(
            audio,
            segs,
            owners,
            len(rows["path"]),
            shape=patch_shape(),
            compute=lambda a: patches(a, sample_rate=cfg.sample_rate),
        )
    return out


def _per_file(audio, segs, owners, n: int, *, shape, compute) -> np.ndarray:
    """An object array of ``n`` per-file arrays: ``compute(audio)`` cut at the files'
    segment counts, empty ``(0, *shape)`` for files that failed."""
    values = [np.zeros((0, *shape), np.float32)] * n
    if audio is not None:
        stacked = compute(audio)
        bounds = np.cumsum([0] + [len(s) for s in segs])
        for j, i in enumerate(owners):
            values[i] = stacked[bounds[j] : bounds[j + 1]]
    out = np.empty(n, dtype=object)
    out[:] = values
    return out


def _segment_input_shape(cfg: FeatureConfig, features: tuple[str, ...]) -> tuple[int, ...]:
    """One segment's shape as :func:`featurize_batch` hands it to the predictors:
    ``(frames, bins)`` of the stacked features, or ``(187, 96)`` musicnn patches when
    ``features`` are pretrained columns (the predictor computes those)."""
    if cfg.with_features(features).extractors:
        return patch_shape()
    return (cfg.frames, sum(cfg.bins(f) for f in features))


def _segments_input(audio: np.ndarray, *, cfg: FeatureConfig, features: tuple[str, ...]):
    if cfg.with_features(features).extractors:
        return patches(audio, sample_rate=cfg.sample_rate)
    return stack_features(extract(audio, cfg.with_features(features)), features)
