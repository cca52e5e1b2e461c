"""Hyperparameter search with Ray Tune + ASHA, logged to MLflow, ending in a registered model.

:func:`run_search` runs four named phases in order:

1. :func:`validate`: every check a search can make before anything starts; it prepares
   the data once per feature set (split by track, normalisation fitted on train).
   :func:`plan_search` first chooses memory or stream (``--data``): a streamed search
   reads the shards' index alone, and once Ray is up one statistics pass
   (:mod:`genre.searchdata`) gives the normalisation its trials read, stored with it.
2. :func:`search`: the Ray Tune run. Each trial trains one configuration (model kind,
   features, learning rate, batch size, width, dropout) epoch by epoch on the prepared
   data (shared through Ray's object store), reports validation metrics and a
   checkpoint every epoch, and is stopped early by ASHA when it falls behind.
3. :func:`champion`: the best trial's network rebuilt with its best weights, blended and
   calibrated on the validation tracks, evaluated on the test tracks, given its card.
   A streamed search's champion streams too: its refit trains from the shards as the
   trials did, and its predictions are read batch by batch; only the shards' musicnn
   columns are read into memory (:func:`companion_segments`).
4. :func:`genre.tracking.log`: the MLflow calls alone.

All MLflow writes happen in the driver (one parent run for the search, one child run per
trial), so a SQLite backend never sees concurrent writers and trials on other nodes need
no access to the tracking store. The champion is logged as an MLflow Keras model whose
``metadata["genre"]`` is its model card (labels, features, the exact feature config); it
is registered and given the alias ``champion``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ray.tune import Callback

from genre import backend
from genre.card import ModelCard, card_for, check_tracking_scheme, check_tracking_uri
from genre.config import DEFAULT_PRETRAINED, FeatureConfig, SearchSettings
from genre.corrections import LabelCorrections, apply_corrections, read_corrections
from genre.embeddings import describe
from genre.errors import ParameterError
from genre.models import HEAD_KINDS, SEED_KINDS
from genre.posthoc import COMPANION_COLUMNS, PostHoc, fit_posthoc
from genre.refit import refit
from genre.runtime import cluster_gpus, live_nodes
from genre.searchdata import (
    SHUFFLE_BUFFER_BYTES,
    ShardStream,
    load_stats,
    save_stats,
    statistics,
)
from genre.shards import OTHER_MOUNT, SegmentSet, TrackIndex, read_segments, track_index, with_other
from genre.store import FolderLock, filesystem, is_uri
from genre.tracking import (
    Champion,
    MlflowTrialLogger,
    ParentRun,
    SearchOutcome,
    TrialRecord,
    check_model_name,
    end_parent_run,
    log,
    open_experiment,
    register,
    resume_parent_run,
    start_parent_run,
    status_of,
)
from genre.training import (
    BEST_WEIGHTS,
    STATE_FILE,
    PreparedData,
    SearchStats,
    StreamedData,
    Trainer,
    build_network,
    evaluate,
    input_shape_of,
    model_config_from_trial,
    plan_splits,
    prepare,
)
from genre.zeroshot import TagMapping, load_mapping

__all__ = [
    "MARKER",
    "DataChoice",
    "SearchPlan",
    "SearchResult",
    "card_with_posthoc",
    "champion",
    "check_destinations",
    "check_resources",
    "check_search",
    "check_search_name",
    "check_storage",
    "choose_data",
    "default_features",
    "companion_segments",
    "default_models",
    "plan_search",
    "remove_search",
    "run_search",
    "search",
    "streamed_trials_at_once",
    "training_segments",
    "validate",
]


def default_features(kind: str, available: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The features a model kind reads unless told otherwise.

    Seed models read MFCC as the seed projects did; the log-mel models read mel; the
    heads read the pooled musicnn features of every extractor in ``available`` (the
    shards' columns): on real clips the pooled layer beat the penultimate one. The VGG
    taggers' pools are read only where the shards hold no musicnn pool: on GTZAN-mini
    they added nothing a head on musicnn's missed (docs/pretrained.md).

    Raises
    ------
    ParameterError
        A head, and no pooled musicnn features in ``available``.
    """
    if kind in SEED_KINDS:
        return ("mfcc",)
    if kind not in HEAD_KINDS:
        return ("mel",)
    pools = tuple(f for f in available if f.endswith("_pool"))
    preferred = tuple(f for f in pools if f.removesuffix("_pool") in DEFAULT_PRETRAINED)
    pools = preferred or pools
    if not pools:
        raise ParameterError(
            f"model kind {kind} reads pretrained features: extract with "
            "--features ...,musicnn_msd (or musicnn_mtt), or pass --features"
        )
    return pools


def default_models(cfg: FeatureConfig | None) -> tuple[str, ...]:
    """What a search tries unless told otherwise: :class:`SearchSettings`' models, whose
    default features the shards hold, plus the heads when they hold musicnn features."""
    if cfg is None:
        return SearchSettings.models
    models = tuple(
        kind for kind in SearchSettings.models if set(default_features(kind)) <= set(cfg.features)
    )
    return models + (HEAD_KINDS if cfg.extractors else ())


# ----------------------------------------------------------------------------- trial side


def _trainable(
    config: dict[str, Any], datasets: dict[tuple[str, ...], PreparedData], settings: SearchSettings
) -> None:
    """One Tune trial, as Ray's Tune + Keras examples write it: build the model from the
    config, train it an epoch at a time, report validation metrics and a checkpoint each."""
    backend.configure(
        threads=int(settings.cpus_per_trial), mixed_precision=settings.mixed_precision
    )
    import keras
    from ray import tune

    # Trials reuse their actors (see _fit): the previous trial's graphs go first.
    keras.backend.clear_session()
    keras.utils.set_random_seed(settings.seed + int(config.get("trial_seed", 0)))
    data = datasets[tuple(config["features"])]
    trainer = _resumed(lambda: _trainer(config, data, settings), tune.get_checkpoint())
    if settings.trial_memory_mb:
        trainer.cap_memory(settings.trial_memory_mb * 2**20)
    # Checkpoints are written in the search's own scratch folder: a killed trial cannot
    # clean up after itself, the driver removes the folder (see run_search). Made once:
    # a trial still running after an interrupted driver removed it must not bring it back.
    scratch = _scratch(settings)
    scratch.mkdir(parents=True, exist_ok=True)
    while trainer.state.epoch < settings.max_epochs and not trainer.should_stop:
        metrics = trainer.step()
        with tempfile.TemporaryDirectory(dir=scratch) as d:
            trainer.save(Path(d), labels=data.labels, features=list(data.features))
            checkpoint = tune.Checkpoint.from_directory(d)
            tune.report(_epoch_report(trainer, metrics, settings), checkpoint=checkpoint)


def _trainer(config: dict[str, Any], data: PreparedData, settings: SearchSettings) -> Trainer:
    """A fresh trainer for the trial ``config``."""
    return Trainer(
        data,
        model_config_from_trial(config),
        batch_size=int(config["batch_size"]),
        patience=settings.patience,
        seed=settings.seed,
        report_val=True,
    )


def _epoch_report(
    trainer: Trainer, metrics: dict[str, float], settings: SearchSettings
) -> dict[str, Any]:
    """What a trial reports after each epoch: the epoch's metrics, the best so far, where
    it ran, and whether it is done."""
    import ray

    return {
        **metrics,
        "epoch": trainer.state.epoch,
        "best_val_accuracy": trainer.best("val_accuracy"),
        "best_val_track_accuracy": trainer.best("val_track_accuracy"),
        "node_id": ray.get_runtime_context().get_node_id(),
        "done": trainer.should_stop or trainer.state.epoch == settings.max_epochs,
        **({"data_memory_mb": trainer.memory_cap.peak / 2**20} if trainer.memory_cap else {}),
    }


def _resumed(fresh, checkpoint):
    """A trainer from ``fresh()``, gone on from ``checkpoint`` when the trial is resumed.

    A search killed while Tune was replacing a checkpoint can hand back one that is gone
    or torn (Tune deletes the old one before it snapshots its state). The trial then goes
    on from the newest readable checkpoint beside it (local storage), or starts again; it
    says which on stderr (the trial's log).
    """
    from pyarrow import fs as pafs

    if checkpoint is None:
        return fresh()
    candidates = [checkpoint]
    if isinstance(checkpoint.filesystem, pafs.LocalFileSystem):
        handed = Path(checkpoint.path)
        siblings = sorted(handed.parent.glob("checkpoint_*"), reverse=True)
        candidates += [type(checkpoint).from_directory(str(d)) for d in siblings if d != handed]
    for candidate in candidates:
        trainer = fresh()
        try:
            with candidate.as_directory() as d:
                trainer.load(Path(d))
            return trainer
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"checkpoint {candidate.path} cannot be read ({exc})", file=sys.stderr)
    print("no readable checkpoint: the trial starts again", file=sys.stderr)
    return fresh()


# ----------------------------------------------------------------------------- driver side


def _search_space(
    settings: SearchSettings, *, features: dict[str, tuple[str, ...]], gpus: float = 0.0
) -> dict[str, Any]:
    """Tune's param space; ``features``: model kind → the features it reads (a tuple)."""
    from ray import tune

    def features_for(spec: dict) -> tuple[str, ...]:
        return features[spec["config"]["kind"] if "config" in spec else spec["kind"]]

    space = {
        "kind": tune.choice(list(settings.models)),
        "features": tune.sample_from(features_for),
        "learning_rate": tune.loguniform(*settings.learning_rate),
        "batch_size": tune.choice(list(settings.gpu_batch_sizes if gpus else settings.batch_sizes)),
        "width": tune.choice(list(settings.widths)),
        "dropout": tune.uniform(*settings.dropout),
        "trial_seed": tune.randint(0, 10_000),
    }
    if "mlp_head" in settings.models:  # searches without it keep their space (and names)
        space["depth"] = tune.choice([1, 2])
    return space


def _load_state(checkpoint) -> tuple[dict[str, Any], Path]:
    from pyarrow import fs as pafs

    local = checkpoint.filesystem is None or isinstance(checkpoint.filesystem, pafs.LocalFileSystem)
    d = Path(checkpoint.path) if local else Path(checkpoint.to_directory())
    return json.loads((d / STATE_FILE).read_text()), d


@dataclass(frozen=True)
class DataChoice:
    """How a search's trials read their data (:func:`choose_data`), and why: the tune
    summary prints it."""

    mode: str  # "memory" or "stream"
    reason: str

    def line(self) -> str:
        return f"{self.mode}: {self.reason}"


@dataclass(frozen=True)
class SearchPlan:
    """What a search trains on, decided and prepared once by :func:`validate` (or
    :func:`plan_search`).

    Attributes
    ----------
    features : dict
        Model kind → the features it reads (stacked along the bins axis).
    data : dict
        Feature set → its :class:`~genre.training.PreparedData` (in memory) or
        :class:`~genre.training.StreamedData`: every trial of that feature set trains on
        it. A streamed search's are made once Ray is up (:func:`run_search`).
    mapping : TagMapping or None
        The zero-shot mapping the champion is blended with (``None``: no blend).
    segments : SegmentSet or None
        The segments the search trains on: those given to :func:`validate`, with the
        ``--labels`` corrections' genres when there are any (``None``: those given).
    corrections : LabelCorrections or None
        What the ``--labels`` files did (``None``: no ``--labels``), for the summary and
        the champion's card.
    choice : DataChoice or None
        Memory or stream, and why (``None``: in memory, not chosen by :func:`plan_search`).
    index : TrackIndex or None
        A streamed search's tracks; ``None`` in memory.
    stats : dict
        A streamed search's splits per feature set, before the statistics pass.
    """

    features: dict[str, tuple[str, ...]]
    data: dict[tuple[str, ...], PreparedData | StreamedData]
    mapping: TagMapping | None
    segments: SegmentSet | None = None
    corrections: LabelCorrections | None = None
    choice: DataChoice | None = None
    index: TrackIndex | None = None
    stats: dict[tuple[str, ...], SearchStats] = dataclasses.field(default_factory=dict)


def training_segments(settings: SearchSettings) -> SegmentSet:
    """The segments a search trains on: ``settings.shards``, plus every track of
    ``settings.other`` as out-of-taxonomy audio (:func:`genre.shards.with_other`).

    Raises
    ------
    ParameterError
        No readable shards in either folder, or ``--other`` without the shards' features.
    ConfigMismatchError
        ``--other`` was extracted with other settings.
    """
    segments = read_segments(settings.shards)
    return segments if settings.other is None else with_other(segments, settings.other)


def check_search(segments: SegmentSet, settings: SearchSettings) -> SearchPlan:
    """Fail before anything starts when the shards cannot train a model kind of the
    search; else the plan, with the data prepared once per feature set.

    The ``--labels`` files are read and their genres put over the shards' here
    (:mod:`genre.corrections`), before the split.

    Raises
    ------
    ParameterError
        A bad ``--mapping``, a bad ``--labels`` file or a genre the shards do not name,
        missing features, no labels, fewer than two genres, an empty split, or features
        of the wrong form for a kind (heads take pretrained vectors, the others
        ``(frames, bins)`` features).
    """
    mapping = load_mapping(settings.mapping) if settings.blend else None
    corrections = None
    if settings.labels:
        segments, corrections = apply_corrections(segments, *read_corrections(settings.labels))
    if settings.other and not any(str(t).startswith(OTHER_MOUNT) for t in segments.track_id):
        raise ParameterError(
            f"--other {settings.other!r}: its tracks are not in the segments (read them with "
            "genre.tuning.training_segments)"
        )
    features: dict[str, tuple[str, ...]] = {}
    data: dict[tuple[str, ...], PreparedData] = {}
    for kind in settings.models:
        names = features[kind] = settings.features or default_features(kind, segments.cfg.features)
        if names not in data:
            data[names] = prepare(
                segments,
                features=names,
                split=settings.split,
                seed=settings.seed,
                outlier_weight=settings.outlier_weight,
            )
        _check_form(kind, names, data[names].input_shape)
    return SearchPlan(
        features=features, data=data, mapping=mapping, segments=segments, corrections=corrections
    )


def _check_form(kind: str, names: tuple[str, ...], input_shape: tuple[int, ...]) -> None:
    """Refuse features of the wrong form for ``kind``: heads take pretrained vectors, the
    others ``(frames, bins)`` features."""
    if len(input_shape) != (1 if kind in HEAD_KINDS else 2):
        raise ParameterError(
            f"--models {kind} with --features {','.join(names)}: "
            + (
                "a head reads pretrained vectors (musicnn_msd_pool, …)"
                if kind in HEAD_KINDS
                else f"{kind} reads (frames, bins) features (mfcc, chroma, mel)"
            )
        )


def validate(segments: SegmentSet, settings: SearchSettings) -> SearchPlan:
    """Phase 1: every check a search makes before anything starts, and its plan.

    Checks where it will write (:func:`check_destinations`), the tracking server
    (:func:`genre.card.check_tracking_uri`) and that the shards can train each model kind
    (:func:`check_search`). Creates nothing; Ray's resources are checked once Ray is up
    (:func:`check_resources`).

    Returns
    -------
    SearchPlan
        The features of each model kind and the data prepared for them.

    Raises
    ------
    ParameterError
    """
    check_destinations(settings)
    check_tracking_uri(settings.tracking_uri)
    return check_search(segments, settings)


#: ``--data auto`` holds a search in memory when its estimated peak is at most this share of
#: the memory available: the rest is the trials' TensorFlow, Ray and the system's.
COMFORTABLE_SHARE = 0.5


def _available_bytes() -> int:
    """Memory this machine can give without swapping (``MemAvailable``; elsewhere, the
    free physical memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def in_memory_peak(index: TrackIndex, features: dict[str, tuple[str, ...]]) -> int:
    """Bytes a search in memory holds at its peak, estimated from the shards' index.

    The driver reads every feature column of every segment (:func:`training_segments`);
    for each feature set :func:`genre.training.prepare` stacks the labelled segments,
    slices the splits while the stack lives and casts the training split to float64 for
    its normalisation (about 3.4 copies at once), then Ray's object store holds one more
    for the trials: 3.5 copies of each feature set beside the driver's columns.
    """
    n = int(index.segments.sum())
    columns = sum(4 * math.prod(index.cfg.shape(f)) for f in index.cfg.features)
    sets = {tuple(f) for f in features.values()}
    stacked = sum(4 * math.prod(input_shape_of(index.cfg, f)) for f in sets)
    return int(n * (columns + 3.5 * stacked))


def choose_data(
    index: TrackIndex,
    settings: SearchSettings,
    features: dict[str, tuple[str, ...]],
    *,
    available: int | None = None,
) -> DataChoice:
    """Memory or stream for ``settings.data``: ``auto`` picks memory when the estimated
    in-memory peak (:func:`in_memory_peak`) is at most :data:`COMFORTABLE_SHARE` of the
    memory available on this machine (``available`` bytes: measured when ``None``)."""
    peak = in_memory_peak(index, features)
    available = _available_bytes() if available is None else available
    sizes = f"in-memory peak ~{peak / 1e9:.2f} GB, {available / 1e9:.1f} GB available"
    if settings.data != "auto":
        return DataChoice(settings.data, f"--data {settings.data} ({sizes})")
    fits = peak <= COMFORTABLE_SHARE * available
    return DataChoice(
        "memory" if fits else "stream",
        f"auto: {sizes}, {'within' if fits else 'over'} {COMFORTABLE_SHARE:.0%} of it",
    )


def plan_search(settings: SearchSettings) -> tuple[SegmentSet | None, SearchPlan]:
    """Phase 1 as the tune job runs it: read the shards' index, choose memory or stream
    (:func:`choose_data`), and check and plan the search either way before anything starts.

    Returns
    -------
    segments : SegmentSet or None
        In memory: every segment (:func:`training_segments`). Streamed: ``None``, nothing
        read beyond the shards' id columns.
    plan : SearchPlan

    Raises
    ------
    ParameterError, ConfigMismatchError
        As :func:`validate`.
    """
    index = track_index(settings.shards, other=settings.other)
    features = {
        kind: settings.features or default_features(kind, index.cfg.features)
        for kind in settings.models
    }
    choice = choose_data(index, settings, features)
    if choice.mode == "stream" and settings.labels:
        raise ParameterError(
            f"--labels: corrections train searches held in memory only, for now; this one "
            f"streams ({choice.reason}): give --data memory if the collection fits"
        )
    if choice.mode == "memory":
        segments = training_segments(settings)
        return segments, dataclasses.replace(validate(segments, settings), choice=choice)
    check_destinations(settings)
    check_tracking_uri(settings.tracking_uri)
    mapping = load_mapping(settings.mapping) if settings.blend else None
    stats: dict[tuple[str, ...], SearchStats] = {}
    for kind, names in features.items():
        if names not in stats:
            stats[names] = plan_splits(
                index,
                features=names,
                split=settings.split,
                seed=settings.seed,
                outlier_weight=settings.outlier_weight,
            )
        _check_form(kind, names, stats[names].input_shape)
    plan = SearchPlan(
        features=features, data={}, mapping=mapping, choice=choice, index=index, stats=stats
    )
    return None, plan


def _streamed(plan: SearchPlan, settings: SearchSettings, *, path: str) -> SearchPlan:
    """``plan`` with a stream per feature set: the statistics the search stored, or its
    planned splits completed by a pass over the shards (:func:`genre.searchdata.statistics`),
    stored in ``path``."""
    data = {}
    for names in plan.stats:
        stats = load_stats(path, names)
        if stats is None:
            stats = statistics(plan.index, plan.stats[names])
            save_stats(path, stats)
        data[names] = StreamedData(
            stats=stats,
            feature_config=plan.index.cfg.with_features(names),
            source=ShardStream(plan.index, stats, buffer_bytes=_shuffle_buffer(settings)),
            outlier_weight=float(settings.outlier_weight),
        )
    return dataclasses.replace(plan, data=data)


def _shuffle_buffer(settings: SearchSettings) -> int:
    """Bytes of a streamed trial's local shuffle buffer, an eighth of ``--trial-memory`` at
    most: the cap also holds TensorFlow's first step (~130 MiB measured with a small MLP)
    and Ray Data's blocks in flight beside the buffer."""
    cap = settings.trial_memory_mb * 2**20
    return min(SHUFFLE_BUFFER_BYTES, cap // 8) if cap else SHUFFLE_BUFFER_BYTES


def companion_segments(index: TrackIndex, settings: SearchSettings) -> SegmentSet:
    """What a streamed search's champion phase reads into memory: the shards' musicnn
    columns (:data:`genre.posthoc.COMPANION_COLUMNS`, a few kB a segment, for the blend's
    prior and the out-of-taxonomy model) with the tracks' ids and genres; never the
    network's features, which the refit, the calibration and the evaluation stream."""
    columns = [c for c in index.cfg.features if c in COMPANION_COLUMNS]
    segments = read_segments(settings.shards, features=columns)
    return segments if settings.other is None else with_other(segments, settings.other)


#: The file that marks a folder under ``--storage`` as a search's own (see _open_search).
MARKER = "genre_search.json"
#: Seconds a search may go on with trials waiting and none running, when no Ray node can
#: hold a waiting trial any more (nodes left the cluster), before it ends with one line.
_UNSCHEDULABLE_S = 120.0


def check_search_name(name: str | None) -> None:
    """Refuse a ``--name`` that is not a plain folder name: the search's folder is
    ``STORAGE/NAME``, and ``--fresh`` deletes it.

    ``None`` (no ``--name``: derived from the settings) passes.

    Raises
    ------
    ParameterError
        Blank, ``.``, ``..``, or with ``/``, ``\\`` or a NUL byte.
    """
    if name is None:
        return
    if not name.strip() or name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ParameterError(
            f"--name {name!r} must be a plain folder name (not blank, '.' or '..', "
            "no '/' or '\\'): the search lives in STORAGE/NAME"
        )


def _search_path(settings: SearchSettings) -> str:
    """``STORAGE/NAME``: absolute for a local ``--storage``."""
    storage = settings.storage if is_uri(settings.storage) else os.path.abspath(settings.storage)
    return f"{storage.rstrip('/')}/{settings.search_name()}"


def _writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried: ``os.access`` says yes to root
    on a read-only mount); the probe is removed at once."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".genre-probe-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.remove(probe)
    return True


def check_storage(settings: SearchSettings) -> None:
    """Refuse a local ``--storage`` where the search's folder cannot be written, before
    anything is created (object stores are checked by their first write).

    Raises
    ------
    ParameterError
    """
    if is_uri(settings.storage):
        return
    folder = Path(_search_path(settings))
    existing = next(p for p in (folder, *folder.parents) if os.path.lexists(p))
    if not existing.is_dir():
        raise ParameterError(f"--storage {settings.storage!r}: {existing} is not a folder")
    if not _writable(existing):
        raise ParameterError(
            f"--storage {settings.storage!r} is not writable ({existing}): "
            "choose a folder you can write to"
        )


def check_destinations(settings: SearchSettings) -> None:
    """Check where a search will write before anything starts: ``--name``,
    ``--register-as``, the tracking URI's scheme and ``--storage``. Creates nothing.

    Raises
    ------
    ParameterError
    """
    check_search_name(settings.name)
    check_model_name(settings.register_as)
    check_tracking_scheme(settings.tracking_uri)
    check_storage(settings)


def _per_trial(settings: SearchSettings) -> tuple[float, float]:
    """CPUs and GPUs each trial asks Ray for: GPUs only when the cluster has some."""

    return settings.cpus_per_trial, settings.gpus_per_trial if cluster_gpus() > 0 else 0.0


def check_resources(settings: SearchSettings) -> None:
    """Refuse per-trial requests no node of the connected Ray cluster can meet: Tune
    would wait for them forever. Call after Ray is up, before any MLflow run is created
    (does nothing when Ray is not up).

    Raises
    ------
    ParameterError
        ``--cpus-per-trial`` (or ``--gpus-per-trial``, when the cluster has GPUs) above
        what the largest node has.
    """
    import ray

    if not ray.is_initialized():
        return
    cpus, gpus = _per_trial(settings)
    nodes = live_nodes()
    if any(cpus <= c and gpus <= g for c, g in nodes):
        return
    most_cpus = max((c for c, _ in nodes), default=0.0)
    most_gpus = max((g for _, g in nodes), default=0.0)
    raise ParameterError(
        f"--cpus-per-trial={cpus:g}"
        + (f" with --gpus-per-trial={gpus:g}" if gpus else "")
        + f": no Ray node has that much (the largest has {most_cpus:g} CPUs"
        + (f", {most_gpus:g} GPUs" if gpus else "")
        + "); lower it"
        + (" or raise --num-cpus" if cpus > most_cpus else "")
    )


def streamed_trials_at_once(settings: SearchSettings) -> int:
    """How many trials of a streamed search run at once: as many as the cluster's CPUs
    hold with one CPU left over for Ray Data's tasks.

    Ray Data schedules its tasks outside a trial's placement group, and some of them (its
    file listing) ask for a CPU whatever the read asks for: once the trials hold every CPU
    they wait for ever, and so do the trials (Ray's advice for Tune + Data: cap the trials
    with ``max_concurrent_trials``). Call once Ray is up.

    Raises
    ------
    ParameterError
        The cluster has no CPU beside one trial's.
    """
    import ray

    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    at_once = int((cpus - 1) // settings.cpus_per_trial)
    if at_once < 1:
        raise ParameterError(
            f"--data stream with --cpus-per-trial={settings.cpus_per_trial:g}: the cluster has "
            f"{cpus:g} CPUs and Ray Data needs one beside a trial's; lower --cpus-per-trial, "
            "raise --num-cpus or use --data memory"
        )
    return at_once


class _Unschedulable(Callback):
    """End a search whose waiting trials no live node can hold any more (nodes left the
    cluster after :func:`check_resources`): Tune itself only warns, for ever.

    While some trial runs, or a waiting one fits a live node (an autoscaling or busy
    cluster), the search waits as long as it takes.
    """

    def __init__(self, *, cpus: float, gpus: float, limit_s: float = _UNSCHEDULABLE_S):
        self.cpus, self.gpus, self.limit_s = cpus, gpus, limit_s
        self.since: float | None = None

    def on_step_end(self, iteration, trials, **info):
        statuses = {t.status for t in trials}
        if "RUNNING" in statuses or "PENDING" not in statuses:
            self.since = None
            return
        now = time.monotonic()
        if self.since is None or now - self.since < self.limit_s:
            self.since = self.since or now
            return
        if any(self.cpus <= c and self.gpus <= g for c, g in live_nodes()):
            self.since = now  # it fits: the cluster is busy, not short
            return
        raise ParameterError(
            f"no trial could start for {self.limit_s:.0f} s: each asks for {self.cpus:g} CPUs "
            f"and {self.gpus:g} GPUs and no live Ray node has them (did nodes leave?); "
            "re-run the same command to resume once they are back"
        )


@dataclass
class _SearchRun:
    """Where a search lives: its MLflow parent run, its Tune state and its marker file."""

    parent: ParentRun
    name: str
    path: str
    marker: Path | None
    saved: dict[str, Any]


def run_search(
    segments: SegmentSet | None,
    settings: SearchSettings,
    *,
    progress: bool = True,
    plan: SearchPlan | None = None,
) -> SearchOutcome:
    """Run (or resume) a search, log it to MLflow and register the best model: the phases
    :func:`validate`, :func:`search`, :func:`champion` and :func:`genre.tracking.log`.

    A search that ends abnormally (an exception, Ctrl-C) ends its MLflow parent run as
    ``FAILED`` or ``KILLED``; re-running the same command resumes the search in the
    same parent run. A finished search is not run again: with another
    ``settings.register_as`` its champion is registered under that name.

    Parameters
    ----------
    segments : SegmentSet or None
        From :func:`training_segments` (:func:`genre.shards.read_segments` without
        ``--other``). Their ``_other/`` tracks are outlier exposure (``outlier_weight``).
        ``None`` for a streamed search (:func:`plan_search`): its trials and its champion
        stream the shards (:func:`companion_segments`).
    settings : SearchSettings
    progress : bool
        Show Tune's progress table.
    plan : SearchPlan or None
        What :func:`validate` returned for these segments and settings (``None``: it is
        called here).

    Returns
    -------
    SearchOutcome

    Raises
    ------
    ParameterError
        Data that cannot train, unreachable tracking server, no trial finished.
    KeyboardInterrupt
        The search was interrupted (its state is saved: re-run to resume).
    """
    started = time.perf_counter()
    plan = validate(segments, settings) if plan is None else plan
    segments = plan.segments if plan.segments is not None else segments  # corrected labels
    check_resources(settings)
    if plan.index is not None:
        streamed_trials_at_once(settings)  # refused before any run is created
    # One run per search folder: two identical commands at once would share Tune's state
    # and register the champion twice; the second is refused with one line.
    with FolderLock(_search_path(settings), command="jobs.tune"):
        shutil.rmtree(_scratch(settings), ignore_errors=True)  # left by a killed run
        try:
            source = segments if plan.index is None else plan.index
            run = _open_search(source.cfg, _segment_count(source), settings)
            if run.saved.get("status") == "finished":
                return _finished(run, settings)
            parent = run.parent
            trial_runs = MlflowTrialLogger(parent.client, parent.experiment_id, parent.run_id)
            try:
                if plan.index is not None:
                    plan = _streamed(plan, settings, path=run.path)
                found = search(
                    plan, settings, path=run.path, trial_runs=trial_runs, progress=progress
                )
                if plan.index is not None:
                    segments = companion_segments(plan.index, settings)
                best = champion(found, plan, segments, settings, search_name=run.name)
                outcome = log(
                    parent,
                    settings,
                    best,
                    found.trials,
                    name=run.name,
                    path=run.path,
                    trial_runs=trial_runs,
                )
            except BaseException as exc:
                end_parent_run(parent, status_of(exc), trials=trial_runs)
                raise
            outcome.resumed = found.resumed
            outcome.data = plan.choice.line() if plan.choice else "memory"
            _save_marker(run, status="finished", outcome=outcome)
        finally:
            # Trials' checkpoint folders a Ctrl-C or a failure left behind (this node's).
            shutil.rmtree(_scratch(settings), ignore_errors=True)
    outcome.wall_s = time.perf_counter() - started
    return outcome


def _scratch(settings: SearchSettings) -> Path:
    """Where trials on this node write a checkpoint before Tune copies it to storage."""
    return Path(tempfile.gettempdir()) / f"genre-tune-{settings.search_name()}"


def _segment_count(source: SegmentSet | TrackIndex) -> int:
    return len(source) if isinstance(source, SegmentSet) else int(source.segments.sum())


def _open_search(cfg: FeatureConfig, n_segments: int, settings: SearchSettings) -> _SearchRun:
    """The search's experiment and parent run: created, or reopened from its marker."""
    path = _search_path(settings)
    marker = None if is_uri(path) else Path(path) / MARKER
    saved = json.loads(marker.read_text()) if marker is not None and marker.exists() else {}
    run = _SearchRun(
        parent=open_experiment(settings),
        name=settings.search_name(),
        path=path,
        marker=marker,
        saved=saved,
    )
    run.parent.run_id = saved.get("parent_run_id", "")
    if saved.get("status") == "finished":
        return run
    if run.parent.run_id:  # resumed: the same parent run goes on
        resume_parent_run(run.parent, run.parent.run_id)
        return run
    params = {
        k: v for k, v in asdict(settings).items() if k not in ("tracking_uri", "grace_clamped")
    }
    # The folders as a user typed them, not a tuple's repr.
    params.update(
        shards=",".join(settings.shards), feature_config_hash=cfg.hash(), n_segments=n_segments
    )
    start_parent_run(run.parent, name=run.name, params=params)
    try:
        _save_marker(run, status="running")
    except BaseException as exc:  # the parent run must not stay RUNNING
        end_parent_run(run.parent, status_of(exc))
        raise
    return run


def _save_marker(run: _SearchRun, *, status: str, outcome: SearchOutcome | None = None) -> None:
    if run.marker is None:
        return
    run.saved = {"status": status, "parent_run_id": run.parent.run_id}
    if outcome is not None:
        run.saved["outcome"] = asdict(outcome)
    run.marker.parent.mkdir(parents=True, exist_ok=True)
    run.marker.write_text(json.dumps(run.saved, default=str))


def _finished(run: _SearchRun, settings: SearchSettings) -> SearchOutcome:
    """A finished search: report it, registering its champion under a new name if asked."""
    known = {f.name for f in fields(SearchOutcome)}
    outcome = SearchOutcome(
        **{k: v for k, v in run.saved["outcome"].items() if k in known},
    )
    outcome.already_done = True
    wanted = f"models:/{settings.register_as}@{settings.alias}"
    if outcome.model_uri == wanted:
        return outcome
    if not outcome.source_uri:
        raise ParameterError(
            f"search {run.name} finished before this version of genre recorded its model's "
            "source, so it "
            f"cannot register it as {wanted}: run the same command with --fresh"
        )
    version = register(
        run.parent.client,
        outcome.source_uri,
        settings,
        search=run.name,
        test_accuracy=outcome.test["track_accuracy"],
    )
    outcome.registered, outcome.version, outcome.model_uri = settings.register_as, version, wanted
    outcome.reregistered = True
    _save_marker(run, status="finished", outcome=outcome)
    return outcome


@dataclass
class SearchResult:
    """What :func:`search` found: every trial with a readable checkpoint, the best of them
    by validation (track accuracy, then segment accuracy), and whether it resumed."""

    trials: list[TrialRecord]
    best: TrialRecord
    resumed: bool


def search(
    plan: SearchPlan,
    settings: SearchSettings,
    *,
    path: str,
    trial_runs: MlflowTrialLogger,
    progress: bool = True,
) -> SearchResult:
    """Phase 2: run (or resume) the Ray Tune experiment ``path`` (``STORAGE/NAME``).

    Each trial trains on ``plan``'s data for its features, which Ray's object store holds
    once for all trials; ``trial_runs`` mirrors the trials into MLflow as they go.

    Raises
    ------
    ParameterError
        No trial produced a readable checkpoint.
    """
    results, resumed = _fit(plan, settings, path=path, trial_runs=trial_runs, progress=progress)
    trials = _collect_trials(results)
    if not trials:
        raise ParameterError(f"no trial produced a checkpoint; see the trial logs under {path}")
    best = max(trials, key=lambda t: (t.row["val_track_accuracy"], t.row["val_accuracy"]))
    return SearchResult(trials=trials, best=best, resumed=resumed)


def _fit(
    plan: SearchPlan,
    settings: SearchSettings,
    *,
    path: str,
    trial_runs: MlflowTrialLogger,
    progress: bool,
):
    """Run or resume the Tune experiment; return its results and whether it resumed."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    # One checkpoint per trial-epoch forces a snapshot of Tune's (small) experiment state; Tune
    # warns about that on every fast epoch, which buries the progress table.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's own Ctrl-C handler stops the trials and returns as if the search had ended, which
    # would register a half-trained champion; without it Ctrl-C raises KeyboardInterrupt here.
    # Every trial-epoch is checkpointed, so the re-run resumes from the last one.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    cpus, gpus = _per_trial(settings)
    trainable = tune.with_resources(
        # with_parameters puts the prepared data in the object store once; trials read it
        # from there (zero-copy on their node) instead of preparing it again.
        tune.with_parameters(_trainable, datasets=plan.data, settings=settings),
        {"cpu": cpus, "gpu": gpus},
    )
    space = _search_space(settings, features=plan.features, gpus=gpus)
    # A streamed search leaves a CPU to Ray Data (see streamed_trials_at_once).
    at_once = 0 if plan.index is None else streamed_trials_at_once(settings)
    if tune.Tuner.can_restore(path):
        # Tuner.restore unpickles the experiment state under --storage: trusted writers
        # only (README).
        tuner = tune.Tuner.restore(
            path,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            param_space=space,
        )
        return tuner.fit(), True
    if settings.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=settings.max_epochs,
            grace_period=settings.grace_epochs,
            reduction_factor=settings.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    storage, name = path.rsplit("/", 1)
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_accuracy",
            mode="max",
            scheduler=scheduler,
            num_samples=settings.num_samples,
            search_alg=_seeded_search(settings.seed, max_concurrent=at_once),
            # A new trial runs in the actor of a finished one: each actor process pays
            # TensorFlow's import (~6 s of a CPU) and, on a GPU node, CUDA's start once,
            # not once per trial.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            callbacks=[trial_runs, _Unschedulable(cpus=cpus, gpus=gpus)],
            # Two, not one: Tune deletes the older checkpoint before it snapshots its state,
            # so a search killed in between resumes from the one kept (see _resumed).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=1 if progress else 0,
            failure_config=tune.FailureConfig(max_failures=1),
        ),
    )
    return tuner.fit(), False


def _collect_trials(results) -> list[TrialRecord]:
    """Every trial whose last checkpoint can be read, with its row of the trials table."""
    trials: list[TrialRecord] = []
    for result in results:
        if result.checkpoint is None:
            continue
        try:
            state, directory = _load_state(result.checkpoint)
        except (OSError, ValueError) as exc:
            print(
                f"warning: trial {Path(result.path).name} left out: its last checkpoint "
                f"cannot be read ({exc})",
                file=sys.stderr,
            )
            continue
        trials.append(
            TrialRecord(
                trial_id=str(result.metrics.get("trial_id", "")),
                row=_trial_row(result, state),
                state=state,
                directory=directory,
            )
        )
    return trials


def _trial_row(result, state: dict[str, Any]) -> dict[str, Any]:
    config = result.config
    best_epoch = state["best_epoch"]
    return {
        "trial": str(result.metrics.get("trial_id", Path(result.path).name)),
        "node_id": str(result.metrics.get("node_id", "")),
        "kind": config["kind"],
        "features": "+".join(config["features"]),  # as the summary's table shows them
        "learning_rate": round(float(config["learning_rate"]), 6),
        "batch_size": int(config["batch_size"]),
        "width": int(config["width"]),
        "dropout": round(float(config["dropout"]), 3),
        "epochs": int(state["epoch"]),
        "best_epoch": int(best_epoch) + 1,
        "val_accuracy": float(state["history"]["val_accuracy"][best_epoch]),
        "val_track_accuracy": float(state["history"]["val_track_accuracy"][best_epoch]),
        "val_loss": float(state["best_val_loss"]),
        "config": dict(config),
        "history": state["history"],
    }


def _seeded_search(seed: int, *, max_concurrent: int = 0):
    """Tune's random search, seeded; ``max_concurrent`` trials at once (0: as many as fit).
    The cap lives here: Tune ignores ``TuneConfig.max_concurrent_trials`` beside a given
    ``BasicVariantGenerator``."""
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed, max_concurrent=max_concurrent)


def champion(
    found: SearchResult,
    plan: SearchPlan,
    segments: SegmentSet,
    settings: SearchSettings,
    *,
    search_name: str,
) -> Champion:
    """Phase 3: the best trial's configuration trained again on train + val
    (:func:`genre.refit.refit`, ``settings.refit_folds`` > 0), its blend, calibration and
    genre sets fitted on the out-of-fold predictions of those tracks
    (:func:`genre.posthoc.fit_posthoc`), its scores on the test tracks (and out of fold),
    and its model card. With ``refit_folds`` 0: the best trial's network with its best
    weights, fitted on the validation tracks.

    Parameters
    ----------
    found : SearchResult
    plan : SearchPlan
        The plan the search ran: its data and its blend's mapping are used again.
    segments : SegmentSet
        The shards of the search (a streamed search's: :func:`companion_segments`): their
        musicnn columns feed the blend's prior and the out-of-taxonomy model even when the
        network reads other features.
    settings : SearchSettings
    search_name : str
        Recorded in the card.

    Returns
    -------
    Champion
    """
    best = found.best
    data = plan.data[tuple(best.row["config"]["features"])]
    if settings.refit_folds:
        cpus, gpus = _per_trial(settings)
        again = refit(
            data,
            best.row["config"],
            epochs=int(best.row["best_epoch"]),
            folds=settings.refit_folds,
            seed=settings.seed,
            cpus=cpus,
            gpus=gpus,
            mixed_precision=settings.mixed_precision,
            at_once=streamed_trials_at_once(settings) if isinstance(data, StreamedData) else 0,
        )
        network, fitted_on, val_predicted = again.network, again.data, again.val_predicted
        folds, fitted = again.folds, again.describe()
    else:
        network, fitted_on, val_predicted, folds = _rebuild(best, data), data, None, None
        fitted = {"method": "best trial", "trained_on": ["train"], "calibration": "val"}
    post = fit_posthoc(
        network,
        fitted_on,
        segments,
        aggregate="mean",
        mapping=plan.mapping,
        coverage=settings.coverage,
        val_predicted=val_predicted,
        folds=folds,
    )
    test = evaluate(network, fitted_on, split="test", predicted=post.predicted["test"])
    val = evaluate(network, fitted_on, split="val", predicted=post.predicted["val"])
    card = card_for(
        data,  # the splits as the search drew them; "fitted" says what trained the weights
        model_config=best.row["config"],
        training={
            "search": search_name,
            "fitted": fitted,
            "test_track_accuracy": test["track_accuracy"],
            "val_track_accuracy": val["track_accuracy"],
            "test_segment_accuracy": test["segment_accuracy"],
            "trials": len(found.trials),
            **({"review": post.review} if post.review else {}),
        },
    )
    card = dataclasses.replace(card, corrections=plan.corrections)
    return Champion(
        trial=best,
        network=network,
        post=post,
        test=test,
        val=val,
        card=card_with_posthoc(card, post, segments),
        counts=data.counts,
    )


def _rebuild(best: TrialRecord, data: PreparedData):
    """The best trial's network with its best weights."""
    backend.configure()
    # Compiled plainly whatever it trained with: the logged model then holds only Keras's
    # own loss and metric, and loads anywhere (outlier exposure's metric is genre's).
    network = build_network(
        model_config_from_trial(best.row["config"]), data, outlier_exposure=False
    )
    with warnings.catch_warnings():  # the checkpoint's optimizer state is not needed here
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        network.load_weights(str(best.directory / BEST_WEIGHTS))
    return network


def card_with_posthoc(card: ModelCard, post: PostHoc, segments: SegmentSet) -> ModelCard:
    """``card`` with the blend and calibration of ``post``, naming the musicnn weights
    they read (its companions) among its extractors."""
    card = dataclasses.replace(
        card,
        calibration=post.calibration,
        blend=post.blend,
    )
    if card.companions:
        columns = (*card.features, *card.companions)
        card = dataclasses.replace(card, extractor=describe(segments.cfg.with_features(columns)))
    return card


def remove_search(settings: SearchSettings) -> None:
    """Forget a search's Tune state so the same command starts afresh.

    Only the search's own folder ``STORAGE/NAME`` goes, and only when it is one: a folder
    (not a link) that holds this module's marker or Tune's experiment state, and that no
    live run holds. Nothing there: nothing to do.

    Raises
    ------
    ParameterError
        ``--name`` is not a plain name, the folder is not a search's, or a run holds it.
    """
    from pyarrow import fs as pafs
    from ray import tune

    check_search_name(settings.name)
    path = _search_path(settings)
    fs, where = filesystem(path)
    if is_uri(path):
        found = fs.get_file_info(where).type != pafs.FileType.NotFound
        ours = found and tune.Tuner.can_restore(path)
    else:
        found = os.path.lexists(where)
        ours = (
            found
            and not os.path.islink(where)
            and os.path.isdir(where)
            and (os.path.isfile(f"{where}/{MARKER}") or tune.Tuner.can_restore(where))
        )
    if not found:
        return
    if not ours:
        raise ParameterError(
            f"--fresh: {path} is not a search folder (no {MARKER} or Tune experiment state "
            "in it): refusing to delete it; choose another --name or --storage"
        )
    with FolderLock(path, command="jobs.tune --fresh"):  # refuses while a search runs there
        if is_uri(path):
            fs.delete_dir(where)
        else:
            shutil.rmtree(where)
