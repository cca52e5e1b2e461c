"""The tune job end to end, through its command line, against a real MLflow tracking server."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from genre.card import ModelCard
from genre.config import SearchSettings
from tests.conftest import (
    REPO,
    free_port,
    main_in_process,
    one_error_line,
    run_job,
    shared_ray_address,
)
from tests.test_corrections import write

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(tuned):
    import mlflow

    mlflow.set_tracking_uri(tuned.uri)  # get_model_info and download_artifacts read the global URI
    return mlflow.MlflowClient(tuned.uri)


@pytest.fixture(scope="module")
def runs(tuned, client):
    experiment = client.get_experiment_by_name("tests")
    all_runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in all_runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in all_runs if "mlflow.parentRunId" in r.data.tags]
    return parents, children


def test_search_is_one_parent_run_with_one_child_run_per_trial(runs):
    parents, children = runs
    assert len(parents) == 1
    assert len(children) == 3
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert all(r.info.status == "FINISHED" for r in [*parents, *children])


def test_each_trial_run_has_params_metrics_per_epoch_and_artifacts(runs, client):
    _, children = runs
    for run in children:
        assert {"kind", "learning_rate", "batch_size", "width", "dropout", "features"} <= set(
            run.data.params
        )
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        epochs = int(max(m.step for m in history))
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, epochs + 1))
        for key in ("loss", "accuracy", "val_loss", "val_track_accuracy", "train_segments_per_s"):
            assert len(client.get_metric_history(run.info.run_id, key)) == epochs, key
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"curves.png", "confusion_val.png", "classification_report.json"} <= names, names
        assert run.data.tags.get("genre.node_id")


def test_trial_classification_report_is_json_with_per_genre_scores(runs, client, tmp_path):
    import mlflow

    _, children = runs
    path = mlflow.artifacts.download_artifacts(
        run_id=children[0].info.run_id,
        artifact_path="classification_report.json",
        dst_path=str(tmp_path),
        tracking_uri=client.tracking_uri,
    )
    report = json.loads(Path(path).read_text())
    assert len(report["labels"]) == 10 and set(report["per_genre"]) == set(report["labels"])
    assert len(report["confusion"]) == 10 and 0.0 <= report["track_accuracy"] <= 1.0


def test_champion_is_a_keras_model_with_its_feature_config_and_labels(tuned, client, tmp_path):
    import mlflow

    version = client.get_model_version_by_alias(tuned.name, "champion")
    uri = f"models:/{tuned.name}@champion"
    info = mlflow.models.get_model_info(uri)
    assert "keras" in info.flavors
    assert info.signature is not None
    card = ModelCard.from_metadata(info.metadata["genre"])
    assert card.features == ("mfcc",) and len(card.labels) == 10
    assert card.feature_config.n_mfcc == 13 and card.feature_config.features == ("mfcc",)
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(tmp_path), tracking_uri=tuned.uri
        )
    )
    assert ModelCard.from_metadata(json.loads((local / "genre" / "card.json").read_text())) == card
    splits = card.split_of()
    assert set(splits.values()) == {"train", "val", "test"} and len(splits) == 40
    assert float(version.tags["test_track_accuracy"]) == pytest.approx(
        card.training["test_track_accuracy"], abs=1e-4
    )


def test_summary_lists_trials_and_says_where_to_look(tuned):
    out = tuned.result.stdout
    assert "tune: 3 trials" in out
    assert "test (10 tracks): track accuracy" in out
    assert f"open {tuned.uri}" in out
    assert f"models:/{tuned.name}@champion" in out
    table = [
        line
        for line in out.splitlines()
        if line[:1].isalnum() and line.split()[1:2] and line.split()[1] in ("cnn", "mlp")
    ]
    assert len(table) == 3


def test_same_command_again_reports_the_finished_search(tuned):
    again = run_job("jobs.tune", *tuned.args, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "already finished" in again.stdout


def test_unreachable_tracking_server_is_one_line(small_shards, tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    result = run_job(
        "jobs.tune",
        str(small_shards),
        "--tracking-uri",
        dead,
        "--storage",
        str(tmp_path),
        timeout=120,
    )
    assert "unreachable" in one_error_line(result)


def test_empty_shards_folder_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_job(
        "jobs.tune",
        str(tmp_path / "empty"),
        "--tracking-uri",
        f"sqlite:///{tmp_path}/m.db",
        timeout=120,
    )
    assert "run the extract job first" in one_error_line(result)


def test_shards_of_another_feature_config_are_one_line(small_corpus, small_shards, tmp_path, capfd):
    import shutil

    import numpy as np

    from genre.config import FeatureConfig
    from genre.extraction import extract_batch

    mixed = tmp_path / "mixed"
    shutil.copytree(small_shards, mixed)
    track = sorted((small_corpus / "blues").iterdir())[0]
    batch = {
        "path": np.array([str(track)], object),
        "track_id": np.array([f"blues/{track.name}"], object),
        "genre": np.array(["blues"], object),
    }
    # A shard of the same track with chroma only, written as extract writes it (no Ray).
    out = extract_batch(batch, cfg=FeatureConfig(features=("chroma",)), output=str(tmp_path / "o"))
    shutil.copy(tmp_path / "o" / out["shard"][0], mixed / "part-0000000000000000.parquet")
    result = main_in_process(
        capfd, "jobs.tune", str(mixed), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"
    )
    assert "feature config" in one_error_line(result)


def test_features_missing_from_the_shards_are_one_line(small_shards, tmp_path, capfd):
    result = main_in_process(
        capfd,
        "jobs.tune",
        str(small_shards),
        "--features",
        "chroma",
        "--tracking-uri",
        f"sqlite:///{tmp_path}/m.db",
    )
    assert "chroma" in one_error_line(result)


def test_unknown_model_kind_is_one_line(small_shards, tmp_path, capfd):
    result = main_in_process(
        capfd,
        "jobs.tune",
        str(small_shards),
        "--models",
        "resnet9000",
        "--tracking-uri",
        f"sqlite:///{tmp_path}/m.db",
    )
    assert "resnet9000" in one_error_line(result)


@pytest.fixture(scope="module")
def beside_db(small_shards, tmp_path_factory) -> SimpleNamespace:
    """One small search as a user in another folder runs it: a SQLite store, ``--max-epochs
    2`` under the default ``--grace-epochs 3``, and two corrections files (``--labels``, the
    second relabels a test track; the first names it with its old genre and a file the
    shards lack). What it printed, and what the assertions need to read it back."""
    from genre.shards import read_segments
    from genre.training import prepare

    root = tmp_path_factory.mktemp("beside-db")
    db = root / "db" / "mlflow.db"
    db.parent.mkdir()
    elsewhere = root / "cwd"
    elsewhere.mkdir()
    shards = read_segments(str(small_shards), features=("mfcc",))
    plain = prepare(shards, features=("mfcc",))
    test_track = sorted(plain.track["test"])[0]
    old = plain.labels[int(plain.y["test"][plain.track["test"] == test_track][0])]
    new = next(g for g in plain.labels if g != old)
    path_of = dict(zip(shards.track_id, shards.path, strict=True))
    first = write(root / "first.csv", (path_of[test_track], old), ("/nowhere/x.wav", old))
    second = write(root / "second.csv", (path_of[test_track], new))
    args = [str(small_shards), "--models", "mlp", "--num-samples", "1", "--max-epochs", "2"]
    args += ["--refit-folds", "0", "--labels", first, "--labels", second]
    args += ["--tracking-uri", f"sqlite:///{db}", "--storage", str(root / "ray")]
    result = subprocess.run(
        [sys.executable, "-m", "jobs.tune", *args, "--num-cpus", "2"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=600,
        env={
            **os.environ,
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            "RAY_ADDRESS": shared_ray_address(),  # the runtime is not what this search tests
        },
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return SimpleNamespace(
        result=result,
        db=db,
        elsewhere=elsewhere,
        folder=small_shards,
        shards=shards,
        labels=(first, second),
        storage=root / "ray",
        test_track=test_track,
        new=new,
    )


def test_max_epochs_below_the_default_grace_period_runs_with_artifacts_beside_the_database(
    beside_db,
):
    """``--max-epochs 2`` with the default ``--grace-epochs 3`` used to crash in ASHAScheduler."""
    result, db, elsewhere = beside_db.result, beside_db.db, beside_db.elsewhere
    assert "using 2" in result.stderr and "AssertionError" not in result.stderr
    assert not (elsewhere / "mlruns").exists() and list(elsewhere.iterdir()) == []
    artifacts = db.parent / "mlartifacts"
    assert artifacts.is_dir() and any(artifacts.rglob("*.keras"))
    assert f"artifacts: {artifacts.as_uri()}" in result.stdout
    assert [p.info.status for p in _parents(f"sqlite:///{db}", "genre")] == ["FINISHED"]


def test_tune_with_labels_trains_on_them_reports_them_and_records_their_hashes(beside_db):
    """Moved from tests/test_corrections.py, on the search above: the corrections are
    reported, recorded in the card with their hashes, and trained and scored on."""
    import mlflow

    from genre import tuning

    out, (first, second) = beside_db.result.stdout, beside_db.labels
    assert "labels: 1 from corrections (files first.csv sha256 " in out
    assert "1 relabelled, 0 added to unlabelled tracks, 0 as the folder said" in out
    assert "1 row(s) matched no track in the shards and were skipped (e.g. /nowhere/x.wav)" in out
    uri = f"sqlite:///{beside_db.db}"
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)  # models:/ URIs are looked up in the global registry
    try:
        info = mlflow.models.get_model_info("models:/genre@champion")
    finally:
        mlflow.set_tracking_uri(before)
    card = ModelCard.from_metadata(info.metadata["genre"])
    files = card.corrections.files
    assert [f.sha256 for f in files] == [
        hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in (first, second)
    ]
    assert [(f.rows, f.applied) for f in files] == [(2, 0), (1, 1)]  # the second file won
    assert card.split_of()[beside_db.test_track] == "test"  # where the shards' label put it
    # What the search trained and scored on: the track with its corrected genre.
    settings = SearchSettings(
        shards=str(beside_db.folder),
        models=("mlp",),
        tracking_uri=uri,
        storage=str(beside_db.storage),
        labels=(first, second),
    )
    plan = tuning.check_search(beside_db.shards, settings)
    data = plan.data[("mfcc",)]
    rows = data.track["test"] == beside_db.test_track
    assert rows.any() and (data.y["test"][rows] == data.labels.index(beside_db.new)).all()


def _runs(uri: str, experiment: str) -> list:
    import mlflow

    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def _parents(uri: str, experiment: str):
    return [r for r in _runs(uri, experiment) if "mlflow.parentRunId" not in r.data.tags]


def _children(uri: str, experiment: str):
    return [r for r in _runs(uri, experiment) if "mlflow.parentRunId" in r.data.tags]


def _checkpoint_since(storage: Path, started: float) -> bool:
    """Whether a trial has written a checkpoint under ``storage`` since ``started``."""
    for checkpoint in storage.glob("*/*/checkpoint_*"):
        try:
            if checkpoint.stat().st_mtime >= started:
                return True
        except FileNotFoundError:  # Tune deleted an older one meanwhile
            continue
    return False


#: ``python -m jobs.tune`` as a terminal starts it. A shell script that runs a command in the
#: background (``make test &``, some CI runners) starts it with SIGINT ignored, Python then
#: installs no KeyboardInterrupt handler, and a Ctrl-C never arrives.
_WITH_CTRL_C = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('jobs.tune', run_name='__main__', alter_sys=True)"
)


def _interrupt_when_training(args: list[str], storage: Path) -> subprocess.CompletedProcess:
    """Run the tune job, Ctrl-C it once a trial has checkpointed an epoch under ``storage``
    (a file check: a reader of the job's SQLite store can hold the lock its commits need);
    what it printed.

    The job writes to files, not pipes: a pipe nobody reads while the job runs fills up
    and stalls it. How the interrupt went is appended to stderr for the assertion messages.
    """
    started = time.time()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-c", _WITH_CTRL_C, *args], cwd=REPO, stdout=out, stderr=err, text=True
        )
        seen = None
        while time.time() < started + 240 and proc.poll() is None:
            if _checkpoint_since(storage, started):
                seen = time.time() - started  # a trial has reported an epoch: under way
                break
            time.sleep(0.5)
        running = proc.poll() is None
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=180)
        out.seek(0)
        err.seek(0)
        how = (
            f"\n[test: training seen after {seen} s; job running when interrupted: {running}; "
            f"job ended after {time.time() - started:.0f} s]"
        )
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read() + how)


def _kill_when_training(args: list[str], storage: Path) -> None:
    """Run the tune job and SIGKILL it (and every process it started) once a trial has
    checkpointed an epoch under ``storage``: a crash, not an interrupt."""
    started = time.time()
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobs.tune", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while time.time() < started + 240 and proc.poll() is None:
        if _checkpoint_since(storage, started):
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(["pkill", "-9", "-f", f"{storage}"], check=False)


def test_an_interrupted_then_killed_search_resumes_its_parent_run_and_finishes(
    small_shards, tmp_path, monkeypatch
):
    """One search, stopped twice: Ctrl-C (the job ends what it started, marks the runs
    KILLED, removes its scratch folders), then SIGKILL while a checkpoint is being replaced
    (nothing is cleaned up); the third run resumes the same parent run and finishes."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage = tmp_path / "ray"
    args = [str(small_shards), "--models", "mlp", "--num-samples", "2", "--max-epochs", "5"]
    args += ["--patience", "100", "--scheduler", "fifo", "--tracking-uri", uri]
    args += ["--experiment", "resume", "--register-as", "genre-resume", "--name", "resume"]
    args += ["--refit-folds", "0"]  # the subject is the search's resume, not what comes after
    args += ["--storage", str(storage), "--num-cpus", "2"]
    # The job's own temp dir: short (Ray's socket paths live under it), and watched alone.
    scratch = Path(tempfile.mkdtemp(prefix="gt", dir="/tmp"))
    try:
        with monkeypatch.context() as env:
            env.setenv("TMPDIR", str(scratch))
            first = _interrupt_when_training(args, storage)
        assert first.returncode == 130, first.stderr[-3000:]
        assert "re-run the same command" in first.stderr
        # the trials running at the interrupt are ended too, and their checkpoint
        # scratch folders are gone (Ray's own session folder stays under "ray")
        assert sorted(p.name for p in scratch.iterdir() if p.name != "ray") == []
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    parents = _parents(uri, "resume")
    assert [p.info.status for p in parents] == ["KILLED"]
    children = _children(uri, "resume")
    assert children and all(c.info.status != "RUNNING" for c in children)
    assert "KILLED" in {c.info.status for c in children}

    _kill_when_training(args, storage)
    assert list(storage.glob("resume/*/checkpoint_*")), "the search must be interrupted part-way"
    # A kill while Tune replaces a checkpoint leaves the one its state names torn or gone:
    # tear each trial's newest, and the trials go on from the checkpoint kept beside it.
    for trial in storage.glob("resume/*/"):
        for checkpoint in sorted(trial.glob("checkpoint_*"))[-1:]:
            (checkpoint / "state.json").unlink(missing_ok=True)

    third = run_job("jobs.tune", *args, timeout=600)
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-2000:]
    assert "(resumed)" in third.stdout
    assert "tune: 2 trials, 10 trial-epochs" in third.stdout
    again = _parents(uri, "resume")
    assert [p.info.run_id for p in again] == [parents[0].info.run_id], (
        "a re-run resumes the same parent run"
    )
    assert [p.info.status for p in again] == ["FINISHED"]


def test_a_store_that_cannot_end_the_parent_run_does_not_hide_the_searchs_error(capsys):
    from genre.tracking import ParentRun, end_parent_run

    class Refusing:
        def set_terminated(self, run_id, status):
            raise RuntimeError("(sqlite3.OperationalError) database is locked\n(details)")

    parent = ParentRun(client=Refusing(), experiment_id="1", artifacts="", run_id="abc")
    end_parent_run(parent, "KILLED")
    assert capsys.readouterr().err == (
        "warning: could not mark MLflow run abc KILLED: "
        "(sqlite3.OperationalError) database is locked\n"
    )


def test_an_exception_in_the_search_ends_the_parent_run_as_failed(
    small_shards, tmp_path, monkeypatch
):
    import mlflow

    from genre import tuning
    from genre.config import SearchSettings
    from genre.shards import read_segments

    def boom(*args, **kwargs):
        raise RuntimeError("a trial runner crashed")

    monkeypatch.setattr(tuning, "search", boom)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    settings = SearchSettings(
        shards=str(small_shards),
        models=("mlp",),
        tracking_uri=uri,
        storage=str(tmp_path / "ray"),
        experiment="boom",
    )
    with pytest.raises(RuntimeError, match="crashed"):
        tuning.run_search(read_segments(str(small_shards)), settings, progress=False)
    parents = _parents(uri, "boom")
    assert [p.info.status for p in parents] == ["FAILED"]
    experiment = mlflow.MlflowClient(uri).get_experiment_by_name("boom")
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()


def test_rerun_with_another_register_as_registers_the_finished_champion(tuned, client):
    args = list(tuned.args)
    args[args.index("--register-as") + 1] = "genre-test-other"
    result = run_job("jobs.tune", *args, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "registered its champion as models:/genre-test-other@champion" in result.stdout
    first = client.get_model_version_by_alias(tuned.name, "champion")
    other = client.get_model_version_by_alias("genre-test-other", "champion")
    assert other.source == first.source, "the same logged model, not a new search"
    assert "tune: 3 trials" in result.stdout


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--max-epochs", "0"], "--max-epochs"),
        (["--num-samples", "-1"], "--num-samples"),
        (["--reduction-factor", "1"], "--reduction-factor"),
        (["--cpus-per-trial", "0"], "--cpus-per-trial"),
        (["--num-cpus", "0"], "--num-cpus"),
        (["--models", "cnn,bogus"], "bogus"),
        (["--refit-folds", "1"], "--refit-folds"),
        (["--trial-memory", "-1"], "--trial-memory"),
    ],
)
def test_bad_search_settings_start_nothing_and_create_nothing(
    small_shards, tmp_path, capfd, flags, needle
):
    db = tmp_path / "mlflow.db"
    result = main_in_process(
        capfd,
        "jobs.tune",
        str(small_shards),
        "--tracking-uri",
        f"sqlite:///{db}",
        "--storage",
        str(tmp_path / "ray"),
        *flags,
    )
    assert needle in one_error_line(result)
    assert "Ray" not in result.stderr and "token" not in result.stderr.lower()
    assert sorted(p.name for p in tmp_path.iterdir()) == [], (
        "nothing is created for a command that exits 2"
    )


def test_the_champion_is_refit_on_train_and_val_and_calibrated_out_of_fold(tuned, client, runs):
    import mlflow

    from genre.calibration import Calibration

    parents, _ = runs
    metrics = client.get_run(parents[0].info.run_id).data.metrics
    assert {"test_ece", "test_ece_raw", "test_brier", "test_brier_raw", "temperature"} <= set(
        metrics
    )
    assert 0.0 <= metrics["test_ece"] <= 1.0 and metrics["temperature"] > 0
    names = {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert "reliability_test.png" in names
    mlflow.set_tracking_uri(tuned.uri)  # other tests in this process point it elsewhere
    metadata = mlflow.models.get_model_info(f"models:/{tuned.name}@champion").metadata["genre"]
    calibration = Calibration.from_dict(metadata["calibration"])  # as the card stores it
    assert calibration.temperature == pytest.approx(metrics["temperature"])
    assert 0.0 <= calibration.min_confidence <= 1.0 and calibration.ood["method"] == "entropy"
    assert (
        "calibration (fitted on" in tuned.result.stdout and "needs review:" in tuned.result.stdout
    )
    # Refit on every labelled track but the test ones; the sets and the calibration fitted on
    # those tracks' out-of-fold predictions, measured on the untouched test tracks.
    fitted, splits = metadata["training"]["fitted"], metadata["splits"]
    pooled = set(splits["train"]) | set(splits["val"])
    assert fitted["method"] == "refit" and fitted["trained_on"] == ["train", "val"]
    assert fitted["tracks"] == len(pooled) and fitted["folds"] >= 2 and fitted["epochs"] >= 1
    assert not pooled & set(splits["test"])
    sets = calibration.conformal
    assert sets.n == calibration.n_val_tracks == len(pooled) and sets.coverage == pytest.approx(0.9)
    assert sets.n_test == len(splits["test"])
    assert metrics["test_set_coverage"] == pytest.approx(sets.test_coverage)
    assert metrics["test_mean_set_size"] == pytest.approx(sets.test_mean_size)
    assert metrics["set_coverage_target"] == pytest.approx(0.9)
    out = tuned.result.stdout
    assert f"refit on train + val ({len(pooled)} tracks, {fitted['epochs']} epochs)" in out
    assert f"from {sets.n} train + val tracks, out of fold): test coverage" in out


def test_default_storage_is_beside_the_sqlite_database_not_the_working_directory(
    tmp_path, monkeypatch
):
    from genre.tuning import _search_path
    from jobs.tune import _parser, _settings

    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    args = _parser().parse_args(["shards", "--models", "mlp"])
    beside = _settings(args, "shards", f"sqlite:///{tmp_path}/db/mlflow.db")
    assert _search_path(beside).startswith(f"{tmp_path / 'db' / 'ray_results'}/")
    served = _settings(args, "shards", "http://127.0.0.1:5000")
    assert _search_path(served).startswith(f"{tmp_path / 'home' / 'ray_results'}/")
    assert list((tmp_path / "cwd").iterdir()) == []
