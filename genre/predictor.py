"""The predictor: a Ray Data actor that loads a model once and turns segments into track rows.

:class:`Predictor` is built from a :class:`genre.card.LabelPlan` and holds the Keras model
(or nothing, for a zero-shot mapping) and the musicnn extractors the plan names; per
batch of decoded files it predicts segments with the compiled step of
:func:`compiled_predict` and hands them to :func:`score_tracks` (aggregation, blend,
calibration, review), then returns the result columns (:func:`result_columns`). It keeps
no state between batches, and everything here runs without Ray: the label job's
single-file path calls the same two functions, :func:`genre.featurize.featurize` and a
:class:`Predictor`.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from genre import backend
from genre.calibration import DEFAULT_MAX_SET, Calibration, apply, output_ood_score
from genre.card import LabelPlan
from genre.embeddings import Embedder, waveform_samples
from genre.frontend import FrontendSpec, with_frontend
from genre.posthoc import embedding, track_distances
from genre.pretrained import TAGS
from genre.report import segment_to_track
from genre.runtime import node_id
from genre.training import stack_features
from genre.zeroshot import genre_scores

__all__ = [
    "Predictor",
    "load_keras",
    "compiled_predict",
    "score_tracks",
    "review",
    "empty_review",
    "top_tags",
    "result_columns",
]


def load_keras(model_bytes: bytes):
    """A ``.keras`` file's model, loaded without its optimizer (labelling trains nothing)."""
    import warnings

    import keras

    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        # compile=False: no optimizer to restore, and Keras says so at length.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        path = Path(d) / "model.keras"
        path.write_bytes(model_bytes)
        return keras.saving.load_model(str(path), compile=False)


def compiled_predict(model, x: np.ndarray, *, batch_size: int, n_out: int) -> np.ndarray:
    """``model``'s compiled predict step over ``x`` in fixed-shape batches.

    The whole batches go through Keras' own ``predict`` loop (which overlaps the
    transfer of the next batch with the current one on a GPU); the rest goes through
    ``predict_on_batch``, zero-padded to ``batch_size`` after whole batches, or, when it
    is all there is, to a multiple of ``batch_size / 8`` (few shapes are ever traced,
    and little padding is wasted on a CPU). Only that tail is copied.

    Returns
    -------
    np.ndarray [shape=(len(x), n_out), dtype=float32]
    """
    import keras

    n = len(x)
    whole = n // batch_size * batch_size if n > batch_size else 0
    parts = []
    if whole:  # a view: no copy of the collection's features
        parts.append(
            keras.ops.convert_to_numpy(model.predict(x[:whole], batch_size=batch_size, verbose=0))
        )
    tail = np.asarray(x[whole:], dtype=np.float32)
    if len(tail):
        quantum = max(1, batch_size // 8)
        size = batch_size if whole else -(-len(tail) // quantum) * quantum
        if size > len(tail):
            tail = np.concatenate([tail, np.zeros((size - len(tail), *tail.shape[1:]), np.float32)])
        parts.append(keras.ops.convert_to_numpy(model.predict_on_batch(tail))[: n - whole])
    if not parts:
        return np.zeros((0, n_out), np.float32)
    return np.asarray(np.concatenate(parts), dtype=np.float32)


def top_tags(columns: dict[str, np.ndarray], bounds: np.ndarray, *, n: int) -> list[list[dict]]:
    """Each track's ``n`` most likely musicnn tags, both vocabularies together.

    A track's tag probability is the mean over its segments; a tag both vocabularies
    know (``rock``) counts once, with the larger probability.
    """
    vocab = [
        (name.removesuffix("_tags"), values)
        for name, values in columns.items()
        if name.endswith("_tags")
    ]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        best: dict[str, float] = {}
        for extractor, values in vocab:
            for tag, p in zip(
                TAGS[extractor], values[a:b].mean(axis=0) if b > a else [], strict=False
            ):
                best[tag.lower()] = max(best.get(tag.lower(), 0.0), float(p))
        ranked = sorted(best.items(), key=lambda kv: -kv[1])[:n]
        out.append([{"tag": t, "probability": p} for t, p in ranked])
    return out


class Predictor:
    """Ray Data actor: loads the model once, then maps a batch of decoded files to result columns.

    ``__init__`` loads what the plan needs (the Keras model unless it is zero-shot, the
    musicnn extractors of ``plan.extractors``); ``__call__`` keeps nothing between
    batches. A batch is what :func:`genre.featurize.featurize` returns: ``x`` holds each
    file's model input, or its musicnn patches when the model reads musicnn columns
    (``plan.reads_columns``); ``patches`` holds the patches beside hand-crafted features
    when the plan needs musicnn columns too (``plan.patches_too``). With
    ``plan.frontend == "device"`` those patches are 16 kHz waveforms and a log-mel model's
    ``x`` its segments' waveforms: the log-mel is computed inside the compiled step
    (:func:`genre.frontend.with_frontend`).

    Parameters
    ----------
    plan : LabelPlan
    model_bytes : bytes or (ObjectRef,)
        The ``.keras`` file (empty for a zero-shot model), or a one-tuple holding the
        object-store reference the driver put it under.
    batch_size : int
        Segments per compiled predict step.
    """

    def __init__(self, plan: LabelPlan, *, model_bytes: bytes | tuple = b"", batch_size: int = 256):
        if isinstance(model_bytes, tuple):  # (ObjectRef,): the driver put the bytes once
            import ray

            model_bytes = ray.get(model_bytes[0])
        backend.configure()
        self.plan, self.batch_size = plan, batch_size
        self.model = None if plan.card.zero_shot else load_keras(model_bytes)
        if plan.model_on_device:
            cfg = plan.feature_config.with_features(plan.features)
            self.model = with_frontend(self.model, FrontendSpec.log_mel(cfg))
        self.embedder = None
        if plan.extractors:
            samples = waveform_samples(plan.feature_config) if plan.musicnn_on_device else None
            self.embedder = Embedder(plan.extractors, waveform_samples=samples)
        self.node_id = node_id()

    def predict(self, x: np.ndarray, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """Segment probabilities: the model's compiled predict step over ``x``, or a
        zero-shot mapping over the segments' tag ``columns``.

        Calling a Keras model eagerly per batch (``model(x)``) is 20-200x slower than its
        compiled step on a GPU; see :func:`compiled_predict` for the batching.

        Returns
        -------
        np.ndarray [shape=(segments, labels), dtype=float32]
        """
        mapping = self.plan.card.zero_shot
        if mapping is not None:
            return genre_scores(mapping, {e: columns[f"{e}_tags"] for e in mapping.extractors})
        return compiled_predict(
            self.model, x, batch_size=self.batch_size, n_out=len(self.plan.labels)
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        plan, n = self.plan, len(batch["path"])
        ok = np.array([i for i in range(n) if not batch["reason"][i] and len(batch["x"][i])], int)
        probs = np.full((n, len(plan.labels)), np.nan, np.float32)
        review = empty_review(n)
        tags = np.full(n, None, dtype=object)
        if len(ok):
            xs = [np.asarray(batch["x"][i], np.float32) for i in ok]
            bounds = np.cumsum([0] + [len(x) for x in xs])
            columns = {}
            if self.embedder is not None:
                source = xs if plan.reads_columns else [batch["patches"][i] for i in ok]
                columns = self.embedder(np.concatenate(source).astype(np.float32))
            x = stack_features(columns, plan.features) if plan.reads_columns else None
            seg_probs = self.predict(np.concatenate(xs) if x is None else x, columns)
            owner = np.repeat(np.arange(len(ok)), np.diff(bounds))
            order, reviewed = score_tracks(plan, owner, seg_probs, columns)
            probs[ok[order]] = reviewed.pop("probs")
            for key, values in reviewed.items():
                review[key][ok[order]] = values
            if plan.tags:
                for i, track_tags in zip(ok, top_tags(columns, bounds, n=plan.tags), strict=True):
                    tags[i] = track_tags
        out = result_columns(batch, probs, plan.labels, plan.top_k)
        out.update(review)
        if plan.tags:
            out["tags"] = tags
        out["node_id"] = np.full(n, self.node_id, dtype=object)
        return out


def score_tracks(
    plan: LabelPlan,
    owner: np.ndarray,
    seg_probs: np.ndarray,
    columns: Mapping[str, np.ndarray],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Segments → tracks, as the card says: aggregate, blend with the zero-shot prior,
    calibrate and flag for review.

    Parameters
    ----------
    owner : np.ndarray [shape=(segments,)], the track of each segment
    seg_probs : np.ndarray [shape=(segments, labels)]
    columns : the segments' musicnn columns (name → (segments, dims)), for the prior and
        the out-of-taxonomy embedding

    Returns
    -------
    order : np.ndarray, ``np.unique(owner)``
    reviewed : dict, as :func:`review` returns it, one row per track of ``order``
    """
    card = plan.card
    order, track_probs = segment_to_track(owner, seg_probs, aggregate=plan.aggregate)
    if card.blend is not None:
        prior = card.blend.prior(columns, card.labels)
        _, prior = segment_to_track(owner, prior, aggregate=plan.aggregate)
        track_probs = card.blend.mix(track_probs, prior)
    distances = None
    column = card.calibration.ood_column if card.calibration is not None else None
    if column is not None:
        emb = embedding(columns, column)
        distances = track_distances(card.calibration.mahalanobis, owner, emb)
    reviewed = review(
        card.calibration,
        track_probs,
        labels=card.labels,
        distances=distances,
        min_confidence=plan.min_confidence,
        coverage=plan.coverage,
        max_set=plan.max_set,
        review_domain_shift=plan.review_domain_shift,
    )
    return order, reviewed


def review(
    calibration: Calibration | None,
    track_probs: np.ndarray,
    *,
    labels: Sequence[str],
    distances: np.ndarray | None = None,
    min_confidence: float | None = None,
    coverage: float | None = None,
    max_set: int = DEFAULT_MAX_SET,
    review_domain_shift: bool = False,
) -> dict[str, np.ndarray]:
    """Calibrated probabilities, confidence, genre sets, out-of-taxonomy and domain-shift
    scores, and review flags.

    With a calibration: :func:`genre.calibration.apply` (``distances``: the tracks'
    Mahalanobis distances, when its scores use them; the other keywords are the label
    run's flags). Without one (raw models, zero-shot): the raw probabilities, the normalised
    entropy as ``ood_score``, no sets, and a review flag only when ``min_confidence`` is
    given.

    Returns
    -------
    dict
        ``probs`` (tracks, labels); ``confidence``, ``ood_score``, ``domain_shift``,
        ``genres`` (each a list of ``labels``, best first, or None without sets),
        ``needs_review``, ``review_reason`` (tracks,).
    """
    if calibration is not None:
        out = apply(
            calibration,
            track_probs,
            distances=distances,
            min_confidence=min_confidence,
            coverage=coverage,
            max_set=max_set,
            review_domain_shift=review_domain_shift,
        )
        out.pop("prediction")
        out["genres"] = _set_lists(out.pop("in_set"), out["probs"], labels)
        return out
    n = len(track_probs)
    confidence = track_probs.max(axis=1)
    flagged = confidence < (min_confidence if min_confidence is not None else 0.0)
    return {
        "probs": track_probs,
        "confidence": confidence,
        "ood_score": output_ood_score(track_probs, method="entropy"),
        "domain_shift": np.full(n, np.nan),
        "genres": np.full(n, None, dtype=object),
        "needs_review": flagged,
        "review_reason": np.where(flagged, "low-confidence", None).astype(object),
    }


def _set_lists(in_set: np.ndarray | None, probs: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Each track's genre set as a list of labels, most probable first (None without sets)."""
    out = np.full(len(probs), None, dtype=object)
    if in_set is None:
        return out
    order = np.argsort(-probs, axis=1, kind="stable")
    for i, row in enumerate(order):
        out[i] = [labels[j] for j in row if in_set[i, j]]
    return out


def empty_review(n: int) -> dict[str, np.ndarray]:
    """The review columns of ``n`` tracks not (yet) scored."""
    return {
        "confidence": np.full(n, np.nan, np.float32),
        "ood_score": np.full(n, np.nan, np.float32),
        "domain_shift": np.full(n, np.nan, np.float32),
        "genres": np.full(n, None, dtype=object),
        "needs_review": np.zeros(n, bool),
        "review_reason": np.full(n, None, dtype=object),
    }


def result_columns(
    batch: dict[str, np.ndarray], probs: np.ndarray, labels: Sequence[str], top_k: int
) -> dict[str, np.ndarray]:
    """The predictor's columns of a batch: the file's own (path, track id, segments,
    error, warning), the top genre and the ``top_k`` best with their probabilities, and
    ``p_<label>`` (NaN rows: files that failed)."""
    n = len(probs)
    failed = np.isnan(probs).any(axis=1)
    top = np.argsort(-np.nan_to_num(probs, nan=-1.0), axis=1)[:, :top_k]
    genre = np.array([None if failed[i] else labels[top[i, 0]] for i in range(n)], dtype=object)
    top_genres = np.empty(n, dtype=object)
    top_probs = np.empty(n, dtype=object)
    for i in range(n):
        top_genres[i] = [] if failed[i] else [labels[j] for j in top[i]]
        top_probs[i] = (
            np.array([], np.float32) if failed[i] else probs[i, top[i]].astype(np.float32)
        )
    out = {
        "path": np.asarray(batch["path"], dtype=object),
        "track_id": np.asarray(batch["track_id"], dtype=object),
        "genre": genre,
        "confidence": np.where(
            failed, np.nan, np.nanmax(np.nan_to_num(probs, nan=-1.0), axis=1)
        ).astype(np.float32),
        "top_genres": top_genres,
        "top_probs": top_probs,
        "n_segments": np.asarray(batch["n_segments"], dtype=np.int32),
        "duration_s": np.asarray(batch["duration_s"], dtype=np.float32),
        "reason": np.asarray(batch["reason"], dtype=object),
        "error": np.asarray(batch["error"], dtype=object),
        "warning_kind": np.asarray(batch["warning_kind"], dtype=object),
        "warning": np.asarray(batch["warning"], dtype=object),
    }
    for j, label in enumerate(labels):
        out[f"p_{label}"] = probs[:, j]
    return out
