"""Training and evaluating one model configuration on segment shards.

:func:`prepare` turns shards into train/val/test arrays split **by track** (never
by segment) and fits the input normalisation on the training split only.
:func:`fit` trains with early stopping on validation loss and keeps the best
weights; :func:`evaluate` scores a model at segment and track level. Ray Tune's
trainable in :mod:`genre.tuning` is a thin loop around :func:`train_epoch`.

The trained network starts with a fixed ``Normalization`` layer holding the
training-split mean and variance, so a saved model takes raw features and the
label job cannot forget to normalise.

**Outlier exposure** (Hendrycks, Mazeika & Dietterich, ICLR 2019): with ``outlier_weight``
given, :func:`prepare` also splits the out-of-taxonomy tracks (``_other/``,
:func:`genre.corpus.is_other`) by track, and with λ > 0 every training epoch adds their
segments with a uniform target, so the loss is the genres' cross-entropy plus
λ · CE(uniform, p) on them: the network learns to spread its mass over the genres for
audio that is none of them, which leaves their conformal genre sets empty. Without
out-of-taxonomy tracks (or with λ = 0) training is exactly what it was without them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genre.config import GENRES, OTHER_FOLDER, SPLIT_METHODS, FeatureConfig
from genre.corpus import (
    SPLITS,
    gtzan_coverage,
    gtzan_filtered_split,
    hash_split,
    is_other,
    split_tracks,
)
from genre.errors import GenreError, ParameterError
from genre.models import ModelConfig, build_model, compile_model
from genre.report import evaluate as evaluate_probs
from genre.report import segment_to_track, track_labels
from genre.shards import SegmentSet, TrackIndex

__all__ = [
    "SPLIT_METHODS",
    "Moments",
    "PreparedData",
    "SearchStats",
    "StreamedData",
    "predict_split",
    "predict_other",
    "tracks_of",
    "outlier_tracks_known",
    "HELD_OUT",
    "input_shape_of",
    "nonfinite_error",
    "other_assignment",
    "plan_splits",
    "split_assignment",
    "prepare",
    "pooled",
    "stack_features",
    "build_network",
    "train_epoch",
    "fit",
    "evaluate",
    "FitResult",
    "Trainer",
    "warm_up",
    "TrainState",
    "STATE_FILE",
    "BEST_WEIGHTS",
    "LAST_WEIGHTS",
]

#: ``split="auto"`` picks the artist-filtered GTZAN lists when this share of them is present.
GTZAN_AUTO_COVERAGE = 0.9


def stack_features(features: dict[str, np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    """Concatenate ``names`` along the last axis.

    Returns
    -------
    np.ndarray [shape=(n, frames, sum of bins) or (n, sum of dims), dtype=float32]
        Hand-crafted features share the frames; pretrained vectors are joined end to end.

    Raises
    ------
    ParameterError
        A name missing from ``features``, or ``(frames, bins)`` features mixed with vectors.
    """
    missing = [n for n in names if n not in features]
    if missing:
        raise ParameterError(
            f"features {','.join(missing)} are missing (have {','.join(features)})"
        )
    arrays = [features[n] for n in names]
    if len({a.ndim for a in arrays}) > 1:
        raise ParameterError(
            f"features {','.join(names)} cannot be stacked: (frames, bins) features "
            "and pretrained vectors go to different models"
        )
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=-1)


@dataclass
class PreparedData:
    """Arrays for one experiment: split by track, labels as class indices.

    ``x[split]`` is ``(segments, frames, bins)`` float32 (``(segments, dims)`` for
    pretrained vectors), ``y[split]`` is ``(segments,)`` int32 and ``track[split]`` the
    track id of each segment. ``other_x[split]`` and ``other_track[split]`` are the same
    for the out-of-taxonomy tracks (empty dicts when :func:`prepare` was not asked for
    them); ``outlier_weight`` is λ of outlier exposure (0: they are not trained on).
    """

    x: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    track: dict[str, np.ndarray]
    labels: list[str]
    features: tuple[str, ...]
    feature_config: FeatureConfig
    mean: np.ndarray
    variance: np.ndarray
    split_method: str
    seed: int
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    other_x: dict[str, np.ndarray] = field(default_factory=dict)
    other_track: dict[str, np.ndarray] = field(default_factory=dict)
    outlier_weight: float = 0.0

    @property
    def has_other(self) -> bool:
        """Whether training adds outlier exposure: λ > 0 and out-of-taxonomy training tracks."""
        return self.outlier_weight > 0 and len(self.other_track.get("train", ())) > 0

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One segment's input: ``(frames, bins)``, or ``(dims,)`` for pretrained vectors."""
        return tuple(self.x["train"].shape[1:])


def _labels(genres: np.ndarray) -> list[str]:
    present = sorted({str(g) for g in genres})
    # GTZAN order when the corpus uses GTZAN genres, so confusion matrices read the same everywhere.
    return [g for g in GENRES if g in present] + [g for g in present if g not in GENRES]


def _assign(
    track: np.ndarray,
    genre: np.ndarray,
    *,
    split: str,
    fractions: tuple[float, float, float],
    seed: int,
    assignment: dict[str, str] | None,
) -> tuple[dict[str, str], str]:
    """``track id → split`` and the method that made it (see :func:`prepare`)."""
    unique_tracks, first = np.unique(track, return_index=True)
    method = split
    if split == "auto":
        # The published lists only make sense for (nearly) the whole of GTZAN: a few
        # clips, or the demo corpus with its GTZAN-style names, would leave splits
        # of one or two tracks.
        method = (
            "gtzan-filtered"
            if gtzan_coverage(list(unique_tracks)) >= GTZAN_AUTO_COVERAGE
            else "random"
        )
    if assignment is not None:
        method = "given"
    elif method == "gtzan-filtered":
        assignment = gtzan_filtered_split(list(unique_tracks))
    else:
        assignment = split_tracks(
            list(unique_tracks), list(genre[first]), fractions=fractions, seed=seed
        )
    return assignment, method


def split_assignment(
    track: np.ndarray,
    genre: np.ndarray,
    *,
    split: str = "auto",
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    assignment: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, str], str]:
    """The genres, ``track id → split`` and the method that made it, for the labelled
    tracks ``track`` (one entry per segment or per track: :func:`prepare` and a search's
    statistics pass over a :class:`~genre.shards.TrackIndex` split alike).

    Raises
    ------
    ParameterError
        No labelled track, or fewer than two genres.
    """
    if not len(track):
        raise ParameterError(
            "the shards hold no labelled segments (files must sit in <root>/<genre>/)"
        )
    labels = _labels(genre)
    if len(labels) < 2:
        raise ParameterError(f"need at least two genres to train, found {labels}")
    assignment, method = _assign(
        track, genre, split=split, fractions=fractions, seed=seed, assignment=assignment
    )
    return labels, assignment, method


def other_assignment(
    tracks: np.ndarray | list[str], *, fractions: tuple[float, float, float], seed: int
) -> dict[str, str]:
    """``track id → split`` of out-of-taxonomy tracks: seeded like the genres, one group for
    all of them (no published list knows them), so a track is in one split only."""
    unique = list(np.unique(np.asarray(tracks, dtype=object))) if len(tracks) else []
    return split_tracks(unique, [OTHER_FOLDER] * len(unique), fractions=fractions, seed=seed)


def nonfinite_error(tracks: list[str], segments: int) -> ParameterError:
    """What a search says of segments whose features are not finite: one NaN spreads
    through the normalisation to every weight of every trial."""
    tracks = list(dict.fromkeys(tracks))
    shown = ", ".join(tracks[:5]) + (f" and {len(tracks) - 5} more" if len(tracks) > 5 else "")
    return ParameterError(
        f"{segments} segments of {len(tracks)} tracks hold non-finite feature "
        f"values ({shown}): extract the collection into a new folder (such files are now "
        "reported as corrupt)"
    )


def _corrected_assignment(
    segments: SegmentSet, *, split: str, fractions: tuple[float, float, float], seed: int
) -> tuple[dict[str, str], str]:
    """The split of segments whose labels were corrected (:mod:`genre.corrections`): one
    that no correction moves a track in.

    The tracks the shards labelled are split by the shards' genres, exactly as without
    corrections, so a relabelled test track stays a test track (trained on, it would
    score the model on what it learnt). An ``_other/`` track given a genre keeps the split
    outlier exposure gave it; any other newly labelled track gets one from its own hash
    (:func:`genre.corpus.hash_split`), which no other track's label can change.
    """
    folder = segments.folder_genre
    had = np.array([g is not None for g in folder], dtype=bool)
    assignment, method = _assign(
        segments.track_id[had],
        folder[had],
        split=split,
        fractions=fractions,
        seed=seed,
        assignment=None,
    )
    labelled = {t for t, g in zip(segments.track_id, segments.genre, strict=True) if g is not None}
    newcomers = sorted(labelled - set(assignment))
    others = other_assignment(_shards_others(segments), fractions=fractions, seed=seed)
    fresh = hash_split([t for t in newcomers if t not in others], fractions=fractions, seed=seed)
    return {**assignment, **{t: others[t] for t in newcomers if t in others}, **fresh}, method


def _shards_others(segments: SegmentSet) -> list[str]:
    """The out-of-taxonomy tracks (``_other/``, no genre) as the shards hold them, before
    any correction: their split is drawn over this set, so a correction that gives one of
    them a genre moves none of the others."""
    pairs = zip(segments.track_id, segments.folder_genre, strict=True)
    return [t for t, g in pairs if g is None and is_other(t)]


def _empty_split(name: str) -> ParameterError:
    """What :func:`prepare` and :func:`plan_splits` say of a split without tracks."""
    return ParameterError(f"the {name} split is empty: extract more tracks per genre (at least 3)")


def _check_finite(x: np.ndarray, track: np.ndarray) -> None:
    """Refuse segments whose features are not finite (:func:`nonfinite_error`)."""
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        raise nonfinite_error(track[bad].tolist(), int(bad.sum()))


def prepare(
    segments: SegmentSet,
    *,
    features: tuple[str, ...] = ("mel",),
    split: str = "auto",
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    assignment: dict[str, str] | None = None,
    outlier_weight: float | None = None,
) -> PreparedData:
    """Split labelled segments by track and fit the normalisation on train.

    Parameters
    ----------
    segments : SegmentSet
        From :func:`genre.shards.read_segments`; unlabelled segments are ignored. With
        corrected labels (:func:`genre.corrections.apply_corrections`) each track trains
        and is scored with its corrected genre, in the split the shards' own labels give
        it (:func:`_corrected_assignment`).
    features : tuple of str
        Feature names to stack along the bins axis.
    split : {"auto", "random", "gtzan-filtered"}
        ``random``: stratified by genre, seeded. ``gtzan-filtered``: the published
        artist-filtered lists. ``auto``: the GTZAN lists when at least 90 % of their
        tracks are present (a full GTZAN), else ``random``.
    fractions : (train, val, test)
    seed : int
    assignment : dict or None
        ``track_id → "train" | "val" | "test"`` chosen by the caller (cross-validation
        folds); overrides ``split``. Tracks it leaves out are not used.
    outlier_weight : float ≥ 0 or None, λ of outlier exposure (:func:`_add_other`; None: none)

    Raises
    ------
    ParameterError
        No labelled segments, fewer than two genres, unknown split, or a split
        without tracks.
    """
    if split not in SPLIT_METHODS:
        raise ParameterError(f"split={split!r}: choose one of {', '.join(SPLIT_METHODS)}")
    labelled = np.array([g is not None for g in segments.genre])
    track = segments.track_id[labelled]
    genre = segments.genre[labelled]
    if assignment is None and segments.shard_genre is not None:
        labels = _labels(genre)
        if len(labels) < 2:
            raise ParameterError(f"need at least two genres to train, found {labels}")
        assignment, method = _corrected_assignment(
            segments, split=split, fractions=fractions, seed=seed
        )
    else:
        labels, assignment, method = split_assignment(
            track, genre, split=split, fractions=fractions, seed=seed, assignment=assignment
        )
    which = np.array([assignment.get(t, "") for t in track])
    x_all = stack_features({n: v[labelled] for n, v in segments.features.items()}, tuple(features))
    _check_finite(x_all, track)
    y_all = np.array([labels.index(str(g)) for g in genre], dtype=np.int32)
    data = PreparedData(
        x={},
        y={},
        track={},
        labels=labels,
        features=tuple(features),
        feature_config=segments.cfg.with_features(features),
        mean=np.zeros(0),
        variance=np.zeros(0),
        split_method=method,
        seed=seed,
    )
    for name in ("train", "val", "test"):
        mask = which == name
        if not mask.any():
            raise _empty_split(name)
        data.x[name], data.y[name], data.track[name] = x_all[mask], y_all[mask], track[mask]
        data.counts[name] = {
            "tracks": int(len(np.unique(track[mask]))),
            "segments": int(mask.sum()),
        }
    data.mean, data.variance = _normalisation(data.x["train"])
    _add_other(data, segments, fractions=fractions, weight=outlier_weight)
    return data


#: The split a refit's streamed view files a cross-fitting fold's tracks under (:func:`pooled`).
HELD_OUT = "held_out"


def pooled(
    data: PreparedData | StreamedData, *, leave_out: np.ndarray | None = None
) -> PreparedData | StreamedData:
    """``data`` with its validation tracks joined to the training ones (a refit), less the
    tracks in ``leave_out`` (a cross-fitting fold), and no validation split.

    The normalisation is fitted again on the pooled training segments; the test split and
    the out-of-taxonomy tracks stay as they are. ``x["val"]`` is empty, so training runs a
    fixed number of epochs (:func:`train_epoch` reports its validation metrics as NaN).
    A stream is re-split rather than copied (the fold's tracks become its
    :data:`HELD_OUT` split), and its normalisation is fitted by one pass over the pool.
    """
    if isinstance(data, StreamedData):
        return _pooled_stream(data, leave_out)
    x = np.concatenate([data.x["train"], data.x["val"]])
    y = np.concatenate([data.y["train"], data.y["val"]])
    track = np.concatenate([data.track["train"], data.track["val"]])
    if leave_out is not None:
        keep = ~np.isin(track, leave_out)
        x, y, track = x[keep], y[keep], track[keep]
    mean, variance = _normalisation(x)
    return dataclasses.replace(
        data,
        x={"train": x, "val": x[:0], "test": data.x["test"]},
        y={"train": y, "val": y[:0], "test": data.y["test"]},
        track={"train": track, "val": track[:0], "test": data.track["test"]},
        mean=mean,
        variance=variance,
        counts={
            **data.counts,
            "train": {
                **data.counts["train"],
                "tracks": int(len(np.unique(track))),
                "segments": int(len(track)),
            },
            "val": {"tracks": 0, "segments": 0},
        },
    )


def _pooled_stream(data: StreamedData, leave_out: np.ndarray | None) -> StreamedData:
    """:func:`pooled` of a stream: the new splits, then the pool's moments and segment
    count from one pass over it (float64, as :func:`genre.searchdata.statistics`)."""
    left = set() if leave_out is None else {str(t) for t in leave_out}
    pool = {
        t: HELD_OUT if t in left else "train"
        for t, s in data.stats.assignment.items()
        if s in ("train", "val")
    }
    view = data.with_stats(
        dataclasses.replace(data.stats, assignment={**data.stats.assignment, **pool})
    )
    total, segments = Moments(), 0
    for x, _, _ in view.source("train", batch_size=256, seed=None, other=False):
        total, segments = total.merge(Moments.of(x)), segments + len(x)
    mean, variance = total.normalisation()
    counts = {
        **data.counts,
        "train": {
            **data.counts["train"],
            "tracks": sum(s == "train" for s in pool.values()),
            "segments": segments,
        },
        "val": {"tracks": 0, "segments": 0},
    }
    return view.with_stats(
        dataclasses.replace(view.stats, mean=mean, variance=variance, counts=counts)
    )


def _normalisation(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance (floored at 1e-6) of every bin over the training segments' frames."""
    flat = train.reshape(-1, train.shape[-1]).astype(np.float64)
    return flat.mean(axis=0).astype(np.float32), np.maximum(flat.var(axis=0), 1e-6).astype(
        np.float32
    )


@dataclass
class Moments:
    """Per-bin count, mean and sum of squared deviations in float64, merged piece by piece
    (Chan, Golub & LeVeque's pairwise update), so the normalisation of a training split
    read a batch at a time is the one :func:`prepare` fits on all of it at once.

    ``n`` counts frames (every segment's frames, each a vector of ``bins``); ``mean`` and
    ``m2`` are ``(bins,)`` float64.
    """

    n: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None

    @classmethod
    def of(cls, x: np.ndarray) -> Moments:
        """The moments of ``x`` ``(segments, frames, bins)`` or ``(segments, dims)``."""
        flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
        if not len(flat):
            return cls()
        mean = flat.mean(axis=0)
        return cls(n=len(flat), mean=mean, m2=np.square(flat - mean).sum(axis=0))

    def merge(self, other: Moments) -> Moments:
        """The moments of both pieces together."""
        if not other.n:
            return self
        if not self.n:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + np.square(delta) * (self.n * other.n / n)
        return Moments(n=n, mean=mean, m2=m2)

    def normalisation(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance (floored at 1e-6) as the ``Normalization`` layer takes them."""
        if not self.n:
            raise ParameterError("no training segments to fit the normalisation on")
        variance = np.maximum(self.m2 / self.n, 1e-6)
        return self.mean.astype(np.float32), variance.astype(np.float32)


def input_shape_of(cfg: FeatureConfig, features: tuple[str, ...]) -> tuple[int, ...]:
    """One segment's input when ``features`` of ``cfg`` are stacked (:func:`stack_features`),
    known from the shards' config without reading a segment.

    Raises
    ------
    ParameterError
        A feature the shards lack, or ``(frames, bins)`` features mixed with vectors.
    """
    missing = [n for n in features if n not in cfg.features]
    if missing:
        raise ParameterError(
            f"features {','.join(missing)} are missing (have {','.join(cfg.features)})"
        )
    shapes = [cfg.shape(n) for n in features]
    if len({len(shape) for shape in shapes}) > 1:
        raise ParameterError(
            f"features {','.join(features)} cannot be stacked: (frames, bins) features "
            "and pretrained vectors go to different models"
        )
    return (*shapes[0][:-1], sum(shape[-1] for shape in shapes))


@dataclass
class SearchStats:
    """What a search's statistics pass finds once for one feature set, stored with the
    search and read by every trial instead of computed again.

    ``assignment`` is ``track id → split`` of the labelled tracks, as :func:`prepare`
    splits them; ``other_assignment`` the same for out-of-taxonomy tracks (empty without
    outlier exposure). ``counts`` per split as :attr:`PreparedData.counts`. ``mean``,
    ``variance`` ``(bins,)`` float32: the normalisation fitted on the training split.
    """

    features: tuple[str, ...]
    labels: list[str]
    split_method: str
    seed: int
    assignment: dict[str, str]
    other_assignment: dict[str, str]
    counts: dict[str, dict[str, int]]
    input_shape: tuple[int, ...]
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    variance: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d.update(mean=self.mean.tolist(), variance=self.variance.tolist())
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str) -> SearchStats:
        d = json.loads(text)
        d.update(
            features=tuple(d["features"]),
            input_shape=tuple(d["input_shape"]),
            mean=np.asarray(d["mean"], np.float32),
            variance=np.asarray(d["variance"], np.float32),
        )
        return cls(**d)

    @property
    def segments(self) -> int:
        """Labelled and out-of-taxonomy segments of every split."""
        return sum(c["segments"] + c.get("other_segments", 0) for c in self.counts.values())


@dataclass
class StreamedData:
    """A search's data for one feature set, read split by split from a stream rather than
    held in memory: what :class:`PreparedData` says of the data (genres, features,
    normalisation, counts), from the search's :class:`SearchStats`, and ``source``, which
    reads a split.

    ``source(split, *, batch_size, seed, other)`` yields ``(x, y, track)`` batches of the
    split's segments: ``x`` float32 ``(rows, *input_shape)``, ``y`` int32 class indices
    (``-1`` for an out-of-taxonomy segment, given only with ``other``), ``track`` the
    track ids; shuffled (seeded) when ``seed`` is not ``None``. A split is whatever the
    stats' ``assignment`` names (a refit's held-out fold is one). ``source.label`` is
    ``track id → class index`` of the labelled tracks, and ``source.with_stats(stats)`` the
    same source over the splits of other stats (:meth:`with_stats`). It must pickle: it
    travels to the trials (:class:`genre.searchdata.ShardStream`).
    """

    stats: SearchStats
    feature_config: FeatureConfig
    source: Any
    outlier_weight: float = 0.0

    labels = property(lambda self: self.stats.labels)
    features = property(lambda self: self.stats.features)
    mean = property(lambda self: self.stats.mean)
    variance = property(lambda self: self.stats.variance)
    split_method = property(lambda self: self.stats.split_method)
    seed = property(lambda self: self.stats.seed)
    counts = property(lambda self: self.stats.counts)
    input_shape = property(lambda self: self.stats.input_shape)

    @property
    def has_other(self) -> bool:
        """As :attr:`PreparedData.has_other`."""
        return self.outlier_weight > 0 and self.counts["train"].get("other_segments", 0) > 0

    def with_stats(self, stats: SearchStats) -> StreamedData:
        """The same data split and normalised as ``stats`` say."""
        return dataclasses.replace(self, stats=stats, source=self.source.with_stats(stats))


def tracks_of(data: PreparedData | StreamedData, split: str, *, other: bool = False) -> np.ndarray:
    """The sorted track ids of one split of ``data`` (its out-of-taxonomy tracks with
    ``other``), held in memory or streamed alike."""
    if isinstance(data, StreamedData):
        assignment = data.stats.other_assignment if other else data.stats.assignment
        return np.array(sorted(t for t, s in assignment.items() if s == split), dtype=object)
    tracks = (data.other_track if other else data.track).get(split, np.zeros(0, dtype=object))
    return np.array(sorted({str(t) for t in tracks}), dtype=object)


def outlier_tracks_known(data: PreparedData | StreamedData) -> bool:
    """Whether the search split out-of-taxonomy tracks at all (``--outlier-weight`` given,
    even λ = 0): then its review reports them."""
    return "other_tracks" in data.counts["train"]


def plan_splits(
    index: TrackIndex,
    *,
    features: tuple[str, ...],
    split: str = "auto",
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    outlier_weight: float | None = None,
) -> SearchStats:
    """The part of a search's statistics that needs no feature value: genres, split, counts
    and input shape, from the tracks of ``index`` (the normalisation is left empty for the
    pass over the training segments to fill).

    Raises
    ------
    ParameterError
        As :func:`prepare`: no labels, fewer than two genres, an empty split, or features
        the shards lack or that cannot be stacked.
    """
    if split not in SPLIT_METHODS:
        raise ParameterError(f"split={split!r}: choose one of {', '.join(SPLIT_METHODS)}")
    shape = input_shape_of(index.cfg, tuple(features))
    labelled = np.array([g is not None for g in index.genre], dtype=bool)
    labels, assignment, method = split_assignment(
        index.track_id[labelled], index.genre[labelled], split=split, fractions=fractions, seed=seed
    )
    which = np.array([assignment.get(t, "") for t in index.track_id[labelled]])
    counts = {}
    for name in SPLITS:
        mask = which == name
        if not mask.any():
            raise _empty_split(name)
        counts[name] = {
            "tracks": int(mask.sum()),
            "segments": int(index.segments[labelled][mask].sum()),
        }
    others: dict[str, str] = {}
    if outlier_weight is not None:
        pairs = zip(index.track_id, index.genre, strict=True)
        rows = np.array([g is None and is_other(t) for t, g in pairs], dtype=bool)
        others = other_assignment(index.track_id[rows], fractions=fractions, seed=seed)
        where = np.array([others.get(t, "") for t in index.track_id[rows]])
        for name in SPLITS:
            mask = where == name
            counts[name].update(
                other_tracks=int(mask.sum()),
                other_segments=int(index.segments[rows][mask].sum()),
            )
    return SearchStats(
        features=tuple(features),
        labels=labels,
        split_method=method,
        seed=seed,
        assignment=assignment,
        other_assignment=others,
        counts=counts,
        input_shape=shape,
    )


def _add_other(
    data: PreparedData, segments: SegmentSet, *, fractions: tuple[float, float, float], weight
) -> None:
    """Split the out-of-taxonomy tracks of ``segments`` (``_other/``) by track into
    ``data.other_*``: seeded, one group, whatever split the genres got (no published list
    knows them); trained on with λ = ``weight`` when it is above 0 (:func:`train_epoch`).
    ``None``: they are ignored, as before outlier exposure existed. The normalisation stays
    the genres' training segments' alone."""
    if weight is None:
        return
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
        raise ParameterError(f"outlier_weight={weight!r} must be a number ≥ 0")
    data.outlier_weight = float(weight)
    rows = np.flatnonzero(
        [g is None and is_other(t) for t, g in zip(segments.track_id, segments.genre, strict=True)]
    )
    track = segments.track_id[rows]
    assignment = other_assignment(_shards_others(segments), fractions=fractions, seed=data.seed)
    which = np.array([assignment[t] for t in track], dtype=object)
    x = stack_features({n: segments.features[n][rows] for n in data.features}, data.features)
    if len(rows):
        _check_finite(x, track)
    for name in SPLITS:
        mask = which == name
        data.other_x[name], data.other_track[name] = x[mask], track[mask]
        data.counts[name].update(
            other_tracks=int(len(np.unique(track[mask]))), other_segments=int(mask.sum())
        )


def build_network(
    model_cfg: ModelConfig,
    data: PreparedData | StreamedData,
    *,
    outlier_exposure: bool | None = None,
):
    """The model for ``data``: fixed normalisation, then the zoo model (compiled).

    ``outlier_exposure``: compile for soft targets (:func:`genre.models.compile_model`);
    ``None``: when ``data`` trains with out-of-taxonomy tracks (:attr:`PreparedData.has_other`).
    A network that is only predicted with and saved (the search's champion) passes False.
    """
    import keras

    core = build_model(
        model_cfg, input_shape=data.input_shape, n_classes=len(data.labels), compile=False
    )
    inputs = keras.Input(shape=data.input_shape, name="features")
    normalised = keras.layers.Normalization(
        axis=-1, mean=data.mean, variance=data.variance, name="train_norm"
    )(inputs)
    network = keras.Model(inputs, core(normalised), name=f"genre_{model_cfg.kind}")
    exposed = data.has_other if outlier_exposure is None else outlier_exposure
    return compile_model(network, model_cfg, outlier_exposure=exposed)


def train_epoch(
    network, data: PreparedData | StreamedData, *, batch_size: int, epoch: int, seed: int = 0
) -> dict[str, float]:
    """One epoch of training plus validation; returns the epoch's metrics.

    Keys: ``loss``, ``accuracy`` (train), ``val_loss``, ``val_accuracy`` (segments),
    ``val_track_accuracy`` (mean of segment probabilities per track) and
    ``train_segments_per_s`` (training throughput). ``data`` held in memory is shuffled
    whole; a stream is shuffled as its source does it (files, then a local buffer).
    """
    return _train_epoch(network, data, batch_size=batch_size, epoch=epoch, seed=seed)[0]


def _train_epoch(
    network,
    data: PreparedData | StreamedData,
    *,
    batch_size: int,
    epoch: int,
    seed: int,
    callbacks: list | None = None,
) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """:func:`train_epoch`'s metrics and the validation predictions they came from
    (:func:`predict_split`; ``None`` without a validation split), which the trainer's
    report of the best epoch reads instead of predicting the split again."""
    shuffle = seed * 100_003 + epoch
    steps = None
    if isinstance(data, StreamedData):
        batches, counted = _streamed_batches(data, batch_size=batch_size, seed=shuffle)
        train = data.counts["train"]
        total = train["segments"] + (train.get("other_segments", 0) if data.has_other else 0)
        steps = -(-total // batch_size)  # Keras cannot ask a generator for its length
    else:
        rng = np.random.default_rng(shuffle)
        if data.has_other:
            order = rng.permutation(len(data.y["train"]) + len(data.other_track["train"]))
            batches = _exposed_batches(data, order, batch_size=batch_size)
        else:
            order = rng.permutation(len(data.y["train"]))
            batches = _shuffled_batches(
                data.x["train"], data.y["train"], order, batch_size=batch_size
            )
        counted = [len(order)]
    started = time.perf_counter()  # training only: validation is timed out
    history = network.fit(
        batches, epochs=1, shuffle=False, verbose=0, steps_per_epoch=steps, callbacks=callbacks
    )
    train_s = time.perf_counter() - started
    trained = {
        "loss": float(history.history["loss"][-1]),
        "accuracy": float(history.history["accuracy"][-1]),
        "train_segments_per_s": float(sum(counted) / max(train_s, 1e-9)),
    }
    streamed = isinstance(data, StreamedData)
    # A refit on train + val (see pooled) has nothing to validate on.
    if not (data.counts["val"]["segments"] if streamed else len(data.y["val"])):
        nan = float("nan")
        return {**trained, "val_loss": nan, "val_accuracy": nan, "val_track_accuracy": nan}, None
    predicted = predict_split(network, data, "val", batch_size=max(256, batch_size))
    probs, y, track = predicted
    eps = 1e-7
    val_loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], eps, 1.0))))
    tracks, track_probs = segment_to_track(track, probs, aggregate="mean")
    track_y = track_labels(track, y, tracks)
    return {
        **trained,
        "val_loss": val_loss,
        "val_accuracy": float(np.mean(np.argmax(probs, axis=1) == y)),
        "val_track_accuracy": float(np.mean(np.argmax(track_probs, axis=1) == track_y)),
    }, predicted


def predict_split(
    network, data: PreparedData | StreamedData, split: str, *, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The segment probabilities of ``network`` on one split of ``data``, with each
    segment's class and track: ``(segments, classes)``, ``(segments,)``, ``(segments,)``.

    A stream is read once, batch by batch: only the probabilities are kept, a few numbers
    per segment, never the split's features.
    """
    if not isinstance(data, StreamedData):
        probs = network.predict(data.x[split], batch_size=batch_size, verbose=0)
        return probs, data.y[split], data.track[split]
    parts: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    tracks: list[np.ndarray] = []
    for x, y, track in data.source(split, batch_size=batch_size, seed=None, other=False):
        parts.append(np.asarray(network.predict_on_batch(x)))
        ys.append(y)
        tracks.append(track)
    if not parts:
        return np.zeros((0, len(data.labels)), np.float32), np.zeros(0, np.int32), np.zeros(0)
    return np.concatenate(parts), np.concatenate(ys), np.concatenate(tracks)


def predict_other(
    network, data: PreparedData | StreamedData, split: str, *, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """The segment probabilities of ``network`` on the out-of-taxonomy tracks of one split,
    and each segment's track (none: empty arrays). A stream is read as in
    :func:`predict_split`, the split's genre segments passed over."""
    if not isinstance(data, StreamedData):
        x = data.other_x.get(split)
        if x is None or not len(x):
            return np.zeros((0, len(data.labels)), np.float32), np.zeros(0, dtype=object)
        return network.predict(x, batch_size=batch_size, verbose=0), data.other_track[split]
    parts: list[np.ndarray] = []
    tracks: list[np.ndarray] = []
    if len(tracks_of(data, split, other=True)):
        for x, y, track in data.source(split, batch_size=batch_size, seed=None, other=True):
            outside = y < 0
            if outside.any():
                parts.append(np.asarray(network.predict_on_batch(x[outside])))
                tracks.append(track[outside])
    if not parts:
        return np.zeros((0, len(data.labels)), np.float32), np.zeros(0, dtype=object)
    return np.concatenate(parts), np.concatenate(tracks)


def _streamed_batches(data: StreamedData, *, batch_size: int, seed: int):
    """A generator of the training split's batches for ``network.fit``, and a list that
    holds the number of segments it gave once it is spent. With outlier exposure the
    out-of-taxonomy segments come mixed in, with the targets and weights of
    :func:`_exposed_batches`."""
    n_classes = len(data.labels)
    eye = np.eye(n_classes, dtype=np.float32)
    counted: list[int] = []

    def batches():
        for x, y, _ in data.source("train", batch_size=batch_size, seed=seed, other=data.has_other):
            counted.append(len(y))
            if not data.has_other:
                yield x, y
                continue
            inside = y >= 0
            targets = np.full((len(y), n_classes), 1.0 / n_classes, dtype=np.float32)
            targets[inside] = eye[y[inside]]
            yield x, targets, np.where(inside, 1.0, data.outlier_weight).astype(np.float32)

    return batches(), counted


def _shuffled_batches(x: np.ndarray, y: np.ndarray, order: np.ndarray, *, batch_size: int):
    """The epoch's batches, gathered one at a time by index (``x[order]`` would copy the
    whole training array every epoch: on a GPU that copy cost as much as the epoch)."""
    import keras

    class _Batches(keras.utils.PyDataset):
        def __len__(self) -> int:
            return -(-len(order) // batch_size)

        def __getitem__(self, i: int):
            index = order[i * batch_size : (i + 1) * batch_size]
            return x[index], y[index]

    return _Batches()


def _exposed_batches(data: PreparedData, order: np.ndarray, *, batch_size: int):
    """The epoch's batches of genre and out-of-taxonomy segments shuffled together, as
    ``(x, targets, weights)``: one-hot targets with weight 1 for a genre's segment, uniform
    ones with weight λ for an outlier, so categorical cross-entropy is the outlier exposure
    loss (see :func:`genre.models.compile_model`). ``order`` indexes the genres' training
    segments, then the outliers'."""
    import keras

    x_in, y_in, x_out = data.x["train"], data.y["train"], data.other_x["train"]
    n_in, n_classes = len(y_in), len(data.labels)
    eye = np.eye(n_classes, dtype=np.float32)

    class _Batches(keras.utils.PyDataset):
        def __len__(self) -> int:
            return -(-len(order) // batch_size)

        def __getitem__(self, i: int):
            index = order[i * batch_size : (i + 1) * batch_size]
            inside = index < n_in
            x = np.empty((len(index), *x_in.shape[1:]), dtype=x_in.dtype)
            x[inside], x[~inside] = x_in[index[inside]], x_out[index[~inside] - n_in]
            targets = np.full((len(index), n_classes), 1.0 / n_classes, dtype=np.float32)
            targets[inside] = eye[y_in[index[inside]]]
            weights = np.where(inside, 1.0, data.outlier_weight).astype(np.float32)
            return x, targets, weights

    return _Batches()


@dataclass
class FitResult:
    """A trained network, its per-epoch history and where the best epoch was."""

    network: Any
    history: dict[str, list[float]]
    best_epoch: int
    stopped_early: bool


#: Files of a training checkpoint (see :meth:`Trainer.save`).
STATE_FILE, BEST_WEIGHTS, LAST_WEIGHTS = "state.json", "best.weights.h5", "last.weights.h5"
_VAL_REPORT_KEYS = (
    "track_accuracy",
    "segment_accuracy",
    "confusion",
    "per_genre",
    "most_confused",
    "track_macro_f1",
)


@dataclass
class TrainState:
    """Where training stands; JSON-able, saved with every checkpoint."""

    epoch: int = 0  # epochs done
    best_val_loss: float = float("inf")
    best_epoch: int = -1  # 0-based index of the best epoch so far
    history: dict[str, list[float]] = field(default_factory=dict)
    val_report: dict[str, Any] | None = None


def resident_data_bytes() -> int | None:
    """Resident bytes of this process's own memory (``RssAnon``): not the code it maps, nor
    the pages of Ray's object store it reads (shared, and bounded by the store's own cap);
    ``None`` where ``/proc`` does not say (not Linux)."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return None
    kb = [int(x.split()[1]) for x in lines if x.startswith("RssAnon:")]
    return 1024 * kb[0] if kb else None


def warm_up(network, data: PreparedData | StreamedData, *, batch_size: int) -> None:
    """One training step and one prediction on zeros, as a streamed trial's training and
    validation call them (``fit`` on a generator, ``predict_on_batch``), then every weight
    and optimizer variable put back: the network is as it was, and the framework holds what
    its first step takes. An in-memory trial trains on a ``PyDataset`` and validates with
    ``predict``, which may trace functions this warm-up does not."""
    shape = tuple(data.input_shape)
    n_classes = len(data.labels)
    optimizer = network.optimizer
    if not optimizer.built:
        optimizer.build(network.trainable_variables)
    variables = [*network.variables, *optimizer.variables]
    kept = [np.array(v.numpy(), copy=True) for v in variables]
    x = np.zeros((batch_size, *shape), np.float32)
    if data.has_other:  # the targets and weights of outlier exposure (_exposed_batches)
        batch = (
            x,
            np.full((batch_size, n_classes), 1.0 / n_classes, np.float32),
            np.ones(batch_size, np.float32),
        )
    else:
        batch = (x, np.zeros(batch_size, np.int32))
    network.fit((b for b in [batch]), epochs=1, steps_per_epoch=1, shuffle=False, verbose=0)
    network.predict_on_batch(np.zeros((max(256, batch_size), *shape), np.float32))
    for variable, value in zip(variables, kept, strict=True):
        variable.assign(value)


class MemoryCap:
    """The memory one training may take for its data: :func:`resident_data_bytes` may grow
    at most ``limit`` bytes over what the process held when the cap was made (its framework
    and model, built and warmed up before: :meth:`Trainer.cap_memory`). :meth:`check`
    raises a :class:`~genre.errors.GenreError` past it; the trainer checks after every
    training batch and every epoch. A cap where ``/proc`` says nothing checks nothing
    (``peak`` stays 0)."""

    def __init__(self, limit: int):
        self.limit, self.peak = int(limit), 0
        self.base = resident_data_bytes()

    def check(self) -> None:
        now = resident_data_bytes()
        if now is None or self.base is None:
            return
        grown = now - self.base
        self.peak = max(self.peak, grown)
        if grown > self.limit:
            raise GenreError(
                f"training holds {grown / 2**20:.0f} MiB of data, over its cap of "
                f"{self.limit / 2**20:.0f} MiB (--trial-memory): raise the cap, or stream "
                "the shards (--data stream) with a smaller batch"
            )

    def callback(self):
        """A Keras callback that checks after every training batch."""
        import keras

        return keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: self.check())


class Trainer:
    """The one training loop: epochs with early stopping on validation loss, best weights kept.

    :func:`fit` runs it to the end in-process; the Ray Tune trainable runs it one epoch
    per report and checkpoints it with :meth:`save` (and :meth:`load` on resume).

    Parameters
    ----------
    data : PreparedData or StreamedData
        Held in memory, or read from a stream an epoch at a time.
    model_cfg : ModelConfig
    batch_size : int
    patience : int
        Stop after this many epochs without a lower validation loss.
    seed : int
        Seed of the per-epoch shuffles (seed the weights with ``keras.utils.set_random_seed``).
    report_val : bool
        Keep the validation report (confusion, per-genre scores) of the best epoch.

    ``memory_cap`` (:class:`MemoryCap` or ``None``, set by :meth:`cap_memory` once the model
    is built) is checked after every training batch and every epoch.
    """

    def __init__(
        self,
        data: PreparedData | StreamedData,
        model_cfg: ModelConfig,
        *,
        batch_size: int,
        patience: int,
        seed: int = 0,
        report_val: bool = False,
    ):
        self.data, self.batch_size, self.patience, self.seed = data, batch_size, patience, seed
        self.report_val = report_val
        self.network = build_network(model_cfg, data)
        self.state = TrainState()
        self.best_weights: list | None = None
        self.memory_cap: MemoryCap | None = None

    def cap_memory(self, limit: int) -> MemoryCap:
        """Cap what training takes for its data from now on at ``limit`` bytes, counted
        once the framework is warm (:func:`warm_up`): what TensorFlow takes at a model's
        first training step and first prediction (its traced functions, kernels, scratch:
        ~50–100 MiB) is the framework's, not the data's."""
        warm_up(self.network, self.data, batch_size=self.batch_size)
        self.memory_cap = MemoryCap(limit)
        return self.memory_cap

    def step(self) -> dict[str, float]:
        """Train one epoch, validate, keep the weights if the validation loss improved."""
        epoch = self.state.epoch
        cap = self.memory_cap
        metrics, predicted = _train_epoch(
            self.network,
            self.data,
            batch_size=self.batch_size,
            epoch=epoch,
            seed=self.seed,
            callbacks=[cap.callback()] if cap else [],
        )
        if cap:
            cap.check()
        for key, value in metrics.items():
            self.state.history.setdefault(key, []).append(value)
        if metrics["val_loss"] < self.state.best_val_loss:
            self.state.best_val_loss, self.state.best_epoch = metrics["val_loss"], epoch
            self.best_weights = self.network.get_weights()
            if self.report_val:
                report = evaluate(self.network, self.data, split="val", predicted=predicted)
                self.state.val_report = {k: report[k] for k in _VAL_REPORT_KEYS}
        self.state.epoch = epoch + 1
        return metrics

    @property
    def should_stop(self) -> bool:
        """``patience`` epochs have passed without a lower validation loss."""
        return (
            self.state.epoch > 0 and self.state.epoch - 1 - self.state.best_epoch >= self.patience
        )

    def best(self, key: str) -> float:
        """``history[key]`` at the best epoch."""
        return self.state.history[key][self.state.best_epoch]

    def restore_best(self) -> None:
        if self.best_weights is not None:
            self.network.set_weights(self.best_weights)

    def save(self, directory: Path, **extra: Any) -> None:
        """Last and best weights and the state (plus ``extra`` keys) into ``directory``."""
        directory = Path(directory)
        self.network.save_weights(str(directory / LAST_WEIGHTS))
        if self.best_weights is not None:
            current = self.network.get_weights()
            self.network.set_weights(self.best_weights)
            self.network.save_weights(str(directory / BEST_WEIGHTS))
            self.network.set_weights(current)
        (directory / STATE_FILE).write_text(json.dumps({**dataclasses.asdict(self.state), **extra}))

    def load(self, directory: Path) -> None:
        """Go on from a checkpoint written by :meth:`save` (optimizer moments included)."""
        directory = Path(directory)
        saved = json.loads((directory / STATE_FILE).read_text())
        self.state = TrainState(
            **{f.name: saved[f.name] for f in dataclasses.fields(TrainState) if f.name in saved}
        )
        self.network.optimizer.build(self.network.trainable_variables)  # so Adam's moments load too
        if (directory / BEST_WEIGHTS).exists():
            self.network.load_weights(str(directory / BEST_WEIGHTS))
            self.best_weights = self.network.get_weights()
        self.network.load_weights(
            str(directory / LAST_WEIGHTS)
        )  # last: its optimizer state is the one to go on from


def fit(
    data: PreparedData,
    model_cfg: ModelConfig,
    *,
    max_epochs: int = 30,
    batch_size: int = 64,
    patience: int = 5,
    seed: int = 0,
    on_epoch: Callable[[int, dict[str, float], Any], None] | None = None,
    restore_best: bool = True,
) -> FitResult:
    """Train with early stopping on validation loss; restore the best weights.

    ``restore_best=False`` keeps the last epoch's weights (retraining for a number of
    epochs chosen earlier, when validation data has joined the training data).

    ``on_epoch(epoch, metrics, network)`` runs after every epoch (checkpoints,
    progress reports).
    """
    import keras

    keras.utils.set_random_seed(seed)
    trainer = Trainer(data, model_cfg, batch_size=batch_size, patience=patience, seed=seed)
    while trainer.state.epoch < max_epochs:
        metrics = trainer.step()
        if on_epoch is not None:
            on_epoch(trainer.state.epoch - 1, metrics, trainer.network)
        if trainer.should_stop:
            break
    if restore_best:
        trainer.restore_best()
    return FitResult(
        network=trainer.network,
        history=trainer.state.history,
        best_epoch=trainer.state.best_epoch,
        stopped_early=trainer.should_stop,
    )


def evaluate(
    network,
    data: PreparedData | StreamedData,
    *,
    split: str = "test",
    aggregate: str = "mean",
    probs: np.ndarray | None = None,
    predicted: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Segment- and track-level scores of ``network`` on one split (``probs``: its segment
    probabilities, when already predicted, for data held in memory; ``predicted``: what
    :func:`predict_split` gave, for either).

    Returns
    -------
    dict
        ``segment_accuracy``, ``track_accuracy`` (the headline), ``track_macro_f1``,
        and the track-level ``per_genre``, ``confusion`` and ``most_confused`` of
        :func:`genre.report.evaluate`, plus ``n_tracks`` and ``n_segments``.
    """
    if predicted is not None:
        probs, y, track = predicted
    elif probs is None:
        probs, y, track = predict_split(network, data, split)
    else:
        y, track = data.y[split], data.track[split]
    tracks, track_probs = segment_to_track(track, probs, aggregate=aggregate)
    track_y = track_labels(track, y, tracks)
    report = evaluate_probs(y_true=track_y, probs=track_probs, labels=data.labels)
    return {
        "split": split,
        "aggregate": aggregate,
        "n_segments": int(len(y)),
        "n_tracks": int(len(tracks)),
        "segment_accuracy": float(np.mean(np.argmax(probs, axis=1) == y)),
        "track_accuracy": float(report["accuracy"]),
        "track_macro_f1": float(report["macro_f1"]),
        **{k: v for k, v in report.items() if k not in ("accuracy", "macro_f1")},
    }


def model_config_from_trial(config: dict[str, Any]) -> ModelConfig:
    """A ``ModelConfig`` from a flat Tune config (unknown keys ignored)."""
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in config.items() if k in known})
