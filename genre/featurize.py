"""Label-side decoding: files → the model's input per track (Ray Data CPU tasks).

:func:`featurize_batch` decodes up to ``max_segments`` spread segments per file inside the
output folder's crash journal and turns them into what the predictors take: the model's
hand-crafted features, or musicnn patches for a model on pretrained features (and, for a
card whose blend or out-of-taxonomy score needs musicnn too, patches beside the features).

It computes only what the plan reads: a head on musicnn columns runs no STFT of its own
(only musicnn's 16 kHz log-mel); a model on hand-crafted features resamples to 16 kHz only
when its card needs musicnn columns besides (tags, the blend's prior, the out-of-taxonomy
embedding). Segments are decoded at the feature config's rate (22.05 kHz) whatever the
model, and musicnn's 16 kHz audio is resampled from them, exactly as extract made the
columns the model was trained on: a direct 16 kHz decode changes musicnn's top mel bands
enough to move its embedding (``tests/test_featurize.py``). With the device front end
(:attr:`genre.card.LabelPlan.frontend`) the tasks hand on 16 kHz waveforms instead of
log-mel, and the predictor's compiled step computes it.
"""

from __future__ import annotations

import numpy as np

from genre.audio import MAX_DURATION_S, Segments, load_segments
from genre.card import LabelPlan
from genre.config import FEATURES, FeatureConfig
from genre.embeddings import patch_shape, patches, waveform_samples, waveforms
from genre.errors import AudioFileError
from genre.features import extract
from genre.store import AttemptJournal
from genre.training import stack_features

__all__ = ["featurize", "featurize_batch", "decode_file", "segment_features"]


def featurize(
    batch: dict[str, np.ndarray], *, plan: LabelPlan, journal: str | None = None
) -> dict[str, np.ndarray]:
    """Decode and featurize a batch of files as ``plan`` says: what the label pipeline's
    decode tasks and its single-file path both run before the predictor.

    See :func:`featurize_batch` for the columns.
    """
    return featurize_batch(
        batch,
        cfg=plan.feature_config,
        features=plan.features,
        max_segments=plan.max_segments,
        max_duration_s=plan.max_duration_s,
        journal=journal,
        patches_too=plan.patches_too,
        musicnn_waveforms=plan.musicnn_on_device,
        model_waveforms=plan.model_on_device,
    )


def decode_file(
    path: str,
    *,
    cfg: FeatureConfig,
    journal: AttemptJournal | None = None,
    key: str | None = None,
    max_segments: int | None = None,
    max_duration_s: float = MAX_DURATION_S,
) -> tuple[Segments | None, str, str]:
    """One file's segments, decoded inside the crash journal when one is given, or why not.

    The decode step of both pipelines: extract keeps every segment, label up to
    ``max_segments`` spread ones. ``key`` names the file in the journal (default its path).

    Returns
    -------
    segments : Segments or None
    reason, message : str
        ``""`` on success; else an :class:`genre.errors.AudioFileError`'s reason and message,
        or ``internal`` for any other exception (one odd file must not abort a batch).
    """

    def load() -> Segments:
        return load_segments(
            path,
            sample_rate=cfg.sample_rate,
            segment_seconds=cfg.segment_seconds,
            max_segments=max_segments,
            max_duration_s=max_duration_s,
        )

    try:
        return (journal.decode(key or path, path, load) if journal else load()), "", ""
    except AudioFileError as exc:
        return None, exc.reason, str(exc)
    except Exception as exc:  # one odd file must not abort the whole collection
        return None, "internal", f"{path}: {type(exc).__name__}: {exc}"


def segment_features(
    audio: np.ndarray, *, cfg: FeatureConfig, with_patches: bool = False
) -> dict[str, np.ndarray]:
    """The hand-crafted features of ``cfg`` for a batch of segments (one STFT), and
    musicnn's patches when ``with_patches``.

    Parameters
    ----------
    audio : np.ndarray [shape=(segments, samples), dtype=float32]

    Returns
    -------
    dict
        ``name → (segments, frames, bins)`` per hand-crafted feature; ``patches``
        ``(segments, 187, 96)``.
    """
    values = extract(audio, cfg) if any(f in FEATURES for f in cfg.features) else {}
    if with_patches:
        values["patches"] = patches(audio, sample_rate=cfg.sample_rate)
    return values


def featurize_batch(
    batch: dict[str, np.ndarray],
    *,
    cfg: FeatureConfig,
    features: tuple[str, ...],
    max_segments: int,
    max_duration_s: float = MAX_DURATION_S,
    journal: str | None = None,
    patches_too: bool = False,
    musicnn_waveforms: bool = False,
    model_waveforms: bool = False,
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
    patches beside its features. With ``musicnn_waveforms`` each musicnn patch is its
    segment's 16 kHz waveform instead (``(n_segments, samples)``), with ``model_waveforms``
    (a log-mel model) each ``x`` is its segments' waveforms: the predictor's compiled step
    computes the log-mel (:mod:`genre.frontend`).
    """
    cfg = cfg.with_features(features)  # the model's features, nothing else
    attempts = AttemptJournal(journal) if journal else None
    names = ("path", "track_id", "n_segments", "duration_s", "reason", "error")
    rows: dict[str, list] = {k: [] for k in (*names, "warning_kind", "warning")}
    decoded: list[Segments | None] = []
    for path, track_id in zip(batch["path"], batch["track_id"], strict=True):
        segs, reason, error = decode_file(
            str(path),
            cfg=cfg,
            journal=attempts,
            max_segments=max_segments,
            max_duration_s=max_duration_s,
        )
        decoded.append(segs)
        ok = segs is not None
        for key, value in zip(
            rows,
            (
                str(path),
                str(track_id),
                len(segs) if ok else 0,
                segs.duration_s if ok else 0.0,
                reason,
                error,
                segs.warning.kind if ok and segs.warning else "",
                segs.warning.message if ok and segs.warning else "",
            ),
            strict=True,
        ):
            rows[key].append(value)
    out = {k: np.asarray(v, dtype=object) for k, v in rows.items()}
    out["n_segments"] = np.asarray(rows["n_segments"], dtype=np.int32)
    out["duration_s"] = np.asarray(rows["duration_s"], dtype=np.float32)
    out.update(
        _model_inputs(
            decoded,
            cfg=cfg,
            features=features,
            patches_too=patches_too,
            musicnn_waveforms=musicnn_waveforms,
            model_waveforms=model_waveforms,
        )
    )
    return out


def _model_inputs(
    decoded: list[Segments | None],
    *,
    cfg: FeatureConfig,
    features: tuple[str, ...],
    patches_too: bool,
    musicnn_waveforms: bool,
    model_waveforms: bool,
) -> dict[str, np.ndarray]:
    """``x`` (and ``patches``) of :func:`featurize_batch`: one featurize call for the
    batch's segments of the model's ``features`` (stacked in that order; ``cfg`` holds
    them and nothing else), cut per file; empty arrays for files that failed."""
    reads_columns = bool(cfg.extractors)
    musicnn_shape = (waveform_samples(cfg),) if musicnn_waveforms else patch_shape()
    if reads_columns:
        own = musicnn_shape
    elif model_waveforms:
        own = (cfg.segment_samples,)
    else:
        own = (cfg.frames, sum(cfg.bins(f) for f in features))
    shapes = {"x": own, **({"patches": musicnn_shape} if patches_too else {})}

    def musicnn_input(audio: np.ndarray) -> np.ndarray:
        if musicnn_waveforms:
            return waveforms(audio, sample_rate=cfg.sample_rate, samples=musicnn_shape[0])
        return patches(audio, sample_rate=cfg.sample_rate)

    ok = [segs for segs in decoded if segs is not None]
    values: dict[str, np.ndarray] = {}
    if ok:
        audio = np.concatenate([segs.audio for segs in ok])
        if reads_columns:
            values["x"] = musicnn_input(audio)
        elif model_waveforms:
            values["x"] = audio
        else:
            values["x"] = stack_features(segment_features(audio, cfg=cfg), features)
        if patches_too:
            values["patches"] = musicnn_input(audio)
    bounds = np.cumsum([0] + [len(segs) for segs in ok])
    out = {}
    for name, shape in shapes.items():
        column, j = np.empty(len(decoded), dtype=object), 0
        for i, segs in enumerate(decoded):
            if segs is None:
                column[i] = np.zeros((0, *shape), np.float32)
            else:
                column[i], j = values[name][bounds[j] : bounds[j + 1]], j + 1
        out[name] = column
    return out
