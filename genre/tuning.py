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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune import Callback

from genre.config import SearchSettings
from genre.errors import ParameterError
from genre.shards import SegmentSet

__all__ = [
    "MODEL_METADATA_KEY",
    "SearchSettings",
    "SearchOutcome",
    "MlflowTrialLogger",
    "run_search",
    "remove_search",
    "check_tracking_uri",
    "default_features",
]

MODEL_METADATA_KEY = "genre"
_STATE = "state.json"
_BEST = "best.weights.h5"
_LAST = "last.weights.h5"
_EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "val_track_accuracy", "train_segments_per_s")
_SEED_KINDS = ("mlp", "cnn", "lstm", "gru", "cnn_lstm", "cnn_gru")


def default_features(kind: str) -> tuple[str, ...]:
    """Seed models read MFCC as the seed projects did; the log-mel models read mel."""
    return ("mfcc",) if kind in _SEED_KINDS else ("mel",)


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
            f"  trial state: {self.path}",
        ]
        return "\n".join(lines)


def check_tracking_uri(uri: str) -> None:
    """Fail fast, in one line, when an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5) as response:
            if response.status != 200:
                raise ParameterError(f"MLflow tracking server at {uri} answered {response.status} on /health")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ParameterError(f"MLflow tracking server at {uri} is unreachable ({reason})") from exc


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


def run_search(segments: SegmentSet, settings: SearchSettings, *, progress: bool = True) -> SearchOutcome:
    """Run (or resume) a search, log it to MLflow and register the best model.

    Raises
    ------
    ParameterError
        Unknown model kind, bad budgets, unreachable tracking server.
    """
    import mlflow
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from genre.models import MODEL_KINDS, configure_tensorflow
    from genre.runtime import cluster_gpus
    from genre.training import build_network, evaluate, prepare

    started = time.perf_counter()
    unknown = [m for m in settings.models if m not in MODEL_KINDS]
    if unknown or not settings.models:
        raise ParameterError(f"--models: unknown model {','.join(unknown) or '(none)'}; choose from {','.join(MODEL_KINDS)}")
    if settings.num_samples <= 0 or settings.max_epochs <= 0 or settings.grace_epochs <= 0:
        raise ParameterError("--num-samples, --max-epochs and --grace-epochs must be positive integers")
    if settings.reduction_factor < 2:
        raise ParameterError(f"--reduction-factor={settings.reduction_factor} must be at least 2")
    for kind in settings.models:  # fail now, not inside a trial, on data that cannot train
        prepare(segments, features=settings.features or default_features(kind), split=settings.split, seed=settings.seed)
    check_tracking_uri(settings.tracking_uri)

    name = settings.search_name()
    storage = settings.storage if "://" in settings.storage else os.path.abspath(settings.storage)
    path = f"{storage}/{name}"
    marker = Path(path) / "genre_search.json" if "://" not in path else None
    mlflow.set_tracking_uri(settings.tracking_uri)
    client = mlflow.MlflowClient(settings.tracking_uri)
    if marker is not None and marker.exists():
        saved = json.loads(marker.read_text())
        if saved.get("status") == "finished":
            return SearchOutcome(**{**saved["outcome"], "already_done": True})
    experiment = client.get_experiment_by_name(settings.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(settings.experiment)
    saved = json.loads(marker.read_text()) if marker is not None and marker.exists() else {}
    parent_run_id = saved.get("parent_run_id")
    if parent_run_id is None:
        parent = client.create_run(experiment_id, run_name=name, tags={"genre.search": name})
        parent_run_id = parent.info.run_id
        params = {k: v for k, v in asdict(settings).items() if k not in ("tracking_uri",)}
        params.update(feature_config_hash=segments.cfg.hash(), n_segments=len(segments))
        for key, value in params.items():
            client.log_param(parent_run_id, key, ",".join(map(str, value)) if isinstance(value, tuple) else value)
        if marker is not None:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(json.dumps({"status": "running", "parent_run_id": parent_run_id}))

    # One checkpoint per trial-epoch forces a snapshot of Tune's (small) experiment state; Tune
    # warns about that on every fast epoch, which buries the progress table.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    gpus = settings.gpus_per_trial if cluster_gpus() > 0 else 0.0
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, segments=segments, settings=settings),
        {"cpu": settings.cpus_per_trial, "gpu": gpus},
    )
    if settings.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=settings.max_epochs, grace_period=settings.grace_epochs,
                                  reduction_factor=settings.reduction_factor)
    elif settings.scheduler == "fifo":
        scheduler = FIFOScheduler()
    else:
        raise ParameterError(f"scheduler={settings.scheduler!r}: choose asha or fifo")
    callback = MlflowTrialLogger(client, experiment_id, parent_run_id)
    run_config = tune.RunConfig(
        name=name,
        storage_path=storage,
        callbacks=[callback],
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
        verbose=1 if progress else 0,
        failure_config=tune.FailureConfig(max_failures=1),
    )
    resumed = tune.Tuner.can_restore(path)
    if resumed:
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True, param_space=_search_space(settings))
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=_search_space(settings),
            tune_config=tune.TuneConfig(metric="val_accuracy", mode="max", scheduler=scheduler, num_samples=settings.num_samples,
                                        search_alg=_seeded_search(settings.seed)),
            run_config=run_config,
        )
    results = tuner.fit()

    trials = []
    best_row, best_state, best_dir = None, None, None
    for result in results:
        if result.checkpoint is None:
            continue
        state, directory = _load_state(result.checkpoint)
        row = {
            "trial": str(result.metrics.get("trial_id", Path(result.path).name)),
            "node_id": str(result.metrics.get("node_id", "")),
            "kind": result.config["kind"],
            "features": result.config["features"],
            "learning_rate": round(float(result.config["learning_rate"]), 6),
            "batch_size": int(result.config["batch_size"]),
            "width": int(result.config["width"]),
            "dropout": round(float(result.config["dropout"]), 3),
            "epochs": int(state["epoch"]),
            "best_epoch": int(state["best_epoch"]) + 1,
            "val_accuracy": float(state["history"]["val_accuracy"][state["best_epoch"]]),
            "val_track_accuracy": float(state["history"]["val_track_accuracy"][state["best_epoch"]]),
            "val_loss": float(state["best_val_loss"]),
            "config": dict(result.config),
            "history": state["history"],
        }
        trials.append(row)
        run_id = callback.run_for(str(result.metrics.get("trial_id", "")))
        if run_id:
            _trial_artifacts(client, run_id, state, state["labels"])
        if best_row is None or (row["val_track_accuracy"], row["val_accuracy"]) > (best_row["val_track_accuracy"], best_row["val_accuracy"]):
            best_row, best_state, best_dir = row, state, directory
    if best_row is None:
        client.set_terminated(parent_run_id, "FAILED")
        raise ParameterError(f"no trial produced a checkpoint; see the trial logs under {path}")

    configure_tensorflow()
    from genre.training import model_config_from_trial

    data = prepare(segments, features=tuple(best_row["features"].split("+")), split=settings.split, seed=settings.seed)
    network = build_network(model_config_from_trial(best_row["config"]), data)
    with warnings.catch_warnings():  # the checkpoint's optimizer state is not needed here
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        network.load_weights(str(best_dir / _BEST))
    test = evaluate(network, data, split="test")
    val = evaluate(network, data, split="val")
    outcome = _log_champion(
        client, settings, parent_run_id, network, data, segments, best_row, best_state, trials, test, val, name, path
    )
    outcome.resumed = resumed
    outcome.wall_s = time.perf_counter() - started
    if marker is not None:
        marker.write_text(json.dumps({"status": "finished", "parent_run_id": parent_run_id, "outcome": asdict(outcome)}, default=str))
    return outcome


def _seeded_search(seed: int):
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed)


def _log_champion(client, settings, parent_run_id, network, data, segments, best_row, best_state, trials, test, val, name, path) -> SearchOutcome:
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from genre.report import classification_report_text, plot_confusion, plot_histories_side_by_side

    metadata = {
        "labels": data.labels,
        "features": list(data.features),
        "feature_config": data.feature_config.to_dict(),
        "feature_config_hash": data.feature_config.hash(),
        "aggregate": "mean",
        "model_config": best_row["config"],
        "split": data.split_method,
        "test_track_accuracy": test["track_accuracy"],
    }
    frames, bins = data.input_shape
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, frames, bins), "features")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(data.labels)), "probabilities")]),
    )
    import keras
    import tensorflow as tf

    with mlflow.start_run(run_id=parent_run_id):
        info = mlflow.keras.log_model(
            network, name="model", signature=signature, metadata={MODEL_METADATA_KEY: metadata},
            pip_requirements=[f"keras=={keras.__version__}", f"tensorflow-cpu=={tf.__version__}"],
        )
        # The model carries what it needs to be fed correctly, as files beside MLmodel.
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "feature_config.json").write_text(json.dumps(metadata["feature_config"], indent=1))
            (Path(d) / "labels.json").write_text(json.dumps(data.labels))
            (Path(d) / "genre.json").write_text(json.dumps(metadata, indent=1, default=str))
            splits = {str(t): name for name, ids in data.track.items() for t in np.unique(ids)}
            (Path(d) / "splits.json").write_text(json.dumps(dict(sorted(splits.items())), indent=0))
            client.log_model_artifacts(info.model_id, d, artifact_path="genre")
        best_by_kind: dict[str, dict] = {}
        for row in trials:
            if row["kind"] not in best_by_kind or row["val_track_accuracy"] > best_by_kind[row["kind"]]["val_track_accuracy"]:
                best_by_kind[row["kind"]] = row
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "feature_config.json").write_text(json.dumps(metadata["feature_config"], indent=1))
            (Path(d) / "labels.json").write_text(json.dumps(data.labels))
            (Path(d) / "test_report.json").write_text(json.dumps(test, indent=1))
            (Path(d) / "test_report.txt").write_text(classification_report_text({"accuracy": test["track_accuracy"], "macro_f1": test["track_macro_f1"], **test}))
            plot_confusion(np.asarray(test["confusion"]), data.labels, title=f"test tracks — {best_row['kind']}", path=Path(d) / "confusion_test.png")
            plot_histories_side_by_side({k: r["history"] for k, r in sorted(best_by_kind.items())}, path=Path(d) / "curves_by_model.png")
            (Path(d) / "trials.json").write_text(json.dumps([{k: v for k, v in r.items() if k not in ("history", "config")} for r in trials], indent=1))
            mlflow.log_artifacts(d)
        mlflow.log_metrics({
            "test_track_accuracy": test["track_accuracy"], "test_segment_accuracy": test["segment_accuracy"],
            "test_track_macro_f1": test["track_macro_f1"], "val_track_accuracy": val["track_accuracy"],
            "trials": len(trials), "trial_epochs": sum(r["epochs"] for r in trials),
        })
    version = mlflow.register_model(info.model_uri, settings.register_as, tags={"genre.search": name})
    client.set_registered_model_alias(settings.register_as, settings.alias, version.version)
    client.set_model_version_tag(settings.register_as, version.version, "test_track_accuracy", f"{test['track_accuracy']:.4f}")
    client.set_terminated(parent_run_id, "FINISHED")
    return SearchOutcome(
        name=name, path=path, parent_run_id=parent_run_id,
        best={k: v for k, v in best_row.items() if k != "history"},
        trials=[{k: v for k, v in r.items() if k not in ("history", "config")} for r in trials],
        test={k: test[k] for k in ("track_accuracy", "segment_accuracy", "track_macro_f1", "n_tracks", "n_segments", "confusion", "most_confused", "per_genre")},
        model_uri=f"models:/{settings.register_as}@{settings.alias}", registered=settings.register_as, version=str(version.version),
        tracking_uri=settings.tracking_uri, counts=data.counts,
    )


def remove_search(settings: SearchSettings) -> None:
    """Forget a search's Tune state so the same command starts afresh."""
    storage = settings.storage if "://" in settings.storage else os.path.abspath(settings.storage)
    shutil.rmtree(f"{storage}/{settings.search_name()}", ignore_errors=True)
