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
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune import Callback

from genre.card import METADATA_KEY, check_tracking_uri
from genre.config import SearchSettings
from genre.errors import ParameterError
from genre.models import SEED_KINDS
from genre.shards import SegmentSet
from genre.store import is_uri

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
]

MODEL_METADATA_KEY = METADATA_KEY
_STATE = "state.json"
_BEST = "best.weights.h5"
_LAST = "last.weights.h5"
_EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "val_track_accuracy", "train_segments_per_s")


def default_features(kind: str) -> tuple[str, ...]:
    """Seed models read MFCC as the seed projects did; the log-mel models read mel."""
    return ("mfcc",) if kind in SEED_KINDS else ("mel",)


@dataclass
class SearchOutcome:
    """What a finished search produced."""

    name: str
    path: str
    parent_run_id: str
    best: dict[str, Any]
    trials: list[dict[str, Any]]
    test: dict[str, Any]
    model_uri: str
    registered: str
    version: str
    tracking_uri: str
    wall_s: float = 0.0
    resumed: bool = False
    already_done: bool = False
    counts: dict[str, Any] = field(default_factory=dict)
    source_uri: str = ""  # the logged model (models:/m-…) the registered versions point at
    artifacts: str = ""  # the experiment's artifact location
    reregistered: bool = False

    def format(self) -> str:
        """The trials table (best first) and a short summary, as the tune job prints them."""
        head = (f"{'trial':<12} {'model':<16} {'features':<12} {'lr':>8} {'batch':>5} {'width':>5} {'drop':>5} "
                f"{'epochs':>6} {'val seg':>7} {'val track':>9}  {'node':<8}")
        lines = [head, "-" * len(head)]
        for t in sorted(self.trials, key=lambda r: (-r["val_track_accuracy"], -r["val_accuracy"])):
            lines.append(
                f"{t['trial']:<12} {t['kind']:<16} {t['features']:<12} {t['learning_rate']:>8.1e} {t['batch_size']:>5} "
                f"{t['width']:>5} {t['dropout']:>5.2f} {t['epochs']:>6} {t['val_accuracy']:>7.3f} {t['val_track_accuracy']:>9.3f}  "
                f"{t.get('node_id', '')[:8]:<8}"
            )
        best, test = self.best, self.test
        where = (f"open {self.tracking_uri} in a browser" if self.tracking_uri.startswith(("http://", "https://"))
                 else f"mlflow ui --backend-store-uri {self.tracking_uri}")
        confused = "; ".join(f"{a} → {b}: {n}" for a, b, n in test.get("most_confused", [])[:3]) or "none"
        lines += [
            "",
            f"tune: {len(self.trials)} trials, {sum(t['epochs'] for t in self.trials)} trial-epochs in {self.wall_s:.0f} s"
            f"{' (resumed)' if self.resumed else ''}",
            f"  best: {best['kind']} on {best['features']} (lr {best['learning_rate']:.1e}, batch {best['batch_size']}, "
            f"width {best['width']}, dropout {best['dropout']:.2f})",
            f"  test ({test['n_tracks']} tracks): track accuracy {test['track_accuracy']:.3f}, segment accuracy "
            f"{test['segment_accuracy']:.3f}, macro F1 {test['track_macro_f1']:.3f}; most confused: {confused}",
            f"  registered {self.registered} version {self.version} as {self.model_uri}",
            f"  runs: {where}   (parent run {self.parent_run_id})",
            f"  artifacts: {self.artifacts or '(the tracking server decides)'}",
            f"  trial state: {self.path}",
        ]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- trial side


def _configure_threads(cpus: float) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, int(cpus)))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this worker
        pass


def _trainable(config: dict[str, Any], segments: SegmentSet, settings: SearchSettings) -> None:
    """One Tune trial: train epoch by epoch, report and checkpoint each epoch."""
    from ray import tune

    from genre.models import configure_tensorflow
    from genre.training import (
        build_network,
        evaluate,
        model_config_from_trial,
        prepare,
        train_epoch,
    )

    configure_tensorflow()
    _configure_threads(settings.cpus_per_trial)
    import keras
    import ray

    keras.utils.set_random_seed(settings.seed + int(config.get("trial_seed", 0)))
    features = tuple(config["features"].split("+"))
    data = prepare(segments, features=features, split=settings.split, seed=settings.seed)
    model_cfg = model_config_from_trial(config)
    network = build_network(model_cfg, data)
    state = {"epoch": 0, "best_val_loss": float("inf"), "best_epoch": -1, "history": {}, "val_report": None}
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # resumed after an interruption
        with checkpoint.as_directory() as d:
            state = json.loads((Path(d) / _STATE).read_text())
            network.optimizer.build(network.trainable_variables)  # so Adam's moments load too
            best_weights_file = Path(d) / _BEST
            best_weights = _read_weights(network, best_weights_file) if best_weights_file.exists() else None
            network.load_weights(str(Path(d) / _LAST))  # last: its optimizer state is the one to go on from
    else:
        best_weights = None
    for epoch in range(state["epoch"], settings.max_epochs):
        metrics = train_epoch(network, data, batch_size=int(config["batch_size"]), epoch=epoch, seed=settings.seed)
        for key, value in metrics.items():
            state["history"].setdefault(key, []).append(value)
        improved = metrics["val_loss"] < state["best_val_loss"]
        if improved:
            state["best_val_loss"], state["best_epoch"] = metrics["val_loss"], epoch
            best_weights = network.get_weights()
            report = evaluate(network, data, split="val")
            state["val_report"] = {k: report[k] for k in ("track_accuracy", "segment_accuracy", "confusion", "per_genre", "most_confused", "track_macro_f1")}
        state["epoch"] = epoch + 1
        best_val = state["history"]["val_accuracy"][state["best_epoch"]]
        best_track = state["history"]["val_track_accuracy"][state["best_epoch"]]
        with tempfile.TemporaryDirectory() as d:
            network.save_weights(str(Path(d) / _LAST))
            current = network.get_weights()
            network.set_weights(best_weights)
            network.save_weights(str(Path(d) / _BEST))
            network.set_weights(current)
            (Path(d) / _STATE).write_text(json.dumps({**state, "labels": data.labels, "features": list(features)}))
            stop = epoch - state["best_epoch"] >= settings.patience
            tune.report(
                {**metrics, "epoch": epoch + 1, "best_val_accuracy": best_val, "best_val_track_accuracy": best_track,
                 "node_id": ray.get_runtime_context().get_node_id(),
                 "done": stop or epoch + 1 == settings.max_epochs},
                checkpoint=tune.Checkpoint.from_directory(d),
            )
        if stop:
            break


def _read_weights(network, path: Path):
    current = network.get_weights()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        network.load_weights(str(path))
    best = network.get_weights()
    network.set_weights(current)
    return best


# ----------------------------------------------------------------------------- driver side


def _search_space(settings: SearchSettings) -> dict[str, Any]:
    from ray import tune

    def features_for(spec: dict) -> str:
        kind = spec["config"]["kind"] if "config" in spec else spec["kind"]
        return "+".join(settings.features or default_features(kind))

    return {
        "kind": tune.choice(list(settings.models)),
        "features": tune.sample_from(features_for),
        "learning_rate": tune.loguniform(*settings.learning_rate),
        "batch_size": tune.choice(list(settings.batch_sizes)),
        "width": tune.choice(list(settings.widths)),
        "dropout": tune.uniform(*settings.dropout),
        "trial_seed": tune.randint(0, 10_000),
    }


class MlflowTrialLogger(Callback):
    """Mirror each trial into a child MLflow run of the search's parent run, from the driver."""

    def __init__(self, client, experiment_id: str, parent_run_id: str):
        self.client, self.experiment_id, self.parent = client, experiment_id, parent_run_id
        self.runs: dict[str, str] = {}
        self._node_logged: set[str] = set()

    def run_for(self, trial_id: str, config: dict[str, Any] | None = None) -> str | None:
        """The trial's run id; created (with its params) when ``config`` is given."""
        if trial_id in self.runs:
            return self.runs[trial_id]
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`genre.trial_id` = '{trial_id}' and tags.`mlflow.parentRunId` = '{self.parent}'",
        )
        if found:  # a resumed search keeps logging into the same runs
            self.runs[trial_id] = found[0].info.run_id
        elif config is not None:
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"{config['kind']}-{trial_id}",
                tags={"mlflow.parentRunId": self.parent, "genre.trial_id": trial_id, "genre.kind": config["kind"]},
            )
            self.runs[trial_id] = run.info.run_id
            from mlflow.entities import Param

            self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in config.items()])
        return self.runs.get(trial_id)

    def on_trial_start(self, iteration, trials, trial, **info):
        self.run_for(trial.trial_id, trial.config)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric

        run_id = self.run_for(trial.trial_id, trial.config)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(result[k]), now, step) for k in _EPOCH_METRICS if k in result]
        self.client.log_batch(run_id, metrics=metrics)
        if "node_id" in result and trial.trial_id not in self._node_logged:
            self.client.set_tag(run_id, "genre.node_id", result["node_id"])
            self._node_logged.add(trial.trial_id)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.client.set_terminated(self.run_for(trial.trial_id, trial.config), "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self.client.set_terminated(self.run_for(trial.trial_id, trial.config), "FAILED")


def _trial_artifacts(client, run_id: str, state: dict[str, Any], labels: list[str]) -> None:
    from genre.report import classification_report_text, plot_confusion, plot_history

    with tempfile.TemporaryDirectory() as d:
        plot_history(state["history"], title=f"run {run_id[:8]}", path=Path(d) / "curves.png")
        report = state.get("val_report")
        if report:
            plot_confusion(np.asarray(report["confusion"]), labels, title="validation (tracks)", path=Path(d) / "confusion_val.png")
            payload = {"labels": labels, "best_epoch": state["best_epoch"] + 1, **report}
            (Path(d) / "classification_report.json").write_text(json.dumps(payload, indent=1))
            (Path(d) / "classification_report.txt").write_text(
                classification_report_text({"accuracy": report["track_accuracy"], "macro_f1": report["track_macro_f1"], **report})
            )
        client.log_artifacts(run_id, d)


def _load_state(checkpoint) -> tuple[dict[str, Any], Path]:
    from pyarrow import fs as pafs

    local = checkpoint.filesystem is None or isinstance(checkpoint.filesystem, pafs.LocalFileSystem)
    d = Path(checkpoint.path) if local else Path(checkpoint.to_directory())
    return json.loads((d / _STATE).read_text()), d


def check_search(segments: SegmentSet, settings: SearchSettings) -> None:
    """Fail before anything starts when the shards cannot train a model kind of the search.

    Raises
    ------
    ParameterError
        Missing features, no labels, fewer than two genres, an empty split.
    """
    from genre.training import prepare

    for kind in settings.models:
        prepare(segments, features=settings.features or default_features(kind), split=settings.split, seed=settings.seed)


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


def run_search(segments: SegmentSet, settings: SearchSettings, *, progress: bool = True) -> SearchOutcome:
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
        run.client.set_terminated(run.parent_run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    outcome.resumed = resumed
    outcome.wall_s = time.perf_counter() - started
    _save_marker(run, status="finished", outcome=outcome)
    return outcome


def _default_artifact_location(tracking_uri: str) -> str | None:
    """Beside a SQLite database (``<db folder>/mlartifacts``); servers and others decide for themselves."""
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
    run = _SearchRun(client=client, experiment_id=experiment.experiment_id, artifacts=experiment.artifact_location,
                     parent_run_id=saved.get("parent_run_id", ""), name=name, path=path, marker=marker, saved=saved)
    if saved.get("status") == "finished":
        return run
    if run.parent_run_id:  # resumed: the same parent run goes on
        if client.get_run(run.parent_run_id).info.status != "RUNNING":
            client.update_run(run.parent_run_id, status="RUNNING")
        return run
    parent = client.create_run(run.experiment_id, run_name=name, tags={"genre.search": name})
    run.parent_run_id = parent.info.run_id
    params = {k: v for k, v in asdict(settings).items() if k not in ("tracking_uri", "grace_clamped")}
    params.update(feature_config_hash=segments.cfg.hash(), n_segments=len(segments))
    from mlflow.entities import Param

    client.log_batch(run.parent_run_id, params=[
        Param(k, ",".join(map(str, v)) if isinstance(v, tuple) else str(v)) for k, v in params.items()
    ])
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
    outcome = SearchOutcome(**{k: v for k, v in run.saved["outcome"].items() if k in known}, )
    outcome.already_done = True
    wanted = f"models:/{settings.register_as}@{settings.alias}"
    if outcome.model_uri == wanted:
        return outcome
    if not outcome.source_uri:
        raise ParameterError(
            f"search {run.name} finished before this version of genre recorded its model's source, so it "
            f"cannot register it as {wanted}: run the same command with --fresh"
        )
    version = _register(run.client, outcome.source_uri, settings, run.name, outcome.test["track_accuracy"])
    outcome.registered, outcome.version, outcome.model_uri = settings.register_as, version, wanted
    outcome.reregistered = True
    _save_marker(run, status="finished", outcome=outcome)
    return outcome


def _register(client, source_uri: str, settings: SearchSettings, name: str, test_accuracy: float) -> str:
    import mlflow

    version = mlflow.register_model(source_uri, settings.register_as, tags={"genre.search": name})
    client.set_registered_model_alias(settings.register_as, settings.alias, version.version)
    client.set_model_version_tag(settings.register_as, version.version, "test_track_accuracy", f"{test_accuracy:.4f}")
    return str(version.version)


def _fit(segments: SegmentSet, settings: SearchSettings, run: _SearchRun, *, progress: bool):
    """Run or resume the Tune experiment; return its results, the MLflow callback, and whether it resumed."""
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
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=settings.max_epochs,
                                  grace_period=settings.grace_epochs, reduction_factor=settings.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    callback = MlflowTrialLogger(run.client, run.experiment_id, run.parent_run_id)
    storage = run.path.rsplit("/", 1)[0]
    if tune.Tuner.can_restore(run.path):
        # Tuner.restore unpickles the experiment state under --storage: trusted writers only (README).
        tuner = tune.Tuner.restore(run.path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                   param_space=_search_space(settings))
        return tuner.fit(), callback, True
    tuner = tune.Tuner(
        trainable,
        param_space=_search_space(settings),
        tune_config=tune.TuneConfig(metric="val_accuracy", mode="max", scheduler=scheduler,
                                    num_samples=settings.num_samples, search_alg=_seeded_search(settings.seed)),
        run_config=tune.RunConfig(
            name=run.name, storage_path=storage, callbacks=[callback],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1), verbose=1 if progress else 0,
            failure_config=tune.FailureConfig(max_failures=1),
        ),
    )
    return tuner.fit(), callback, False


@dataclass
class _Best:
    row: dict[str, Any]
    state: dict[str, Any]
    directory: Path


def _collect_trials(results, callback: MlflowTrialLogger, run: _SearchRun) -> tuple[list[dict[str, Any]], _Best]:
    """One row per trial with a checkpoint (artifacts logged to its run); the best by validation."""
    trials: list[dict[str, Any]] = []
    best: _Best | None = None
    for result in results:
        if result.checkpoint is None:
            continue
        state, directory = _load_state(result.checkpoint)
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


def _rebuild(best: _Best, segments: SegmentSet, settings: SearchSettings):
    """The best trial's network with its best weights, and the data it was trained on."""
    from genre.models import configure_tensorflow
    from genre.training import build_network, model_config_from_trial, prepare

    configure_tensorflow()
    data = prepare(segments, features=tuple(best.row["features"].split("+")), split=settings.split, seed=settings.seed)
    network = build_network(model_config_from_trial(best.row["config"]), data)
    with warnings.catch_warnings():  # the checkpoint's optimizer state is not needed here
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        network.load_weights(str(best.directory / _BEST))
    return network, data


def _log_champion(run: _SearchRun, settings: SearchSettings, segments: SegmentSet,
                  trials: list[dict[str, Any]], best: _Best) -> SearchOutcome:
    """Evaluate the best trial on the test tracks, log it with its card, register it."""
    import mlflow

    from genre.training import card_for, evaluate

    network, data = _rebuild(best, segments, settings)
    test, val = evaluate(network, data, split="test"), evaluate(network, data, split="val")
    card = card_for(data, model_config=best.row["config"], training={
        "search": run.name, "test_track_accuracy": test["track_accuracy"], "val_track_accuracy": val["track_accuracy"],
        "test_segment_accuracy": test["segment_accuracy"], "trials": len(trials),
    })
    with mlflow.start_run(run_id=run.parent_run_id):
        info = _log_model(network, card)
        _log_search_artifacts(trials, best, test, card)
        mlflow.log_metrics({
            "test_track_accuracy": test["track_accuracy"], "test_segment_accuracy": test["segment_accuracy"],
            "test_track_macro_f1": test["track_macro_f1"], "val_track_accuracy": val["track_accuracy"],
            "trials": len(trials), "trial_epochs": sum(r["epochs"] for r in trials),
        })
    version = _register(run.client, info.model_uri, settings, run.name, test["track_accuracy"])
    run.client.set_terminated(run.parent_run_id, "FINISHED")
    return SearchOutcome(
        name=run.name, path=run.path, parent_run_id=run.parent_run_id,
        best={k: v for k, v in best.row.items() if k != "history"},
        trials=[{k: v for k, v in r.items() if k not in ("history", "config")} for r in trials],
        test={k: test[k] for k in ("track_accuracy", "segment_accuracy", "track_macro_f1", "n_tracks", "n_segments",
                                   "confusion", "most_confused", "per_genre")},
        model_uri=f"models:/{settings.register_as}@{settings.alias}", registered=settings.register_as,
        version=version, tracking_uri=settings.tracking_uri, counts=data.counts, source_uri=info.model_uri,
        artifacts=run.artifacts,
    )


def _log_model(network, card):
    """The network as an MLflow Keras model whose metadata is the card, with the card beside it."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from genre.card import CARD_ARTIFACT, METADATA_KEY
    from genre.models import pip_requirements

    frames, bins = card.input_shape
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, frames, bins), "features")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(card.labels)), "probabilities")]),
    )
    info = mlflow.keras.log_model(
        network, name="model", signature=signature, metadata={METADATA_KEY: card.to_metadata()},
        pip_requirements=pip_requirements(),
    )
    with tempfile.TemporaryDirectory() as d:
        folder, filename = CARD_ARTIFACT.rsplit("/", 1)
        (Path(d) / filename).write_text(card.to_json())
        mlflow.MlflowClient().log_model_artifacts(info.model_id, d, artifact_path=folder)
    return info


def _log_search_artifacts(trials: list[dict[str, Any]], best: _Best, test: dict[str, Any], card) -> None:
    """Search-level artifacts of the parent run: test report, confusion, curves per model type, trials."""
    import mlflow

    from genre.report import classification_report_text, plot_confusion, plot_histories_side_by_side

    best_by_kind: dict[str, dict] = {}
    for row in trials:
        if row["kind"] not in best_by_kind or row["val_track_accuracy"] > best_by_kind[row["kind"]]["val_track_accuracy"]:
            best_by_kind[row["kind"]] = row
    labels = list(card.labels)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "test_report.json").write_text(json.dumps(test, indent=1))
        (Path(d) / "test_report.txt").write_text(
            classification_report_text({"accuracy": test["track_accuracy"], "macro_f1": test["track_macro_f1"], **test})
        )
        plot_confusion(np.asarray(test["confusion"]), labels, title=f"test tracks — {best.row['kind']}",
                       path=Path(d) / "confusion_test.png")
        plot_histories_side_by_side({k: r["history"] for k, r in sorted(best_by_kind.items())},
                                    path=Path(d) / "curves_by_model.png")
        (Path(d) / "trials.json").write_text(
            json.dumps([{k: v for k, v in r.items() if k not in ("history", "config")} for r in trials], indent=1)
        )
        mlflow.log_artifacts(d)


def remove_search(settings: SearchSettings) -> None:
    """Forget a search's Tune state so the same command starts afresh."""
    storage = settings.storage if is_uri(settings.storage) else os.path.abspath(settings.storage)
    shutil.rmtree(f"{storage}/{settings.search_name()}", ignore_errors=True)
