"""Hyperparameter search with Ray Tune + ASHA, logged to MLflow, ending in a registered model.

Each trial trains one configuration (model kind, learning rate, batch size, width,
dropout) epoch by epoch, reports validation metrics and a checkpoint every epoch,
and is stopped early by ASHA when it falls behind. All MLflow writes happen in the
driver (one parent run for the search, one child run per trial), so a SQLite
backend never sees concurrent writers and trials on other nodes need no access to
the tracking store. Trial artefacts (curves, confusion matrix, classification
report) are made from each trial's last checkpoint once the search ends.

The best trial's network is evaluated on the held-out test split and logged as an
MLflow Keras model whose ``metadata["genre"]`` carries the label list, the feature
names and the exact feature config; it is registered and given the alias
``champion``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ray.tune import Callback

from genre.card import METADATA_KEY, check_tracking_scheme, check_tracking_uri
from genre.config import FeatureConfig, SearchSettings, sqlite_path
from genre.errors import ParameterError, first_line
from genre.models import HEAD_KINDS, SEED_KINDS
from genre.shards import SegmentSet
from genre.store import FolderLock, filesystem, is_uri
from genre.tracking import (
    MlflowTrialLogger,
    SearchOutcome,
    _log_champion,
    _register,
    _trial_artifacts,
    check_model_name,
)

__all__ = [
    "MODEL_METADATA_KEY",
    "SearchSettings",
    "SearchOutcome",
    "MlflowTrialLogger",
    "check_search",
    "check_search_name",
    "check_destinations",
    "check_resources",
    "run_search",
    "remove_search",
    "check_tracking_uri",
    "default_features",
    "default_models",
]

MODEL_METADATA_KEY = METADATA_KEY


def default_features(kind: str, available: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The features a model kind reads unless told otherwise.

    Seed models read MFCC as the seed projects did; the log-mel models read mel; the
    heads read the pooled musicnn features of every extractor in ``available`` (the
    shards' columns): on real clips the pooled layer beat the penultimate one.

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


def _trainable(config: dict[str, Any], segments: SegmentSet, settings: SearchSettings) -> None:
    """One Tune trial: the library's training loop, one report and checkpoint per epoch."""
    from genre import backend

    backend.configure(
        threads=int(settings.cpus_per_trial), mixed_precision=settings.mixed_precision
    )
    import keras
    import ray
    from ray import tune

    from genre.training import Trainer, model_config_from_trial, prepare

    keras.utils.set_random_seed(settings.seed + int(config.get("trial_seed", 0)))
    features = tuple(config["features"].split("+"))
    data = prepare(segments, features=features, split=settings.split, seed=settings.seed)

    def fresh() -> Trainer:
        return Trainer(
            data,
            model_config_from_trial(config),
            batch_size=int(config["batch_size"]),
            patience=settings.patience,
            seed=settings.seed,
            report_val=True,
        )

    trainer = _resumed(fresh, tune.get_checkpoint())
    # Checkpoints are written in the search's own scratch folder: a killed trial cannot
    # clean up after itself, the driver removes the folder (see run_search). Made once:
    # a trial still running after an interrupted driver removed it must not bring it back.
    scratch = _scratch(settings)
    scratch.mkdir(parents=True, exist_ok=True)
    while trainer.state.epoch < settings.max_epochs and not trainer.should_stop:
        metrics = trainer.step()
        done = trainer.should_stop or trainer.state.epoch == settings.max_epochs
        with tempfile.TemporaryDirectory(dir=scratch) as d:
            trainer.save(Path(d), labels=data.labels, features=list(features))
            tune.report(
                {
                    **metrics,
                    "epoch": trainer.state.epoch,
                    "best_val_accuracy": trainer.best("val_accuracy"),
                    "best_val_track_accuracy": trainer.best("val_track_accuracy"),
                    "node_id": ray.get_runtime_context().get_node_id(),
                    "done": done,
                },
                checkpoint=tune.Checkpoint.from_directory(d),
            )


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
    settings: SearchSettings, *, gpus: float = 0.0, available: tuple[str, ...] = ()
) -> dict[str, Any]:
    from ray import tune

    def features_for(spec: dict) -> str:
        kind = spec["config"]["kind"] if "config" in spec else spec["kind"]
        return "+".join(settings.features or default_features(kind, available))

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
    from genre.training import STATE_FILE

    return json.loads((d / STATE_FILE).read_text()), d


def check_search(segments: SegmentSet, settings: SearchSettings) -> None:
    """Fail before anything starts when the shards cannot train a model kind of the search.

    Raises
    ------
    ParameterError
        Missing features, no labels, fewer than two genres, an empty split, or features
        of the wrong form for a kind (heads take pretrained vectors, the others
        ``(frames, bins)`` features).
    """
    from genre.training import prepare

    if settings.blend:
        from genre.zeroshot import load_mapping

        load_mapping(settings.mapping)  # a bad mapping fails here, before Ray starts
    ranks: dict[tuple[str, ...], int] = {}
    for kind in settings.models:
        features = settings.features or default_features(kind, segments.cfg.features)
        if features not in ranks:
            data = prepare(segments, features=features, split=settings.split, seed=settings.seed)
            ranks[features] = len(data.input_shape)
        if ranks[features] != (1 if kind in HEAD_KINDS else 2):
            raise ParameterError(
                f"--models {kind} with --features {','.join(features)}: "
                + (
                    "a head reads pretrained vectors (musicnn_msd_pool, …)"
                    if kind in HEAD_KINDS
                    else f"{kind} reads (frames, bins) features (mfcc, chroma, mel)"
                )
            )


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
    from genre.runtime import cluster_gpus

    return settings.cpus_per_trial, settings.gpus_per_trial if cluster_gpus() > 0 else 0.0


def _nodes() -> list[tuple[float, float]]:
    """``(CPUs, GPUs)`` of each live Ray node."""
    import ray

    return [
        (float(n["Resources"].get("CPU", 0.0)), float(n["Resources"].get("GPU", 0.0)))
        for n in ray.nodes()
        if n.get("Alive")
    ]


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
    nodes = _nodes()
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
        if any(self.cpus <= c and self.gpus <= g for c, g in _nodes()):
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

    client: Any
    experiment_id: str
    artifacts: str
    parent_run_id: str
    name: str
    path: str
    marker: Path | None
    saved: dict[str, Any]


def run_search(
    segments: SegmentSet, settings: SearchSettings, *, progress: bool = True
) -> SearchOutcome:
    """Run (or resume) a search, log it to MLflow and register the best model.

    A search that ends abnormally (an exception, Ctrl-C) ends its MLflow parent run as
    ``FAILED`` or ``KILLED``; re-running the same command resumes the search in the
    same parent run. A finished search is not run again: with another
    ``settings.register_as`` its champion is registered under that name.

    Parameters
    ----------
    segments : SegmentSet
        From :func:`genre.shards.read_segments`.
    settings : SearchSettings
    progress : bool
        Show Tune's progress table.

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
    check_destinations(settings)
    check_search(segments, settings)
    check_tracking_uri(settings.tracking_uri)
    check_resources(settings)
    # One run per search folder: two identical commands at once would share Tune's state
    # and register the champion twice; the second is refused with one line.
    with FolderLock(_search_path(settings), command="jobs.tune"):
        shutil.rmtree(_scratch(settings), ignore_errors=True)  # left by a killed run
        try:
            outcome = _run_locked(segments, settings, progress=progress)
        finally:
            # Trials' checkpoint folders a Ctrl-C or a failure left behind (this node's).
            shutil.rmtree(_scratch(settings), ignore_errors=True)
    if not outcome.already_done:
        outcome.wall_s = time.perf_counter() - started
    return outcome


def _scratch(settings: SearchSettings) -> Path:
    """Where trials on this node write a checkpoint before Tune copies it to storage."""
    return Path(tempfile.gettempdir()) / f"genre-tune-{settings.search_name()}"


def _status_of(exc: BaseException) -> str:
    return "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"


def _run_locked(segments: SegmentSet, settings: SearchSettings, *, progress: bool):
    run = _open_search(segments, settings)
    if run.saved.get("status") == "finished":
        return _finished(run, settings)
    callback = MlflowTrialLogger(run.client, run.experiment_id, run.parent_run_id)
    try:
        results, resumed = _fit(segments, settings, run, callback, progress=progress)
        trials, best = _collect_trials(results, callback, run)
        outcome = _log_champion(run, settings, segments, trials, best)
    except BaseException as exc:
        _end_parent(run, _status_of(exc), trials=callback)
        raise
    outcome.resumed = resumed
    _save_marker(run, status="finished", outcome=outcome)
    return outcome


def _end_parent(run: _SearchRun, status: str, *, trials: MlflowTrialLogger | None = None) -> None:
    """Mark the parent run ``status`` on the way out of an interrupted or failed search,
    and the trial runs still open (``trials``) too.

    If the tracking store refuses (a SQLite file another process holds locked, a server
    gone), say so in one line and let the original exception through: the re-run resumes
    the same parent run either way.
    """
    try:
        run.client.set_terminated(run.parent_run_id, status)
        if trials is not None:
            trials.end_open_runs(status)
    except Exception as exc:  # noqa: BLE001 (the search's own exception matters more)
        print(
            f"warning: could not mark MLflow run {run.parent_run_id} {status}: {first_line(exc)}",
            file=sys.stderr,
        )


def _default_artifact_location(tracking_uri: str) -> str | None:
    """Beside a SQLite database (``<db folder>/mlartifacts``); servers and others decide
    for themselves."""
    database = sqlite_path(tracking_uri)
    return None if database is None else (database.parent / "mlartifacts").as_uri()


def _open_search(segments: SegmentSet, settings: SearchSettings) -> _SearchRun:
    """The search's experiment and parent run: created, or reopened from its marker."""
    import mlflow

    name = settings.search_name()
    storage = settings.storage if is_uri(settings.storage) else os.path.abspath(settings.storage)
    path = f"{storage}/{name}"
    marker = None if is_uri(path) else Path(path) / MARKER
    saved = json.loads(marker.read_text()) if marker is not None and marker.exists() else {}
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = mlflow.MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is None:
        experiment_id = client.create_experiment(
            settings.experiment, artifact_location=_default_artifact_location(settings.tracking_uri)
        )
        experiment = client.get_experiment(experiment_id)
    run = _SearchRun(
        client=client,
        experiment_id=experiment.experiment_id,
        artifacts=experiment.artifact_location,
        parent_run_id=saved.get("parent_run_id", ""),
        name=name,
        path=path,
        marker=marker,
        saved=saved,
    )
    if saved.get("status") == "finished":
        return run
    if run.parent_run_id:  # resumed: the same parent run goes on
        if client.get_run(run.parent_run_id).info.status != "RUNNING":
            client.update_run(run.parent_run_id, status="RUNNING")
        return run
    parent = client.create_run(run.experiment_id, run_name=name, tags={"genre.search": name})
    run.parent_run_id = parent.info.run_id
    params = {
        k: v for k, v in asdict(settings).items() if k not in ("tracking_uri", "grace_clamped")
    }
    params.update(feature_config_hash=segments.cfg.hash(), n_segments=len(segments))
    from mlflow.entities import Param

    try:
        client.log_batch(
            run.parent_run_id,
            params=[
                Param(k, ",".join(map(str, v)) if isinstance(v, tuple) else str(v))
                for k, v in params.items()
            ],
        )
        _save_marker(run, status="running")
    except BaseException as exc:  # the parent run must not stay RUNNING
        _end_parent(run, _status_of(exc))
        raise
    return run


def _save_marker(run: _SearchRun, *, status: str, outcome: SearchOutcome | None = None) -> None:
    if run.marker is None:
        return
    run.saved = {"status": status, "parent_run_id": run.parent_run_id}
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
    version = _register(
        run.client, outcome.source_uri, settings, run.name, outcome.test["track_accuracy"]
    )
    outcome.registered, outcome.version, outcome.model_uri = settings.register_as, version, wanted
    outcome.reregistered = True
    _save_marker(run, status="finished", outcome=outcome)
    return outcome


def _fit(
    segments: SegmentSet,
    settings: SearchSettings,
    run: _SearchRun,
    callback: MlflowTrialLogger,
    *,
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
        tune.with_parameters(_trainable, segments=segments, settings=settings),
        {"cpu": cpus, "gpu": gpus},
    )
    if settings.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=settings.max_epochs,
            grace_period=settings.grace_epochs,
            reduction_factor=settings.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    storage = run.path.rsplit("/", 1)[0]
    if tune.Tuner.can_restore(run.path):
        # Tuner.restore unpickles the experiment state under --storage: trusted writers
        # only (README).
        tuner = tune.Tuner.restore(
            run.path,
            trainable=trainable,
            resume_unfinished=True,
            resume_errored=True,
            param_space=_search_space(settings, gpus=gpus, available=segments.cfg.features),
        )
        return tuner.fit(), True
    tuner = tune.Tuner(
        trainable,
        param_space=_search_space(settings, gpus=gpus, available=segments.cfg.features),
        tune_config=tune.TuneConfig(
            metric="val_accuracy",
            mode="max",
            scheduler=scheduler,
            num_samples=settings.num_samples,
            search_alg=_seeded_search(settings.seed),
        ),
        run_config=tune.RunConfig(
            name=run.name,
            storage_path=storage,
            callbacks=[callback, _Unschedulable(cpus=cpus, gpus=gpus)],
            # Two, not one: Tune deletes the older checkpoint before it snapshots its state,
            # so a search killed in between resumes from the one kept (see _resumed).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=1 if progress else 0,
            failure_config=tune.FailureConfig(max_failures=1),
        ),
    )
    return tuner.fit(), False


@dataclass
class _Best:
    row: dict[str, Any]
    state: dict[str, Any]
    directory: Path


def _collect_trials(
    results, callback: MlflowTrialLogger, run: _SearchRun
) -> tuple[list[dict[str, Any]], _Best]:
    """One row per trial with a checkpoint (artifacts logged to its run); the best by validation."""
    trials: list[dict[str, Any]] = []
    best: _Best | None = None
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
        row = _trial_row(result, state)
        trials.append(row)
        run_id = callback.run_for(str(result.metrics.get("trial_id", "")))
        if run_id:
            _trial_artifacts(run.client, run_id, state, state["labels"])
        key = (row["val_track_accuracy"], row["val_accuracy"])
        if best is None or key > (best.row["val_track_accuracy"], best.row["val_accuracy"]):
            best = _Best(row=row, state=state, directory=directory)
    if best is None:
        raise ParameterError(f"no trial produced a checkpoint; see the trial logs under {run.path}")
    return trials, best


def _trial_row(result, state: dict[str, Any]) -> dict[str, Any]:
    config = result.config
    best_epoch = state["best_epoch"]
    return {
        "trial": str(result.metrics.get("trial_id", Path(result.path).name)),
        "node_id": str(result.metrics.get("node_id", "")),
        "kind": config["kind"],
        "features": config["features"],
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


def _seeded_search(seed: int):
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed)


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
