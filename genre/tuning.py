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

from genre.card import METADATA_KEY, check_tracking_uri
from genre.config import FeatureConfig, SearchSettings
from genre.errors import ParameterError, first_line
from genre.models import HEAD_KINDS, SEED_KINDS
from genre.shards import SegmentSet
from genre.store import is_uri
from genre.tracking import (  # noqa: F401
    _EPOCH_METRICS,
    MlflowTrialLogger,
    SearchOutcome,  # noqa: F401
    _calibration_line,
    _log_champion,
    _log_model,
    _log_search_artifacts,
    _register,
    _trial_artifacts,
)

__all__ = [
    "MODEL_METADATA_KEY",
    "SearchSettings",
    "SearchOutcome",
    "MlflowTrialLogger",
    "check_search",
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
    while trainer.state.epoch < settings.max_epochs and not trainer.should_stop:
        metrics = trainer.step()
        done = trainer.should_stop or trainer.state.epoch == settings.max_epochs
        with tempfile.TemporaryDirectory() as d:
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
    check_search(segments, settings)
    check_tracking_uri(settings.tracking_uri)
    run = _open_search(segments, settings)
    if run.saved.get("status") == "finished":
        return _finished(run, settings)
    try:
        results, callback, resumed = _fit(segments, settings, run, progress=progress)
        trials, best = _collect_trials(results, callback, run)
        outcome = _log_champion(run, settings, segments, trials, best)
    except BaseException as exc:
        _end_parent(run, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    outcome.resumed = resumed
    outcome.wall_s = time.perf_counter() - started
    _save_marker(run, status="finished", outcome=outcome)
    return outcome


def _end_parent(run: _SearchRun, status: str) -> None:
    """Mark the parent run ``status`` on the way out of an interrupted or failed search.

    If the tracking store refuses (a SQLite file another process holds locked, a server
    gone), say so in one line and let the original exception through: the re-run resumes
    the same parent run either way.
    """
    try:
        run.client.set_terminated(run.parent_run_id, status)
    except Exception as exc:  # noqa: BLE001 (the search's own exception matters more)
        print(
            f"warning: could not mark MLflow run {run.parent_run_id} {status}: {first_line(exc)}",
            file=sys.stderr,
        )


def _default_artifact_location(tracking_uri: str) -> str | None:
    """Beside a SQLite database (``<db folder>/mlartifacts``); servers and others decide
    for themselves."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri[len("sqlite:///") :]).expanduser().resolve()
    return (database.parent / "mlartifacts").as_uri()


def _open_search(segments: SegmentSet, settings: SearchSettings) -> _SearchRun:
    """The search's experiment and parent run: created, or reopened from its marker."""
    import mlflow

    name = settings.search_name()
    storage = settings.storage if is_uri(settings.storage) else os.path.abspath(settings.storage)
    path = f"{storage}/{name}"
    marker = None if is_uri(path) else Path(path) / "genre_search.json"
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

    client.log_batch(
        run.parent_run_id,
        params=[
            Param(k, ",".join(map(str, v)) if isinstance(v, tuple) else str(v))
            for k, v in params.items()
        ],
    )
    _save_marker(run, status="running")
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


def _fit(segments: SegmentSet, settings: SearchSettings, run: _SearchRun, *, progress: bool):
    """Run or resume the Tune experiment; return its results, the MLflow callback, and
    whether it resumed."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from genre.runtime import cluster_gpus

    # One checkpoint per trial-epoch forces a snapshot of Tune's (small) experiment state; Tune
    # warns about that on every fast epoch, which buries the progress table.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's own Ctrl-C handler stops the trials and returns as if the search had ended, which
    # would register a half-trained champion; without it Ctrl-C raises KeyboardInterrupt here.
    # Every trial-epoch is checkpointed, so the re-run resumes from the last one.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    gpus = settings.gpus_per_trial if cluster_gpus() > 0 else 0.0
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, segments=segments, settings=settings),
        {"cpu": settings.cpus_per_trial, "gpu": gpus},
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
    callback = MlflowTrialLogger(run.client, run.experiment_id, run.parent_run_id)
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
        return tuner.fit(), callback, True
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
            callbacks=[callback],
            # Two, not one: Tune deletes the older checkpoint before it snapshots its state,
            # so a search killed in between resumes from the one kept (see _resumed).
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=1 if progress else 0,
            failure_config=tune.FailureConfig(max_failures=1),
        ),
    )
    return tuner.fit(), callback, False


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
    """Forget a search's Tune state so the same command starts afresh."""
    storage = settings.storage if is_uri(settings.storage) else os.path.abspath(settings.storage)
    shutil.rmtree(f"{storage}/{settings.search_name()}", ignore_errors=True)
