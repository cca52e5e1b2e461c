"""After the search: what the champion learns from held-out tracks besides its weights.

Fitted in the search's driver, stored in the model card, and applied by label
(:class:`genre.predictor.Predictor`) in the same order::

    segment probabilities ─▶ track probabilities (the card's aggregation)
        ─▶ blend with the zero-shot prior          card.blend         (weight on validation)
        ─▶ temperature, review threshold,          card.calibration   (on validation)
           conformal genre sets                    card.calibration.conformal
        ─▶ out-of-taxonomy score: entropy, and the Mahalanobis distance of the track's
           musicnn embedding to the training segments' classes   card.calibration.ood

Everything is fitted on the genres' validation tracks only: the sets' guarantee is about
tracks like them. After a refit on train + val (:mod:`genre.refit`) the validation tracks
are all the pooled ones, predicted out of fold (each by a model that did not train on it).
The out-of-taxonomy tracks a search held out (outlier exposure,
:func:`genre.training.prepare`) are only measured: :attr:`PostHoc.review` says how many
of them label's default review flags (mostly as an empty set, ``none-fits``) beside the
share of the genres' test tracks it flags.

The **blend** mixes the head's track probabilities with those of a zero-shot tag mapping
(:mod:`genre.zeroshot`), ``(1 − w)·head + w·prior``, the weight ``w`` chosen from
:data:`BLEND_WEIGHTS` (0 included) by the validation tracks' log-loss after each weight's own
temperature: a head that is already right and sure keeps ``w = 0``. It needs the musicnn tag
columns in the shards and at least two of the model's genres covered by the mapping.

The **Mahalanobis** model is fitted on the training segments' musicnn embeddings
(:data:`EMBEDDING_COLUMNS` the shards hold, side by side), whatever features the model itself
reads: a log-mel CNN gets the same out-of-taxonomy check as a head on musicnn features. A
track's distance is the mean of its segments'. Without musicnn columns in the shards the
score is the normalised entropy of the calibrated probabilities alone.

Pure numpy on the driver's predictions; no Ray or MLflow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genre import calibration as cal
from genre.calibration import DEFAULT_MAX_SET, Calibration, fit_temperature, temperature_scale
from genre.config import DEFAULT_COVERAGE
from genre.errors import ParameterError
from genre.ood import MahalanobisOOD
from genre.report import segment_to_track, track_labels, track_mean
from genre.training import outlier_tracks_known, predict_other, predict_split, tracks_of
from genre.zeroshot import TagMapping, genre_scores

__all__ = [
    "BLEND_FORMAT",
    "BLEND_WEIGHTS",
    "COMPANION_COLUMNS",
    "EMBEDDING_COLUMNS",
    "embedding",
    "embedding_extractors",
    "Blend",
    "fit_blend_weight",
    "track_distances",
    "PostHoc",
    "fit_posthoc",
    "review_figures",
]

BLEND_FORMAT = "genre.blend/1"
#: Weights of the zero-shot prior tried on the validation tracks.
BLEND_WEIGHTS = tuple(round(float(w), 2) for w in np.linspace(0.0, 1.0, 21))
#: Embedding columns for the Mahalanobis score, in order of preference.
EMBEDDING_COLUMNS = ("musicnn_msd", "musicnn_mtt")
#: The shards' columns post-hoc fitting reads beside the network's predictions: the
#: embeddings and the tag columns of the blend's prior.
COMPANION_COLUMNS = (*EMBEDDING_COLUMNS, *(f"{c}_tags" for c in EMBEDDING_COLUMNS))
#: Principal directions kept by the Mahalanobis model (the card holds components × dims).
MAHALANOBIS_COMPONENTS = 64


@dataclass(frozen=True)
class Blend:
    """A head's probabilities mixed with a zero-shot tag mapping's.

    Attributes
    ----------
    weight : float in [0, 1]
        The prior's share: ``(1 − weight)·head + weight·prior``.
    mapping : TagMapping
    report : dict
        Validation and test figures of the fit (for people and reports).
    """

    weight: float
    mapping: TagMapping
    report: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w <= 1.0:
            raise ParameterError(f"blend weight={w!r} must be a number in [0, 1]")
        object.__setattr__(self, "weight", float(w))

    @property
    def extractors(self) -> tuple[str, ...]:
        """The musicnn models whose tags the prior reads."""
        return self.mapping.extractors

    def prior(self, columns: Mapping[str, np.ndarray], labels: tuple[str, ...]) -> np.ndarray:
        """Per-segment zero-shot probabilities over ``labels`` from musicnn tag columns
        (``<extractor>_tags``, as :class:`genre.embeddings.Embedder` returns them)."""
        tags = {e: columns[f"{e}_tags"] for e in self.extractors}
        return genre_scores(self.mapping, tags, labels=labels)

    def mix(self, head: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """``(1 − w)·head + w·prior``; rows still sum to one."""
        return ((1.0 - self.weight) * np.asarray(head, np.float64)) + self.weight * np.asarray(
            prior, np.float64
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": BLEND_FORMAT,
            "weight": self.weight,
            "mapping": self.mapping.to_dict(),
            "mapping_hash": self.mapping.hash(),
            "report": self.report,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Blend:
        if not isinstance(d, Mapping) or d.get("format") != BLEND_FORMAT:
            raise ParameterError(f"the card's blend is not in format {BLEND_FORMAT}")
        try:
            mapping = TagMapping.from_dict(d["mapping"], source="the card's blend mapping")
            return cls(weight=d["weight"], mapping=mapping, report=dict(d.get("report") or {}))
        except KeyError as exc:
            raise ParameterError(f"the card's blend lacks {exc}") from None


def _nll(probs: np.ndarray, y: np.ndarray) -> float:
    p = np.maximum(probs[np.arange(len(y)), y], 1e-12)
    return float(-np.mean(np.log(p)))


def fit_blend_weight(
    head: np.ndarray,
    prior: np.ndarray,
    y: np.ndarray,
    *,
    weights: tuple[float, ...] = BLEND_WEIGHTS,
) -> tuple[float, dict[float, float]]:
    """The prior's weight with the lowest validation log-loss after its own temperature.

    Each weight's mix gets the temperature that suits it best (as label will apply one),
    so the choice rewards probabilities that rank the right genre high, not a mix that
    only happens to be less overconfident. Ties go to the smaller weight.

    Parameters
    ----------
    head, prior : np.ndarray [shape=(tracks, classes)]
        Track probabilities of the trained head and of the zero-shot mapping.
    y : np.ndarray [shape=(tracks,)], class indices
    weights : candidate weights in [0, 1]

    Returns
    -------
    weight : float
    nll : dict ``weight → calibrated validation log-loss``
    """
    head, prior = np.asarray(head, np.float64), np.asarray(prior, np.float64)
    if head.shape != prior.shape or head.ndim != 2 or len(y) != len(head):
        raise ParameterError(f"head {head.shape}, prior {prior.shape} and y {np.shape(y)} differ")
    nll = {}
    for w in sorted(weights):
        mixed = (1.0 - w) * head + w * prior
        t = fit_temperature(mixed, y)
        nll[float(w)] = _nll(temperature_scale(mixed, temperature=t), y)
    best = min(nll.values())
    return next(w for w, v in nll.items() if v <= best + 1e-9), nll


def embedding(columns, spec: str) -> np.ndarray:
    """The embedding an out-of-taxonomy ``spec`` names: one column, or several joined by
    ``+`` (``musicnn_msd+musicnn_mtt``) side by side, from ``columns`` (name → (rows, dims))."""
    parts = [np.asarray(columns[c], dtype=np.float32) for c in spec.split("+")]
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def embedding_extractors(spec: str) -> tuple[str, ...]:
    """The musicnn models whose columns an out-of-taxonomy ``spec`` reads
    (``musicnn_msd+musicnn_mtt_pool`` → ``musicnn_msd``, ``musicnn_mtt``)."""
    return tuple(
        part.removesuffix("_pool").removesuffix("_tags") for part in spec.split("+") if part
    )


def track_distances(model, owner: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Mahalanobis distance per track: the mean of its segments' distances, in the order
    of ``np.unique(owner)``."""
    return track_mean(owner, model.score(embeddings))[1]


@dataclass
class PostHoc:
    """What :func:`fit_posthoc` fitted, and the figures it was judged by."""

    calibration: Calibration
    blend: Blend | None
    notes: list[str]
    #: split (val, test) → the head's segment probabilities, classes and tracks
    #: (:func:`genre.training.predict_split`; val out of fold after a refit)
    predicted: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    reliability: Callable[[Path], Path]
    #: What label's default review flags (:func:`review_figures`); empty without genre sets.
    review: dict[str, Any] = field(default_factory=dict)


def _split_rows(segments, tracks: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.isin(segments.track_id, tracks))


def _prior_tracks(blend: Blend, segments, tracks, labels, aggregate: str) -> np.ndarray:
    rows = _split_rows(segments, tracks)
    columns = {f"{e}_tags": segments.features[f"{e}_tags"][rows] for e in blend.extractors}
    prior = blend.prior(columns, tuple(labels))
    got, probs = segment_to_track(segments.track_id[rows], prior, aggregate=aggregate)
    if list(got) != list(tracks):
        raise ParameterError("the shards' tag columns do not cover the split's tracks")
    return probs


def _accuracy(probs: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(probs, axis=1) == y)) if len(y) else float("nan")


def _fit_blend(mapping, segments, labels, heads, ys, aggregate, notes) -> Blend | None:
    """Choose the prior's weight on validation; ``None`` (with a note) when impossible."""
    if mapping is None:
        return None
    tag_columns = [f"{e}_tags" for e in mapping.extractors]
    missing = [c for c in tag_columns if c not in segments.features]
    covered = [g for g in labels if mapping.genres.get(g)]
    if missing:
        notes.append(
            f"no blend: the shards hold no {', '.join(missing)} "
            "(extract with --features …,musicnn_msd,musicnn_mtt)"
        )
        return None
    if len(covered) < 2:
        notes.append(f"no blend: mapping {mapping.name!r} covers {len(covered)} of the genres")
        return None
    probe = Blend(weight=0.0, mapping=mapping)
    priors = {
        split: _prior_tracks(probe, segments, heads[split][0], labels, aggregate)
        for split in ("val", "test")
    }
    weight, nll = fit_blend_weight(heads["val"][1], priors["val"], ys["val"])
    blend = Blend(weight=weight, mapping=mapping)
    report: dict[str, Any] = {"mapping": mapping.name, "weight": weight, "val_nll": nll}
    for split in ("val", "test"):
        head, prior, y = heads[split][1], priors[split], ys[split]
        report[f"{split}_tracks"] = len(y)
        report[f"{split}_accuracy_head"] = _accuracy(head, y)
        report[f"{split}_accuracy_blend"] = _accuracy(blend.mix(head, prior), y)
        report[f"{split}_accuracy_prior"] = _accuracy(prior, y)
    return Blend(weight=weight, mapping=mapping, report=report)


def _fit_mahalanobis(segments, data, heads, notes, folds=None):
    """The Mahalanobis model on the training segments' embedding and the val/test tracks'
    distances; ``(None, None, {})`` when the shards hold no musicnn embedding.

    ``folds`` (cross-fitting, :mod:`genre.refit`): the validation tracks are training
    tracks too, so each fold's distances come from a model fitted without that fold.
    """
    column = "+".join(c for c in EMBEDDING_COLUMNS if c in segments.features) or None
    if column is None:
        notes.append("out-of-taxonomy score from the probabilities only (no musicnn embedding)")
        return None, None, {}
    label_of = {g: i for i, g in enumerate(data.labels)}
    emb = embedding(segments.features, column)

    def fitted(tracks: np.ndarray) -> MahalanobisOOD:
        train = _split_rows(segments, tracks)
        y = np.array([label_of[str(g)] for g in segments.genre[train]], dtype=np.int64)
        return MahalanobisOOD.fit(emb[train], y, components=MAHALANOBIS_COMPONENTS)

    def distances_of(model: MahalanobisOOD, tracks: np.ndarray) -> np.ndarray:
        rows = _split_rows(segments, tracks)
        return track_distances(model, segments.track_id[rows], emb[rows])

    train_tracks = tracks_of(data, "train")
    model = fitted(train_tracks)
    distances = {"test": distances_of(model, heads["test"][0])}
    if folds is None:
        distances["val"] = distances_of(model, heads["val"][0])
    else:
        out_of_fold = {}
        for fold in folds:
            held = np.intersect1d(heads["val"][0], fold)
            found = distances_of(fitted(np.setdiff1d(train_tracks, fold)), held)
            out_of_fold.update(zip(held.tolist(), found.tolist(), strict=True))
        distances["val"] = np.array([out_of_fold[t] for t in heads["val"][0].tolist()])
    return model, column, distances


def fit_posthoc(
    network,
    data,
    segments,
    *,
    aggregate: str = "mean",
    mapping=None,
    ood_quantile: float = 0.95,
    coverage: float = DEFAULT_COVERAGE,
    val_predicted: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    folds: list[np.ndarray] | None = None,
) -> PostHoc:
    """Blend weight, calibration and out-of-taxonomy model of a trained ``network``.

    Parameters
    ----------
    network : keras.Model trained on ``data``
    data : genre.training.PreparedData or genre.training.StreamedData
        Its val and test splits are predicted batch by batch when streamed: only the
        probabilities are kept.
    segments : genre.shards.SegmentSet
        The shards ``data`` came from (their musicnn columns alone suffice): they feed
        the prior and the Mahalanobis model even when the network reads other features.
    aggregate : the card's segment → track aggregation
    mapping : TagMapping or None
        The zero-shot prior to blend with (``None``: no blend).
    ood_quantile : the validation quantile of the out-of-taxonomy thresholds
    coverage : ``1 − α`` of the conformal genre sets, fitted on the validation tracks and
        measured on the test tracks
    val_predicted : tuple or None
        The validation segments' ``(probs, classes, tracks)`` when they do not come from
        ``network``: the out-of-fold predictions of a refit (:mod:`genre.refit`), whose
        ``data`` has the pooled tracks as its training split and no validation split.
    folds : list of np.ndarray or None
        The refit's folds (track ids): the validation tracks' Mahalanobis distances are
        then cross-fitted too.
    """
    notes: list[str] = []
    predicted, heads, ys = {}, {}, {}
    for split in ("val", "test"):
        if split == "val" and val_predicted is not None:
            predicted[split] = val_predicted
        else:
            predicted[split] = predict_split(network, data, split)
        probs, y, track = predicted[split]
        tracks, track_probs = segment_to_track(track, probs, aggregate=aggregate)
        heads[split] = (tracks, track_probs)
        ys[split] = track_labels(track, y, tracks).astype(np.int64)
    blend = _fit_blend(mapping, segments, data.labels, heads, ys, aggregate, notes)
    mixed = {split: heads[split][1] for split in heads}
    if blend is not None:
        for split in mixed:
            prior = _prior_tracks(blend, segments, heads[split][0], data.labels, aggregate)
            mixed[split] = blend.mix(mixed[split], prior)
    model, column, distances = _fit_mahalanobis(segments, data, heads, notes, folds)
    fitted = cal.fit_calibration(
        mixed["val"],
        ys["val"],
        ood_method="entropy+mahalanobis" if model is not None else "entropy",
        ood_quantile=ood_quantile,
        mahalanobis=model,
        val_distances=distances.get("val"),
        ood_column=column,
        test_probs=mixed["test"],
        test_y=ys["test"],
        coverage=coverage,
        fitted_on=(
            "validation tracks" if val_predicted is None else "train + val tracks, out of fold"
        ),
    )

    def reliability(path: Path) -> Path:
        scaled = cal.temperature_scale(mixed["test"], temperature=fitted.temperature)
        return cal.plot_reliability(
            cal.reliability_bins(mixed["test"], ys["test"]),
            cal.reliability_bins(scaled, ys["test"]),
            path=path,
            title=f"test tracks (T = {fitted.temperature:.2f})",
        )

    other = _other_tracks(network, data, segments, blend, aggregate)
    return PostHoc(
        calibration=fitted,
        blend=blend,
        notes=notes,
        predicted=predicted,
        reliability=reliability,
        review=review_figures(fitted, mixed["test"], other, data=data),
    )


def _other_tracks(network, data, segments, blend: Blend | None, aggregate: str) -> dict:
    """``split → (tracks, classes)`` probabilities, blended as label blends them, of the
    out-of-taxonomy validation and test tracks (none: an empty dict)."""
    out = {}
    for split in ("val", "test"):
        segment_probs, track = predict_other(network, data, split)
        if not len(track):
            continue
        tracks, track_probs = segment_to_track(track, segment_probs, aggregate=aggregate)
        if blend is not None:
            prior = _prior_tracks(blend, segments, tracks, data.labels, aggregate)
            track_probs = blend.mix(track_probs, prior)
        out[split] = track_probs
    return out


def review_figures(
    calibration: Calibration,
    test_probs: np.ndarray,
    other: Mapping[str, np.ndarray],
    *,
    data=None,
    max_set: int = DEFAULT_MAX_SET,
) -> dict[str, Any]:
    """What label's default review would flag: an empty genre set or one over ``max_set``.

    Parameters
    ----------
    calibration : Calibration, with conformal sets (else the answer is ``{}``)
    test_probs : np.ndarray [shape=(tracks, classes)], the genres' test tracks, uncalibrated
    other : dict ``split → (tracks, classes)``, out-of-taxonomy tracks, uncalibrated
    data : genre.training.PreparedData or StreamedData, optional: its λ and
        out-of-taxonomy training tracks

    Returns
    -------
    dict
        ``test_flagged`` (share) and ``n_test``; per out-of-taxonomy split ``s`` (``val``,
        ``test``): ``{s}_other_flagged``, ``{s}_other_empty`` (shares),
        ``{s}_other_confidence`` (mean top calibrated probability) and ``n_{s}_other``;
        with ``data``, ``outlier_weight`` and ``n_train_other``.
    """
    if calibration.conformal is None:
        return {}

    def flags(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        calibrated = temperature_scale(probs, temperature=calibration.temperature)
        size = calibration.conformal.sets(calibrated).sum(axis=1)
        return size == 0, size > max_set, calibrated.max(axis=1)

    empty, wide, _ = flags(test_probs)
    review: dict[str, Any] = {
        "max_set": max_set,
        "test_flagged": float(np.mean(empty | wide)),
        "n_test": len(test_probs),
    }
    if data is not None and outlier_tracks_known(data):
        review["outlier_weight"] = data.outlier_weight
        review["n_train_other"] = data.counts["train"].get("other_tracks", 0)
    for split, probs in other.items():
        empty, wide, top = flags(probs)
        review[f"{split}_other_flagged"] = float(np.mean(empty | wide))
        review[f"{split}_other_empty"] = float(np.mean(empty))
        review[f"{split}_other_confidence"] = float(np.mean(top))
        review[f"n_{split}_other"] = len(probs)
    return review
