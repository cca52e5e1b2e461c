"""The MLflow side of a search: trial runs, artifacts, the champion's calibration and model.

All of it runs in the search's driver (one process writes to the tracking store, so a
SQLite backend never sees concurrent writers): :class:`MlflowTrialLogger` mirrors each
trial into a child run of the search's parent run (the champion's blend and calibration
are fitted by :mod:`genre.posthoc`); :func:`_log_model` logs the network with its model
card as metadata and as ``genre/card.json``; :func:`_register` registers it under a name
and alias."""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune import Callback

from genre.card import METADATA_KEY
from genre.config import SearchSettings
from genre.errors import ParameterError
from genre.shards import SegmentSet

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
        (
            f"  needs review: confidence below {cal['min_confidence']:.2f} (validation tracks "
            f"above it were right ≥ {cal['target']:.0%} of the time)"
            if cal["min_confidence"] > 0
            else f"  needs review: no confidence threshold (validation tracks were right "
            f"≥ {cal['target']:.0%} of the time at every confidence)"
        )
        + (f", or {ood['method']} score above {ood['threshold']:.2f}" if ood else ""),
    ]


def _blend_lines(blend: dict[str, Any] | None, notes: list[str]) -> list[str]:
    lines = [f"  {note}" for note in notes]
    if not blend:
        return lines
    r = blend.get("report") or {}
    w = blend["weight"]
    figures = (
        f"validation {r['val_accuracy_head']:.3f} → {r['val_accuracy_blend']:.3f}, "
        f"test {r['test_accuracy_head']:.3f} → {r['test_accuracy_blend']:.3f} "
        f"(zero-shot alone: test {r['test_accuracy_prior']:.3f})"
    )
    if w == 0:
        head = (
            f"  blend with zero-shot {r.get('mapping', '')}: weight 0 (the head alone had the "
            "lowest validation log-loss); "
        )
    else:
        head = f"  blend with zero-shot {r.get('mapping', '')}: weight {w:.2f} (on validation); "
    return [*lines, head + figures]


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

    def end_open_runs(self, status: str) -> None:
        """End the search's trial runs still ``RUNNING`` as ``status`` (``KILLED``,
        ``FAILED``): a search that stops abnormally gets no ``on_trial_complete`` for its
        running trials. Found by their parent, not in :attr:`runs`: a restored Tuner
        calls the callback it pickled, not this one. A resumed search logs into the
        same runs again."""
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{self.parent}' "
            "and attributes.status = 'RUNNING'",
        )
        for run in found:
            self.client.set_terminated(run.info.run_id, status)


def check_model_name(name: str) -> None:
    """Refuse a registered-model name MLflow would refuse after the search: blank, with
    ``/`` or ``:``, or one that reads as another path (``a/../b``, ``..x``).

    Raises
    ------
    ParameterError
    """
    import posixpath

    if (
        not name.strip()
        or any(c in name for c in "/:")
        or posixpath.normpath(name) != name
        or name.startswith("..")
    ):
        raise ParameterError(
            f"--register-as {name!r} is not a registered-model name MLflow accepts "
            "(not blank, no '/' or ':', not '.' or '..')"
        )


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
    blend: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def _calibration_lines(self) -> list[str]:
        return _blend_lines(self.blend, self.notes) + _calibration_line(self.calibration)

    def format(self) -> str:
        """The trials table (best first) and a short summary, as the tune job prints them."""
        fw = max([18, *(len(t["features"]) for t in self.trials)])
        head = (
            f"{'trial':<12} {'model':<16} {'features':<{fw}} {'lr':>8} {'batch':>5} {'width':>5} "
            f"{'drop':>5} "
            f"{'epochs':>6} {'val seg':>7} {'val track':>9}  {'node':<8}"
        )
        lines = [head, "-" * len(head)]
        for t in sorted(self.trials, key=lambda r: (-r["val_track_accuracy"], -r["val_accuracy"])):
            lines.append(
                f"{t['trial']:<12} {t['kind']:<16} {t['features']:<{fw}} "
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


def _rebuild(best, segments: SegmentSet, settings: SearchSettings):
    """The best trial's network with its best weights, and the data it was trained on."""
    from genre import backend
    from genre.training import BEST_WEIGHTS, build_network, model_config_from_trial, prepare

    backend.configure()
    data = prepare(
        segments,
        features=tuple(best.row["features"].split("+")),
        split=settings.split,
        seed=settings.seed,
    )
    network = build_network(model_config_from_trial(best.row["config"]), data)
    with warnings.catch_warnings():  # the checkpoint's optimizer state is not needed here
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        network.load_weights(str(best.directory / BEST_WEIGHTS))
    return network, data


def _log_champion(
    run,
    settings: SearchSettings,
    segments: SegmentSet,
    trials: list[dict[str, Any]],
    best,
) -> SearchOutcome:
    """Evaluate the best trial on the test tracks, fit its blend and calibration on the
    validation tracks (:mod:`genre.posthoc`), log it with its card, register it."""
    import mlflow

    from genre.posthoc import fit_posthoc
    from genre.training import card_for, evaluate

    network, data = _rebuild(best, segments, settings)
    post = fit_posthoc(network, data, segments, aggregate="mean", mapping=_blend_mapping(settings))
    calibration, reliability = post.calibration, post.reliability
    test = evaluate(network, data, split="test", probs=post.probs["test"])
    val = evaluate(network, data, split="val", probs=post.probs["val"])
    card = card_for(
        data,
        model_config=best.row["config"],
        training={
            "search": run.name,
            "test_track_accuracy": test["track_accuracy"],
            "val_track_accuracy": val["track_accuracy"],
            "test_segment_accuracy": test["segment_accuracy"],
            "trials": len(trials),
        },
    )
    card = _with_posthoc(card, post, segments)
    with mlflow.start_run(run_id=run.parent_run_id):
        info = _log_model(network, card)
        _log_search_artifacts(trials, best, test, card)
        with tempfile.TemporaryDirectory() as d:
            mlflow.log_artifact(str(reliability(Path(d) / "reliability_test.png")))
        mlflow.log_metrics(
            {
                "test_ece": calibration.ece_after,
                "test_ece_raw": calibration.ece_before,
                "test_brier": calibration.brier_after,
                "test_brier_raw": calibration.brier_before,
                "temperature": calibration.temperature,
                "min_confidence": calibration.min_confidence,
                "test_track_accuracy": test["track_accuracy"],
                "test_segment_accuracy": test["segment_accuracy"],
                "test_track_macro_f1": test["track_macro_f1"],
                "val_track_accuracy": val["track_accuracy"],
                "trials": len(trials),
                "trial_epochs": sum(r["epochs"] for r in trials),
                **_blend_metrics(post.blend),
            }
        )
    version = _register(run.client, info.model_uri, settings, run.name, test["track_accuracy"])
    run.client.set_terminated(run.parent_run_id, "FINISHED")
    return SearchOutcome(
        name=run.name,
        path=run.path,
        parent_run_id=run.parent_run_id,
        best={k: v for k, v in best.row.items() if k != "history"},
        trials=[{k: v for k, v in r.items() if k not in ("history", "config")} for r in trials],
        test={
            k: test[k]
            for k in (
                "track_accuracy",
                "segment_accuracy",
                "track_macro_f1",
                "n_tracks",
                "n_segments",
                "confusion",
                "most_confused",
                "per_genre",
            )
        },
        model_uri=f"models:/{settings.register_as}@{settings.alias}",
        registered=settings.register_as,
        version=version,
        tracking_uri=settings.tracking_uri,
        counts=data.counts,
        source_uri=info.model_uri,
        artifacts=run.artifacts,
        calibration=calibration.to_dict(),
        blend=post.blend.to_dict() if post.blend else None,
        notes=post.notes,
    )


def _blend_mapping(settings: SearchSettings):
    if not settings.blend:
        return None
    from genre.zeroshot import load_mapping

    return load_mapping(settings.mapping)


def _with_posthoc(card, post, segments: SegmentSet):
    """The card with the blend and calibration, naming the musicnn weights they read."""
    from genre.embeddings import describe

    card = dataclasses.replace(
        card,
        calibration=post.calibration.to_dict(),
        blend=post.blend.to_dict() if post.blend else None,
    )
    if card.companions:
        columns = (*card.features, *card.companions)
        card = dataclasses.replace(card, extractor=describe(segments.cfg.with_features(columns)))
    return card


def _blend_metrics(blend) -> dict[str, float]:
    if blend is None:
        return {}
    r = blend.report
    return {
        "blend_weight": blend.weight,
        "val_track_accuracy_blend": r["val_accuracy_blend"],
        "test_track_accuracy_blend": r["test_accuracy_blend"],
        "test_track_accuracy_zero_shot": r["test_accuracy_prior"],
    }
