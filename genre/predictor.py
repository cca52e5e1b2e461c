"""The predictor: a Ray Data actor that loads a model once and turns segments into track rows.

:class:`Predictor` holds the Keras model (or a zero-shot mapping), the pretrained extractors
its features need, and the card's calibration; per batch of tracks it predicts segments
with the compiled step of :func:`compiled_predict`, aggregates them per track, applies the
calibration and review rules, and returns the result columns the label job writes.
Everything here runs without Ray (the label job's single-file path uses it directly)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from genre.embeddings import Embedder
from genre.report import segment_to_track
from genre.training import stack_features


def _load_keras(model_bytes: bytes):
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
    from genre.pretrained import TAGS

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
    """Ray Data actor: loads the model once, predicts segments, aggregates per track.

    For a model on pretrained features it also loads their extractors once and turns
    the musicnn patches it is given into the card's ``features``. ``extractors`` may name
    more musicnn models than the features read (the card's companions: the blend's prior,
    the out-of-taxonomy embedding, tags asked for): a model on hand-crafted features then
    gets the patches beside its features, in ``batch["patches"]``.
    """

    def __init__(
        self,
        *,
        model_bytes: bytes | tuple,
        labels: tuple[str, ...],
        aggregate: str,
        top_k: int,
        batch_size: int,
        features: tuple[str, ...] = (),
        extractors: tuple[str, ...] = (),
        patch_batch_size: int | None = None,
        calibration: dict | None = None,
        min_confidence: float | None = None,
        zero_shot: dict | None = None,
        blend: dict | None = None,
        tags: int = 0,
    ):
        from genre import backend
        from genre.calibration import Calibration
        from genre.posthoc import Blend
        from genre.zeroshot import TagMapping

        self.calibration = Calibration.from_dict(calibration) if calibration else None
        self.min_confidence = min_confidence
        self.mapping = TagMapping.from_dict(zero_shot) if zero_shot else None
        self.blend = Blend.from_dict(blend) if blend else None
        self.tags = tags
        self._track_tags: list | None = None
        self._columns: dict[str, np.ndarray] = {}

        if isinstance(
            model_bytes, tuple
        ):  # (ObjectRef,): the driver put the bytes in the object store once
            import ray

            model_bytes = ray.get(model_bytes[0])
        backend.configure()
        self.model = None if self.mapping else _load_keras(model_bytes)
        self.features = tuple(features)
        self.reads_columns = any(f.startswith("musicnn_") for f in self.features)
        self.embedder = (
            Embedder(tuple(extractors), batch_size=patch_batch_size) if extractors else None
        )
        self.node_id = _node_id()
        self.labels, self.aggregate, self.top_k, self.batch_size = (
            list(labels),
            aggregate,
            top_k,
            batch_size,
        )

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Segment probabilities through the model's compiled predict step.

        Calling a Keras model eagerly per batch (``model(x)``) is 20-200x slower than its
        compiled step on a GPU. See :func:`compiled_predict` for the batching: fixed
        shapes, so the step is traced for at most nine shapes per actor.

        Parameters
        ----------
        x : np.ndarray [shape=(segments, ...), dtype=float32]

        Returns
        -------
        np.ndarray [shape=(segments, labels), dtype=float32]
        """
        if self.mapping is not None:  # zero-shot: the tag columns through the mapping
            from genre.zeroshot import genre_scores

            tags, start = {}, 0
            for name in self.features:  # "<extractor>_tags", 50 each, stacked in this order
                tags[name.removesuffix("_tags")] = x[:, start : start + 50]
                start += 50
            return genre_scores(self.mapping, tags)
        return compiled_predict(self.model, x, batch_size=self.batch_size, n_out=len(self.labels))

    def review(
        self, track_probs: np.ndarray, *, distances: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Calibrated probabilities, confidence, out-of-taxonomy score and review flags.

        With the card's calibration: temperature, its confidence threshold (or
        ``min_confidence``) and its out-of-taxonomy threshold (``distances``: the tracks'
        Mahalanobis distances, when the calibration's score uses them). Without one (raw
        models, zero-shot): the raw probabilities, the normalised entropy as
        ``ood_score``, and a review flag only when ``min_confidence`` is given.
        """
        from genre.calibration import apply, output_ood_score

        if self.calibration is not None:
            return apply(
                self.calibration,
                track_probs,
                distances=distances,
                min_confidence=self.min_confidence,
            )
        confidence = track_probs.max(axis=1)
        flagged = confidence < (self.min_confidence if self.min_confidence is not None else 0.0)
        return {
            "probs": track_probs,
            "confidence": confidence,
            "ood_score": output_ood_score(track_probs, method="entropy"),
            "needs_review": flagged,
            "review_reason": np.where(flagged, "low-confidence", None).astype(object),
        }

    def inputs(
        self, xs: list[np.ndarray], patches: list[np.ndarray] | None = None
    ) -> list[np.ndarray]:
        """Each track's model input: ``xs`` as they are, or, for a model on pretrained
        features, the extractors' columns of the patches ``xs`` stacked as the card says.

        The musicnn columns of every segment (of ``xs``, or of ``patches`` for a model on
        hand-crafted features) are kept in ``self._columns`` for the prior, the
        out-of-taxonomy distance and the tags.
        """
        self._track_tags, self._columns = None, {}
        if self.embedder is None:
            return xs
        source = xs if self.reads_columns else patches
        if source is None:
            raise ValueError("this predictor needs the segments' musicnn patches")
        bounds = np.cumsum([0] + [len(x) for x in source])
        self._columns = self.embedder(np.concatenate(source))
        if self.tags:
            self._track_tags = top_tags(self._columns, bounds, n=self.tags)
        if not self.reads_columns:
            return xs
        x = stack_features(self._columns, self.features)
        return [x[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def track_probs(
        self, owner: np.ndarray, seg_probs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Segments → tracks: the order (``np.unique(owner)``), the track probabilities
        (blended with the card's prior when it has one), and the Mahalanobis distances
        its out-of-taxonomy score needs (else ``None``)."""
        order, track_probs = segment_to_track(owner, seg_probs, aggregate=self.aggregate)
        if self.blend is not None:
            prior = self.blend.prior(self._columns, tuple(self.labels))
            _, prior = segment_to_track(owner, prior, aggregate=self.aggregate)
            track_probs = self.blend.mix(track_probs, prior)
        distances = None
        column = self.calibration.ood_column if self.calibration is not None else None
        if column is not None:
            from genre.posthoc import embedding, track_distances

            emb = embedding(self._columns, column)
            distances = track_distances(self.calibration.mahalanobis, owner, emb)
        return order, track_probs, distances

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        patches = batch.get("patches")
        xs = self.inputs(
            [np.asarray(x, dtype=np.float32) for x in batch["x"]],
            None if patches is None else [np.asarray(p, dtype=np.float32) for p in patches],
        )
        n = len(xs)
        probs = np.full((n, len(self.labels)), np.nan, np.float32)
        review = {
            k: np.full(n, v, dtype=t)
            for k, v, t in (
                ("confidence", np.nan, np.float32),
                ("ood_score", np.nan, np.float32),
                ("needs_review", False, bool),
                ("review_reason", None, object),
            )
        }
        ok = [i for i in range(n) if not batch["reason"][i] and len(xs[i])]
        if ok:
            seg_probs = self.predict(np.concatenate([xs[i] for i in ok]))
            owner = np.repeat(np.arange(len(ok)), [len(xs[i]) for i in ok])
            order, track_probs, distances = self.track_probs(owner, seg_probs)
            rows = np.asarray(ok)[order]
            reviewed = self.review(track_probs, distances=distances)
            probs[rows] = reviewed["probs"]
            for key in review:
                review[key][rows] = reviewed[key]
        out = _result_columns(batch, probs, self.labels, self.top_k)
        out.update(review)
        if self._track_tags is not None:
            tags = np.empty(n, dtype=object)
            tags[:] = [
                t if not batch["reason"][i] else None for i, t in enumerate(self._track_tags)
            ]
            out["tags"] = tags
        out["node_id"] = np.full(n, self.node_id, dtype=object)
        return out


def _node_id() -> str:
    import sys

    if "ray" not in sys.modules:
        return ""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def _result_columns(
    batch: dict[str, np.ndarray], probs: np.ndarray, labels: list[str], top_k: int
) -> dict[str, np.ndarray]:
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


def review_kwargs(card, *, min_confidence: float | None = None) -> dict[str, Any]:
    """What a :class:`Predictor` needs of the card besides the model: the calibration,
    the review threshold override, a zero-shot model's mapping and a head's blend."""
    zero_shot = (
        card.model_config.get("mapping") if card.model_config.get("kind") == "zero-shot" else None
    )
    return {
        "calibration": card.calibration,
        "min_confidence": min_confidence,
        "zero_shot": zero_shot,
        "blend": card.blend,
    }


def tag_plan(card, tags: int | None) -> tuple[int, tuple[str, ...]]:
    """How many tags per track, and the musicnn extractors label runs in all.

    ``tags=None`` (the default): 5 when the label run computes musicnn features anyway
    (the model's own, or its companions'), else none; ``tags=N > 0`` asks for them with
    any model, computing both musicnn models if needed; ``0`` turns them off.
    """
    from genre.config import PRETRAINED

    base = card.label_config.extractors
    if tags is None:
        return (5 if base else 0), base
    if tags == 0:
        return 0, base
    return tags, tuple(p for p in PRETRAINED if p in set(base) | set(PRETRAINED))
