"""The MLflow side of a search, and nothing else: its parent run, its trial runs, the
champion's model, artifacts and metrics, and the registry.

All of it runs in the search's driver (one process writes to the tracking store, so a
SQLite backend never sees concurrent writers): :func:`open_experiment` and
:func:`start_parent_run` make the search's parent run, :class:`MlflowTrialLogger` mirrors
each trial into a child run while the search runs, and :func:`log` logs what the search
chose (:class:`Champion`, built by :mod:`genre.tuning`) with its model card as metadata and
as ``genre/card.json``, and registers it under a name and alias (:func:`register`)."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune import Callback

from genre.backend import pip_requirements
from genre.calibration import Calibration
from genre.card import CARD_ARTIFACT, METADATA_KEY, ModelCard
from genre.config import SearchSettings, sqlite_path
from genre.corrections import LabelCorrections
from genre.errors import ParameterError, first_line
from genre.posthoc import Blend, PostHoc
from genre.report import (
    classification_report_text,
    plot_confusion,
    plot_histories_side_by_side,
    plot_history,
)

__all__ = [
    "Champion",
    "MlflowTrialLogger",
    "ParentRun",
    "SearchOutcome",
    "TrialRecord",
    "check_model_name",
    "end_parent_run",
    "log",
    "open_experiment",
    "register",
    "resume_parent_run",
    "start_parent_run",
]

_EPOCH_METRICS = (
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "val_track_accuracy",
    "train_segments_per_s",
    "data_memory_mb",  # with --trial-memory: the most its data took so far
)


def _calibration_line(cal: Calibration | None) -> list[str]:
    if cal is None:
        return []
    tracks = cal.conformal.fitted_on if cal.conformal and cal.conformal.fitted_on else None
    lines = [
        f"  calibration (fitted on {cal.n_val_tracks} {tracks or 'validation tracks'}): "
        "temperature "
        f"{cal.temperature:.2f}; test ECE {cal.ece_before:.3f} → {cal.ece_after:.3f}, "
        f"Brier {cal.brier_before:.3f} → {cal.brier_after:.3f}"
    ]
    conformal = cal.conformal
    if conformal is None:
        return [*lines, _threshold_review_line(cal)]
    measured = (
        f"test coverage {conformal.test_coverage:.3f}, mean set size "
        f"{conformal.test_mean_size:.2f} ({conformal.n_test} tracks)"
        if conformal.test_coverage is not None
        else "no test tracks to measure them on"
    )
    return [
        *lines,
        f"  genre sets ({conformal.method}, coverage {conformal.coverage:.2f} from "
        f"{conformal.n} {conformal.fitted_on}): {measured}",
        "  needs review: an empty genre set (none-fits) or one of more than --max-set (2) "
        "genres (ambiguous); label's --min-confidence and --review-domain-shift add more",
    ]


def _review_lines(review: dict[str, Any]) -> list[str]:
    """What label's default review flags on held-out tracks, and the outlier exposure."""
    if not review:
        return []
    line = (
        f"  flagged by that review: {review['test_flagged']:.2f} of the {review['n_test']} "
        "genre test tracks"
    )
    for split in ("val", "test"):
        if f"n_{split}_other" in review:
            line += (
                f"; {review[f'{split}_other_flagged']:.2f} of {review[f'n_{split}_other']} "
                f"{split} _other/ tracks ({review[f'{split}_other_empty']:.2f} none-fits)"
            )
    if "outlier_weight" not in review:
        return [line]
    exposure = (
        f"  outlier exposure: λ {review['outlier_weight']:g} on {review['n_train_other']} "
        "_other/ training tracks"
        if review["outlier_weight"] > 0 and review["n_train_other"]
        else "  outlier exposure: off (λ 0 or no _other/ training tracks)"
    )
    return [line, exposure]


def _threshold_review_line(cal: Calibration) -> str:
    """How a calibration without genre sets flags tracks for review."""
    ood = cal.ood or {}
    return (
        f"  needs review: confidence below {cal.min_confidence:.2f} (validation tracks "
        f"above it were right ≥ {cal.target:.0%} of the time)"
        if cal.min_confidence > 0
        else f"  needs review: no confidence threshold (validation tracks were right "
        f"≥ {cal.target:.0%} of the time at every confidence)"
    ) + (f", or {ood['method']} score above {ood['threshold']:.2f}" if ood else "")


def _blend_lines(blend: Blend | None, notes: list[str]) -> list[str]:
    lines = [f"  {note}" for note in notes]
    if blend is None:
        return lines
    r, w = blend.report, blend.weight
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


def _param_text(value: Any) -> str:
    """A trial's config value as an MLflow param: stacked features as ``mfcc+mel``."""
    return "+".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)


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
                run.info.run_id, params=[Param(k, _param_text(v)) for k, v in config.items()]
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


@dataclass
class ParentRun:
    """A search's MLflow experiment and parent run (``run_id`` empty until started)."""

    client: Any  # mlflow.MlflowClient
    experiment_id: str
    artifacts: str  # the experiment's artifact location
    run_id: str = ""


def _default_artifact_location(tracking_uri: str) -> str | None:
    """Beside a SQLite database (``<db folder>/mlartifacts``); servers and others decide
    for themselves."""
    database = sqlite_path(tracking_uri)
    return None if database is None else (database.parent / "mlartifacts").as_uri()


def open_experiment(settings: SearchSettings) -> ParentRun:
    """The search's experiment (created when new), with no parent run yet."""
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    client = mlflow.MlflowClient(settings.tracking_uri)
    experiment = client.get_experiment_by_name(settings.experiment)
    if experiment is None:
        experiment_id = client.create_experiment(
            settings.experiment, artifact_location=_default_artifact_location(settings.tracking_uri)
        )
        experiment = client.get_experiment(experiment_id)
    return ParentRun(
        client=client,
        experiment_id=experiment.experiment_id,
        artifacts=experiment.artifact_location,
    )


def start_parent_run(parent: ParentRun, *, name: str, params: dict[str, Any]) -> None:
    """Create the search's parent run named ``name`` with its ``params`` (tuples written
    as comma lists); a failure to log them ends the run ``FAILED``."""
    from mlflow.entities import Param

    created = parent.client.create_run(
        parent.experiment_id, run_name=name, tags={"genre.search": name}
    )
    parent.run_id = created.info.run_id
    try:
        parent.client.log_batch(
            parent.run_id,
            params=[
                Param(k, ",".join(map(str, v)) if isinstance(v, tuple) else str(v))
                for k, v in params.items()
            ],
        )
    except BaseException as exc:  # the parent run must not stay RUNNING
        end_parent_run(parent, status_of(exc))
        raise


def resume_parent_run(parent: ParentRun, run_id: str) -> None:
    """Go on in the parent run ``run_id`` of an interrupted search."""
    parent.run_id = run_id
    if parent.client.get_run(run_id).info.status != "RUNNING":
        parent.client.update_run(run_id, status="RUNNING")


def status_of(exc: BaseException) -> str:
    """The status a run ends with when ``exc`` stops it: ``KILLED`` for Ctrl-C."""
    return "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"


def end_parent_run(
    parent: ParentRun, status: str, *, trials: MlflowTrialLogger | None = None
) -> None:
    """Mark the parent run ``status`` on the way out of an interrupted or failed search,
    and the trial runs still open (``trials``) too.

    If the tracking store refuses (a SQLite file another process holds locked, a server
    gone), say so in one line and let the original exception through: the re-run resumes
    the same parent run either way.
    """
    try:
        parent.client.set_terminated(parent.run_id, status)
        if trials is not None:
            trials.end_open_runs(status)
    except Exception as exc:  # noqa: BLE001 (the search's own exception matters more)
        print(
            f"warning: could not mark MLflow run {parent.run_id} {status}: {first_line(exc)}",
            file=sys.stderr,
        )


@dataclass
class TrialRecord:
    """One trial with a readable last checkpoint: its row of the trials table, its saved
    training state (history, validation report) and the checkpoint's folder."""

    trial_id: str
    row: dict[str, Any]
    state: dict[str, Any]
    directory: Path


@dataclass
class Champion:
    """What the search chose: the best trial's network with its best weights, its
    post-hoc fit, its test and validation scores, and its model card."""

    trial: TrialRecord
    network: Any  # keras.Model
    post: PostHoc
    test: dict[str, Any]
    val: dict[str, Any]
    card: ModelCard
    counts: dict[str, Any]


def _trial_artifacts(client, run_id: str, state: dict[str, Any], labels: list[str]) -> None:
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


def register(
    client, source_uri: str, settings: SearchSettings, *, search: str, test_accuracy: float
) -> str:
    """Register the logged model ``source_uri`` as ``settings.register_as``, give it
    ``settings.alias`` and tag it with its test track accuracy; the version."""
    import mlflow

    version = mlflow.register_model(source_uri, settings.register_as, tags={"genre.search": search})
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


def _log_search_artifacts(
    trials: list[dict[str, Any]], best_kind: str, test: dict[str, Any], card
) -> None:
    """Search-level artifacts of the parent run: test report, confusion, curves per model
    type, trials."""
    import mlflow

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
            title=f"test tracks — {best_kind}",
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
    review: dict[str, Any] = field(default_factory=dict)  # genre.posthoc.review_figures
    fitted: dict[str, Any] = field(default_factory=dict)  # the card's training["fitted"]
    corrections: dict[str, Any] | None = None  # the card's, as JSON (LabelCorrections)
    data: str = ""  # how the trials read their data, and why (genre.tuning.DataChoice)

    def _calibration_lines(self) -> list[str]:
        # The outcome keeps the JSON form (it is saved beside the search); read it back typed.
        calibration = Calibration.from_dict(self.calibration) if self.calibration else None
        blend = Blend.from_dict(self.blend) if self.blend else None
        return (
            _blend_lines(blend, self.notes)
            + _calibration_line(calibration)
            + _review_lines(self.review)
        )

    def format(self) -> str:
        """The trials table (best first) and a short summary, as the tune job prints them;
        first a line saying so when the search had finished before this run."""
        if self.reregistered:
            done = [
                f"search {self.name} had already finished: registered its champion as "
                f"{self.model_uri} (version {self.version}) without searching again"
            ]
        elif self.already_done:
            done = [f"search {self.name} already finished (use --fresh to run it again)"]
        else:
            done = []
        fw = max([18, *(len(t["features"]) for t in self.trials)])
        head = (
            f"{'trial':<12} {'model':<16} {'features':<{fw}} {'lr':>8} {'batch':>5} {'width':>5} "
            f"{'drop':>5} "
            f"{'epochs':>6} {'val seg':>7} {'val track':>9}  {'node':<8}"
        )
        lines = [*done, head, "-" * len(head)]
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
            *([f"  data: {self.data}"] if self.data else []),
            *_corrections_lines(self.corrections),
            f"  best: {best['kind']} on {best['features']} (lr {best['learning_rate']:.1e}, "
            f"batch {best['batch_size']}, "
            f"width {best['width']}, dropout {best['dropout']:.2f})",
            *_fitted_lines(self.fitted),
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


def log(
    parent: ParentRun,
    settings: SearchSettings,
    champion: Champion,
    trials: list[TrialRecord],
    *,
    name: str,
    path: str,
    trial_runs: MlflowTrialLogger,
) -> SearchOutcome:
    """Log what a search chose: each trial's artifacts to its run; the champion's model
    (with its card), the search's artifacts and metrics to the parent run; register the
    champion and end the parent run ``FINISHED``.

    Parameters
    ----------
    parent : ParentRun
        Started (or resumed) by :func:`start_parent_run`.
    settings : SearchSettings
    champion : Champion
    trials : list of TrialRecord
        Every trial with a readable checkpoint, the champion's among them.
    name, path : str
        The search's name and where its Tune state lives (``STORAGE/NAME``).
    trial_runs : MlflowTrialLogger
        The callback that made the trials' runs.

    Returns
    -------
    SearchOutcome
    """
    import mlflow

    for trial in trials:
        run_id = trial_runs.run_for(trial.trial_id)
        if run_id:
            _trial_artifacts(parent.client, run_id, trial.state, trial.state["labels"])
    rows = [t.row for t in trials]
    with mlflow.start_run(run_id=parent.run_id):
        info = _log_model(champion.network, champion.card)
        _log_search_artifacts(rows, champion.trial.row["kind"], champion.test, champion.card)
        with tempfile.TemporaryDirectory() as d:
            mlflow.log_artifact(str(champion.post.reliability(Path(d) / "reliability_test.png")))
        mlflow.log_metrics(_champion_metrics(champion, rows))
    accuracy = champion.test["track_accuracy"]
    version = register(parent.client, info.model_uri, settings, search=name, test_accuracy=accuracy)
    parent.client.set_terminated(parent.run_id, "FINISHED")
    post = champion.post
    return SearchOutcome(
        name=name,
        path=path,
        parent_run_id=parent.run_id,
        best={k: v for k, v in champion.trial.row.items() if k != "history"},
        trials=[{k: v for k, v in r.items() if k not in ("history", "config")} for r in rows],
        test={k: champion.test[k] for k in _OUTCOME_TEST_KEYS},
        model_uri=f"models:/{settings.register_as}@{settings.alias}",
        registered=settings.register_as,
        version=version,
        tracking_uri=settings.tracking_uri,
        counts=champion.counts,
        source_uri=info.model_uri,
        artifacts=parent.artifacts,
        calibration=post.calibration.to_dict(),
        blend=post.blend.to_dict() if post.blend else None,
        notes=post.notes,
        review=post.review,
        fitted=champion.card.training.get("fitted", {}),
        corrections=champion.card.corrections.to_dict() if champion.card.corrections else None,
    )


def _corrections_lines(corrections: dict[str, Any] | None) -> list[str]:
    """How many labels came from ``--labels`` files, in a line (none without them)."""
    return [f"  {LabelCorrections.from_dict(corrections).format()}"] if corrections else []


def _fitted_lines(fitted: dict[str, Any]) -> list[str]:
    """How the registered weights were fitted, in a line (none for searches before it)."""
    if fitted.get("method") == "refit":
        return [
            f"  refit on train + val ({fitted['tracks']} tracks, {fitted['epochs']} epochs); "
            f"calibration and genre sets from {fitted['folds']}-fold out-of-fold predictions"
        ]
    if fitted:
        return ["  the best trial's weights (no refit); calibration and genre sets from val"]
    return []


#: The champion's test scores a :class:`SearchOutcome` keeps.
_OUTCOME_TEST_KEYS = (
    "track_accuracy",
    "segment_accuracy",
    "track_macro_f1",
    "n_tracks",
    "n_segments",
    "confusion",
    "most_confused",
    "per_genre",
)


def _champion_metrics(champion: Champion, rows: list[dict[str, Any]]) -> dict[str, float]:
    """The parent run's metrics: calibration, test and validation scores, search size."""
    calibration, test = champion.post.calibration, champion.test
    return {
        "test_ece": calibration.ece_after,
        "test_ece_raw": calibration.ece_before,
        "test_brier": calibration.brier_after,
        "test_brier_raw": calibration.brier_before,
        "temperature": calibration.temperature,
        "min_confidence": calibration.min_confidence,
        "test_track_accuracy": test["track_accuracy"],
        "test_segment_accuracy": test["segment_accuracy"],
        "test_track_macro_f1": test["track_macro_f1"],
        "val_track_accuracy": champion.val["track_accuracy"],
        "trials": len(rows),
        "trial_epochs": sum(r["epochs"] for r in rows),
        **_blend_metrics(champion.post.blend),
        **_set_metrics(calibration.conformal),
        **_review_metrics(champion.post.review),
    }


#: Figures of :func:`genre.posthoc.review_figures` logged as the parent run's metrics.
_REVIEW_METRICS = (
    "test_flagged",
    "outlier_weight",
    *(f"{s}_other_{m}" for s in ("val", "test") for m in ("flagged", "empty", "confidence")),
)


def _review_metrics(review: dict[str, Any]) -> dict[str, float]:
    """``test_flagged``, ``test_other_flagged``, … of the held-out tracks, where measured."""
    return {k: float(review[k]) for k in _REVIEW_METRICS if k in review}


def _set_metrics(conformal) -> dict[str, float]:
    """The genre sets' target coverage, threshold and what they gave on the test tracks."""
    if conformal is None:
        return {}
    metrics = {"set_coverage_target": conformal.coverage}
    if np.isfinite(conformal.threshold):
        metrics["set_threshold"] = conformal.threshold
    if conformal.test_coverage is not None:
        metrics["test_set_coverage"] = conformal.test_coverage
        metrics["test_mean_set_size"] = conformal.test_mean_size
    return metrics


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
