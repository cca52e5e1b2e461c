"""The label job end to end, through its command line.

With the model the session's search registered.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from genre.card import ModelCard
from tests.conftest import (
    FORMATS,
    REPO,
    free_port,
    main_in_process,
    one_error_line,
    run_job,
    tone,
    write_audio,
)
from tests.test_failures import make_bad_files

pytestmark = pytest.mark.slow


def _results(out: Path):
    return pq.read_table(sorted(str(p) for p in out.glob("part-*.parquet"))).to_pandas()


@pytest.fixture(scope="module")
def champion(tuned):
    return ["--model", f"models:/{tuned.name}@champion", "--tracking-uri", tuned.uri]


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """Every accepted format, odd names, a 10-minute track and one bad file of every kind."""
    root = tmp_path_factory.mktemp("collection")
    good = []
    for i, (ext, sr, ch) in enumerate(
        zip(FORMATS, (22050, 44100, 48000, 44100, 8000, 16000), (1, 2, 2, 2, 1, 1), strict=True)
    ):
        good.append(
            write_audio(
                root / "Ünïcode and spaces" / f"track {i} één{ext}",
                tone(seconds=7.0, sample_rate=sr, channels=ch, freq_hz=220 + 40 * i),
                sample_rate=sr,
            )
        )
    sr = 16000
    t = np.arange(600 * sr) / sr
    long = (0.3 * np.sin(2 * np.pi * (200 + 100 * np.sin(2 * np.pi * t / 60)) * t)).astype(
        np.float32
    )
    good.append(write_audio(root / "long" / "ten minutes.flac", long, sample_rate=sr))
    bad = make_bad_files(root / "broken")
    return root, good, bad


@pytest.fixture(scope="module")
def labelled(collection, champion, tmp_path_factory):
    root, _, _ = collection
    out = tmp_path_factory.mktemp("results")
    result = run_job(
        "jobs.label", str(root), str(out), *champion, "--num-cpus", "2", "--csv", timeout=600
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return out, result


def test_one_row_per_input_file_bad_files_included(collection, labelled):
    root, good, bad = collection
    out, result = labelled
    rows = _results(out)
    assert len(rows) == len(good) + len(bad)
    assert sorted(rows.path) == sorted(
        [str(p) for p in good] + [str(root / "broken" / n) for n in bad]
    )
    failed = rows[rows.error.notna()]
    assert sorted(Path(p).name for p in failed.path) == sorted(bad)
    for _, row in failed.iterrows():
        assert row.error_reason in bad[Path(row.path).name] and row.genre != row.genre  # null
    ok = rows[rows.error.isna()]
    assert ok.genre.notna().all() and (ok.confidence > 0).all()
    probs = ok[[c for c in rows.columns if c.startswith("p_")]].to_numpy()
    assert probs.shape[1] == 10
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(ok.confidence, probs.max(axis=1), atol=1e-6)
    assert all(
        row.top_k[0]["genre"] == row.genre and len(row.top_k) == 3 for _, row in ok.iterrows()
    )
    assert (rows.model == "genre-test/1").all() and rows.labeled_at.notna().all()
    assert f"{len(good)} labelled, {len(bad)} failed" in result.stdout
    assert "least confident" in result.stdout and "failed by reason" in result.stdout
    # The test model reads MFCC and log-mel only: label says its flags are the weaker kind,
    # and by default computes no musicnn for it: no tags column (tags asked for such a
    # model: tests/test_posthoc.py).
    assert "note: this model reads no musicnn features" in result.stdout
    assert "tags" not in rows.columns


def test_ten_minute_track_is_labelled_from_spread_segments(labelled):
    out, _ = labelled
    row = _results(out).set_index("track_id").loc["long/ten minutes.flac"]
    assert row.n_segments == 10
    assert row.duration_s == pytest.approx(600.0, abs=0.01)


def test_csv_on_request_has_the_same_rows(labelled):
    import pandas as pd

    out, _ = labelled
    csv = pd.read_csv(out / "_results.csv")
    assert sorted(csv.path) == sorted(_results(out).path)


def test_review_page_is_written_beside_the_results(labelled):
    """``_report.html``: the run's charts and every flagged track in its review queue."""
    out, result = labelled
    page = (out / "_report.html").read_text(encoding="utf-8")
    data = json.loads(page.split('id="queue-data">', 1)[1].split("</script>", 1)[0])
    rows = _results(out)
    assert len(data["rows"]) == int(rows.needs_review.fillna(False).sum())
    assert data["labels"] == [c[2:] for c in rows.columns if c.startswith("p_")]
    assert '<svg class="chart"' in page and f"review page: {out}/_report.html" in result.stdout


def test_results_read_by_plain_pandas_pyarrow_duckdb_without_ray(labelled):
    out, _ = labelled
    code = f"""
import sys, pyarrow.dataset as ds, pandas as pd, duckdb
t = ds.dataset({str(out)!r}, format="parquet").to_table()
df = pd.read_parquet({str(out)!r})
sql = "select count(*), count(error) from read_parquet('{out}/part-*.parquet')"
n = duckdb.sql(sql).fetchall()[0]
assert "ray" not in sys.modules
print(len(t), len(df), n[0], n[1])
"""
    got = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    rows = _results(out)
    assert got == [str(len(rows))] * 3 + [str(rows.error.notna().sum())]


def test_rerun_labels_nothing_new_and_writes_no_file_twice(collection, labelled, champion):
    root, good, bad = collection
    out, _ = labelled
    parts = sorted(p.name for p in out.glob("part-*.parquet"))
    again = run_job("jobs.label", str(root), str(out), *champion, "--num-cpus", "2", timeout=300)
    assert again.returncode == 0, again.stderr
    assert (
        "0 files" in again.stdout
        and f"{len(good) + len(bad)} of {len(good) + len(bad)} already done" in again.stdout
    )
    assert sorted(p.name for p in out.glob("part-*.parquet")) == parts


def test_retry_errors_relabels_only_failed_files(collection, labelled, champion, tmp_path):
    root, good, bad = collection
    out = tmp_path / "retry"
    shutil.copytree(labelled[0], out)
    result = run_job(
        "jobs.label",
        str(root),
        str(out),
        *champion,
        "--num-cpus",
        "2",
        "--retry-errors",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (
        f"{len(bad)} files" in result.stdout
        and f"{len(good)} of {len(good) + len(bad)} already done" in result.stdout
    )
    rows = _results(out)
    assert len(rows) == len(good) + len(bad) and not rows.path.duplicated().any()


def test_accuracy_on_held_out_tracks_matches_the_tune_figure(
    small_corpus, tuned, champion, tmp_path
):
    import mlflow

    mlflow.set_tracking_uri(tuned.uri)
    uri = f"models:/{tuned.name}@champion"
    card = ModelCard.from_metadata(mlflow.models.get_model_info(uri).metadata["genre"])
    meta = card.training
    test = sorted(card.splits["test"])
    listing = tmp_path / "test tracks.txt"
    listing.write_text(
        "".join(f"{small_corpus / t}\n" for t in test)
    )  # a text list is an accepted INPUT
    out = tmp_path / "out"
    result = run_job(
        "jobs.label",
        str(listing),
        str(out),
        *champion,
        "--aggregate",
        "mean",
        "--num-cpus",
        "2",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = _results(out)
    assert len(rows) == len(test) and rows.error.isna().all()
    truth = rows.path.map(lambda p: Path(p).parent.name)
    assert float((rows.genre == truth).mean()) == pytest.approx(
        meta["test_track_accuracy"], abs=1e-9
    )


def test_killed_driver_then_rerun_labels_every_file_exactly_once(tmp_path, champion):
    root = tmp_path / "many"
    n = 64  # label's tasks take 16 files each: the kill comes after one of 4 has landed
    for i in range(n):
        write_audio(
            root / f"f{i:03d}.flac",
            tone(seconds=6.0, sample_rate=22050, freq_hz=150 + i),
            sample_rate=22050,
        )
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "jobs.label",
        str(root),
        str(out),
        *champion,
        "--num-cpus",
        "2",
        "--flush-seconds",
        "0.2",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 240
    while time.time() < deadline and not list(out.glob("part-*.parquet")):
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(2)
    at_kill = len(_results(out))
    assert 0 < at_kill < n, "the run must be interrupted part-way for this test to mean anything"
    result = run_job("jobs.label", str(root), str(out), *champion, "--num-cpus", "2", timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{at_kill} of {n} already done" in result.stdout
    rows = _results(out)
    assert len(rows) == n and rows.path.nunique() == n and rows.error.isna().all()


def test_another_model_version_is_refused_unless_new_model_ok(
    collection, labelled, tuned, tmp_path, capfd
):
    import mlflow

    mlflow.set_tracking_uri(tuned.uri)
    client = mlflow.MlflowClient(tuned.uri)
    source = client.get_model_version_by_alias(tuned.name, "champion")
    v2 = mlflow.register_model(source.source, tuned.name)
    root, good, bad = collection
    out = tmp_path / "results"
    shutil.copytree(labelled[0], out)
    model = ["--model", f"models:/{tuned.name}/{v2.version}", "--tracking-uri", tuned.uri]
    refused = main_in_process(capfd, "jobs.label", str(root), str(out), *model, "--num-cpus", "2")
    assert "--new-model-ok" in one_error_line(refused)
    again = run_job(
        "jobs.label", str(root), str(out), *model, "--num-cpus", "2", "--new-model-ok", timeout=300
    )
    assert again.returncode == 0, again.stderr
    rows = _results(out)
    assert len(rows) == len(good) + len(bad) and (rows.model == f"{tuned.name}/{v2.version}").all()
    assert list((out / "_superseded").glob("part-*.parquet")), (
        "the old labels are kept aside, not deleted"
    )
    import pandas as pd

    assert len(pd.read_parquet(out)) == len(rows), (
        "the folder read as one dataset holds only the current labels"
    )


def _register(tuned, name: str, *, input_bins: int, metadata: dict | None):
    import keras
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from genre.backend import pip_requirements

    mlflow.set_tracking_uri(tuned.uri)
    inputs = keras.Input((130, input_bins))
    model = keras.Model(
        inputs, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inputs))
    )
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 130, input_bins))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 10))]),
    )
    with mlflow.start_run():
        info = mlflow.keras.log_model(  # requirements given: MLflow infers none in a subprocess
            model,
            name="model",
            signature=signature,
            metadata=metadata,
            registered_model_name=name,
            pip_requirements=pip_requirements(),
        )
    return f"models:/{name}/{info.registered_model_version}"


def test_model_whose_feature_config_does_not_match_is_refused(tuned, tmp_path, capfd):
    from genre.config import FeatureConfig

    cfg = FeatureConfig(features=("mel",))
    meta = {
        "genre": {
            "labels": [f"g{i}" for i in range(10)],
            "features": ["mel"],
            "feature_config": cfg.to_dict(),
        }
    }
    uri = _register(tuned, "mismatched", input_bins=13, metadata=meta)
    result = main_in_process(
        capfd,
        "jobs.label",
        str(tmp_path),
        str(tmp_path / "out"),
        "--model",
        uri,
        "--tracking-uri",
        tuned.uri,
    )
    assert "refusing" in one_error_line(result)


def test_model_without_a_feature_config_is_refused(tuned, tmp_path, capfd):
    uri = _register(tuned, "foreign", input_bins=13, metadata=None)
    result = main_in_process(
        capfd,
        "jobs.label",
        str(tmp_path),
        str(tmp_path / "out"),
        "--model",
        uri,
        "--tracking-uri",
        tuned.uri,
    )
    assert "feature config" in one_error_line(result)


def test_unknown_model_uri_is_one_line(tuned, tmp_path, capfd):
    result = main_in_process(
        capfd,
        "jobs.label",
        str(tmp_path),
        str(tmp_path / "out"),
        "--model",
        "models:/nope@champion",
        "--tracking-uri",
        tuned.uri,
    )
    assert "not found" in one_error_line(result)


def test_unreachable_tracking_server_is_one_line(tmp_path, capfd):
    result = main_in_process(
        capfd,
        "jobs.label",
        str(tmp_path),
        str(tmp_path / "out"),
        "--model",
        "models:/genre@champion",
        "--tracking-uri",
        f"http://127.0.0.1:{free_port()}",
    )
    assert "unreachable" in one_error_line(result)


def test_one_file_prints_its_genres(collection, champion):
    _, good, _ = collection
    result = run_job("jobs.label", str(good[0]), *champion, "--top-k", "4", timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert str(good[0]) in lines[0] and "genre-test/1" in lines[0]
    genres = [line for line in lines[1:] if "%" in line]
    assert len(genres) == 4 and "genre set: " in lines[5]  # then the conformal set
    rest = [line for line in lines[6:] if "domain shift: " not in line]  # with musicnn only
    assert rest == [] or (len(rest) == 1 and "needs review" in rest[0])  # and why to review


def test_one_bad_file_is_one_line(collection, champion, capfd):
    root, _, _ = collection
    result = main_in_process(capfd, "jobs.label", str(root / "broken" / "text.mp3"), *champion)
    assert "not a recognised audio file" in one_error_line(result)


def test_smoke_test_flag_labels_a_generated_corpus():
    result = run_job("jobs.label", "--smoke-test", "--num-cpus", "2", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "30 labelled, 0 failed" in result.stdout
    scratch = re.search(r"(/\S*genre-label-smoke-[^/\s]+)/", result.stdout)
    assert scratch and not Path(scratch[1]).exists(), "the scratch folder is removed"


def test_uris_go_through_pyarrow_filesystems(collection, champion, tmp_path):
    """``file://`` takes the same code path as ``s3://``/``gs://`` for INPUT and OUTPUT."""
    root, good, bad = collection
    out = tmp_path / "labels"
    result = run_job(
        "jobs.label",
        (root / "Ünïcode and spaces").as_uri(),
        out.as_uri(),
        *champion,
        "--num-cpus",
        "2",
        "--csv",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = _results(out)
    assert len(rows) == 6 and rows.error.isna().all() and rows.path.str.startswith("file://").all()
    assert (out / "_results.csv").exists() and (out / "_report.html").exists()


def _tampered_copy(tuned, tmp_path, *, n_mfcc: int, fix_hash: bool, signature: str) -> Path:
    """The champion downloaded to a folder, its MLmodel edited as a user might."""
    import mlflow
    import yaml

    from genre.config import FeatureConfig

    # models:/ URIs are looked up in the registry set here, not in download's tracking_uri
    # (left unset, MLflow creates ./mlflow.db and finds no model there).
    mlflow.set_tracking_uri(tuned.uri)
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{tuned.name}@champion",
            dst_path=str(tmp_path / "model"),
            tracking_uri=tuned.uri,
        )
    )
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    meta = mlmodel["metadata"]["genre"]
    meta["feature_config"]["n_mfcc"] = n_mfcc
    if fix_hash:
        meta["feature_config_hash"] = FeatureConfig.from_dict(meta["feature_config"]).hash()
    if signature == "deleted":
        mlmodel.pop("signature", None)
    else:
        inputs = json.loads(mlmodel["signature"]["inputs"])
        inputs[0]["tensor-spec"]["shape"] = [-1, 130, n_mfcc]
        mlmodel["signature"]["inputs"] = json.dumps(inputs)
    (local / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return local


@pytest.mark.parametrize("signature", ["deleted", "edited"])
def test_a_model_whose_keras_input_does_not_fit_its_card_is_refused_in_the_driver(
    tuned, tmp_path, capfd, signature
):
    """MLmodel says n_mfcc=20 (hash fixed to match, signature deleted or edited to 20 bins),
    the Keras file still takes 13: one line, exit 2, before any Ray worker starts."""
    local = _tampered_copy(tuned, tmp_path, n_mfcc=20, fix_hash=True, signature=signature)
    song = write_audio(
        tmp_path / "in" / "song.wav", tone(seconds=7, sample_rate=22050), sample_rate=22050
    )
    result = main_in_process(
        capfd,
        "jobs.label",
        str(song.parent),
        str(tmp_path / "out"),
        "--model",
        str(local),
        "--tracking-uri",
        tuned.uri,
        "--num-cpus",
        "1",
    )
    line = one_error_line(result)
    assert "takes input (130, 13)" in line and "(130, 20)" in line, line
    assert not (tmp_path / "out").exists(), "nothing is created for a command that exits 2"


def test_a_card_edited_without_its_hash_is_refused(tuned, tmp_path, capfd):
    local = _tampered_copy(tuned, tmp_path, n_mfcc=20, fix_hash=False, signature="deleted")
    song = write_audio(tmp_path / "song.wav", tone(seconds=7, sample_rate=22050), sample_rate=22050)
    result = main_in_process(
        capfd, "jobs.label", str(song), "--model", str(local), "--tracking-uri", tuned.uri
    )
    assert "card was edited" in one_error_line(result)
