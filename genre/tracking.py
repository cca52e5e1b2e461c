"""The MLflow side of a search: trial runs, artifacts, the champion's calibration and model.

All of it runs in the search's driver (one process writes to the tracking store, so a
SQLite backend never sees concurrent writers): :class:`MlflowTrialLogger` mirrors each
trial into a child run of the search's parent run; :func:`_calibrate` fits the champion's
calibration on the validation tracks; :func:`_log_model` logs the network with its model
card as metadata and as ``genre/card.json``; :func:`_register` registers it under a name
and alias."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune import Callback

from genre.card import METADATA_KEY
from genre.config import SearchSettings

_EPOCH_METRICS = (
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "val_track_accuracy",
    "train_segments_per_s",
)


def _calibration_line(cal: dict[str, Any]) -> list[str]:
    if not cal:
        return []
    ood = cal.get("ood") or {}
    return [
        f"  calibration (fitted on {cal['n_val_tracks']} validation tracks): temperature "
        f"{cal['temperature']:.2f}; test ECE {cal['ece_before']:.3f} → {cal['ece_after']:.3f}, "
        f"Brier {cal['brier_before']:.3f} → {cal['brier_after']:.3f}",
        f"  needs review: confidence below {cal['min_confidence']:.2f} (validation tracks above "
        f"it were right ≥ {cal['target']:.0%} of the time)"
        + (f", or {ood['method']} score above {ood['threshold']:.2f}" if ood else ""),
    ]


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
            filter_string=f"tags.`genre.trial_id` = '{trial_id}' "
            f"and tags.`mlflow.parentRunId` = '{self.parent}'",
        )
        if found:  # a resumed search keeps logging into the same runs
            self.runs[trial_id] = found[0].info.run_id
        elif config is not None:
            run = self.client.create_run(
                self.experiment_id,
                run_name=f"{config['kind']}-{trial_id}",
                tags={
                    "mlflow.parentRunId": self.parent,
                    "genre.trial_id": trial_id,
                    "genre.kind": config["kind"],
                },
            )
            self.runs[trial_id] = run.info.run_id
            from mlflow.entities import Param

            self.client.log_batch(
                run.info.run_id, params=[Param(k, str(v)) for k, v in config.items()]
            )
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
            plot_confusion(
                np.asarray(report["confusion"]),
                labels,
                title="validation (tracks)",
                path=Path(d) / "confusion_val.png",
            )
            payload = {"labels": labels, "best_epoch": state["best_epoch"] + 1, **report}
            (Path(d) / "classification_report.json").write_text(json.dumps(payload, indent=1))
            (Path(d) / "classification_report.txt").write_text(
                classification_report_text(
                    {
                        "accuracy": report["track_accuracy"],
                        "macro_f1": report["track_macro_f1"],
                        **report,
                    }
                )
            )
        client.log_artifacts(run_id, d)


def _register(
    client, source_uri: str, settings: SearchSettings, name: str, test_accuracy: float
) -> str:
    import mlflow

    version = mlflow.register_model(source_uri, settings.register_as, tags={"genre.search": name})
    client.set_registered_model_alias(settings.register_as, settings.alias, version.version)
    client.set_model_version_tag(
        settings.register_as, version.version, "test_track_accuracy", f"{test_accuracy:.4f}"
    )
    return str(version.version)


def _track_probs(network, data, *, split: str, aggregate: str) -> tuple[np.ndarray, np.ndarray]:
    """Uncalibrated track probabilities ``(tracks, classes)`` of one split, and the truth."""
    from genre.report import segment_to_track

    probs = network.predict(data.x[split], batch_size=256, verbose=0)
    tracks, track_probs = segment_to_track(data.track[split], probs, aggregate=aggregate)
    truth = dict(zip(data.track[split], data.y[split], strict=True))
    return track_probs, np.array([truth[t] for t in tracks], dtype=np.int64)


def _calibrate(network, data, *, aggregate: str):
    """Temperature, review threshold and out-of-taxonomy threshold, fitted on the validation
    tracks only (after aggregation); ECE and Brier before/after on the test tracks. Returns
    the :class:`genre.calibration.Calibration` and a function that draws the reliability
    diagram of the test tracks to a path."""
    from genre import calibration as cal

    val_probs, val_y = _track_probs(network, data, split="val", aggregate=aggregate)
    test_probs, test_y = _track_probs(network, data, split="test", aggregate=aggregate)
    fitted = cal.fit_calibration(val_probs, val_y, test_probs=test_probs, test_y=test_y)

    def reliability(path: Path) -> Path:
        scaled = cal.temperature_scale(test_probs, temperature=fitted.temperature)
        return cal.plot_reliability(
            cal.reliability_bins(test_probs, test_y),
            cal.reliability_bins(scaled, test_y),
            path=path,
            title=f"test tracks (T = {fitted.temperature:.2f})",
        )

    return fitted, reliability


def _log_model(network, card):
    """The network as an MLflow Keras model whose metadata is the card, with the card beside it."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from genre.backend import pip_requirements
    from genre.card import CARD_ARTIFACT

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *card.input_shape), "features")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(card.labels)), "probabilities")]),
    )
    info = mlflow.keras.log_model(
        network,
        name="model",
        signature=signature,
        metadata={METADATA_KEY: card.to_metadata()},
        pip_requirements=pip_requirements(),
    )
    with tempfile.TemporaryDirectory() as d:
        folder, filename = CARD_ARTIFACT.rsplit("/", 1)
        (Path(d) / filename).write_text(card.to_json())
        mlflow.MlflowClient().log_model_artifacts(info.model_id, d, artifact_path=folder)
    return info


def _log_search_artifacts(trials: list[dict[str, Any]], best, test: dict[str, Any], card) -> None:
    """Search-level artifacts of the parent run: test report, confusion, curves per model
    type, trials."""
    import mlflow

    from genre.report import classification_report_text, plot_confusion, plot_histories_side_by_side

    best_by_kind: dict[str, dict] = {}
    for row in trials:
        if (
            row["kind"] not in best_by_kind
            or row["val_track_accuracy"] > best_by_kind[row["kind"]]["val_track_accuracy"]
        ):
            best_by_kind[row["kind"]] = row
    labels = list(card.labels)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "test_report.json").write_text(json.dumps(test, indent=1))
        (Path(d) / "test_report.txt").write_text(
            classification_report_text(
                {"accuracy": test["track_accuracy"], "macro_f1": test["track_macro_f1"], **test}
            )
        )
        plot_confusion(
            np.asarray(test["confusion"]),
            labels,
            title=f"test tracks — {best.row['kind']}",
            path=Path(d) / "confusion_test.png",
        )
        plot_histories_side_by_side(
            {k: r["history"] for k, r in sorted(best_by_kind.items())},
            path=Path(d) / "curves_by_model.png",
        )
        (Path(d) / "trials.json").write_text(
            json.dumps(
                [{k: v for k, v in r.items() if k not in ("history", "config")} for r in trials],
                indent=1,
            )
        )
        mlflow.log_artifacts(d)


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
    calibration: dict[str, Any] = field(default_factory=dict)

    def _calibration_lines(self) -> list[str]:
        return _calibration_line(self.calibration)

    def format(self) -> str:
        """The trials table (best first) and a short summary, as the tune job prints them."""
        head = (
            f"{'trial':<12} {'model':<16} {'features':<18} {'lr':>8} {'batch':>5} {'width':>5} "
            f"{'drop':>5} "
            f"{'epochs':>6} {'val seg':>7} {'val track':>9}  {'node':<8}"
        )
        lines = [head, "-" * len(head)]
        for t in sorted(self.trials, key=lambda r: (-r["val_track_accuracy"], -r["val_accuracy"])):
            lines.append(
                f"{t['trial']:<12} {t['kind']:<16} {t['features']:<18} "
                f"{t['learning_rate']:>8.1e} {t['batch_size']:>5} {t['width']:>5} "
                f"{t['dropout']:>5.2f} {t['epochs']:>6} {t['val_accuracy']:>7.3f} "
                f"{t['val_track_accuracy']:>9.3f}  "
                f"{t.get('node_id', '')[:8]:<8}"
            )
        best, test = self.best, self.test
        where = (
            f"open {self.tracking_uri} in a browser"
            if self.tracking_uri.startswith(("http://", "https://"))
            else f"mlflow ui --backend-store-uri {self.tracking_uri}"
        )
        confused = (
            "; ".join(f"{a} → {b}: {n}" for a, b, n in test.get("most_confused", [])[:3]) or "none"
        )
        lines += [
            "",
            f"tune: {len(self.trials)} trials, {sum(t['epochs'] for t in self.trials)} "
            f"trial-epochs in {self.wall_s:.0f} s"
            f"{' (resumed)' if self.resumed else ''}",
            f"  best: {best['kind']} on {best['features']} (lr {best['learning_rate']:.1e}, "
            f"batch {best['batch_size']}, "
            f"width {best['width']}, dropout {best['dropout']:.2f})",
            f"  test ({test['n_tracks']} tracks): track accuracy {test['track_accuracy']:.3f}, "
            f"segment accuracy {test['segment_accuracy']:.3f}, "
            f"macro F1 {test['track_macro_f1']:.3f}; most confused: {confused}",
            *self._calibration_lines(),
            f"  registered {self.registered} version {self.version} as {self.model_uri}",
            f"  runs: {where}   (parent run {self.parent_run_id})",
            f"  artifacts: {self.artifacts or '(the tracking server decides)'}",
            f"  trial state: {self.path}",
        ]
        return "\n".join(lines)
