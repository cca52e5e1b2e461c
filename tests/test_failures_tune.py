"""Tune and tracking failures: what is refused before work starts, and what a failed or
stuck search leaves behind (nothing outside what the user named; every MLflow run ended)."""

from __future__ import annotations

import http.server
import os
import tempfile
import threading
import time
from pathlib import Path

import pytest

from genre.errors import ParameterError
from tests.conftest import run_job, write_learnable_shards
from tests.test_tune import _parents


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """A shard folder of 40 tracks of 4 genres written directly (no audio, no Ray): what
    these tests refuse or break happens before, or regardless of, what the features are."""
    root = tmp_path_factory.mktemp("shards")
    genres = ("rock", "jazz", "pop", "blues")
    write_learnable_shards(str(root), feature="mfcc", genres=genres, tracks=40, segments=3)
    return root


def _one_line(code: int, err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and "WARNING" not in line]
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


def _tune(capsys, *args: str) -> str:
    """``jobs.tune`` in this process (for arguments refused before Ray starts): its line."""
    from jobs.tune import main

    code = main(list(args))
    return _one_line(code, capsys.readouterr().err)


def _label(capsys, *args: str) -> str:
    from jobs.label import main

    code = main(list(args))
    return _one_line(code, capsys.readouterr().err)


# ----------------------------------------------------------------------------- --name, --fresh


def test_fresh_with_a_dotdot_name_deletes_nothing(shards, tmp_path):
    keep = tmp_path / "a" / "keep.txt"
    keep.parent.mkdir()
    keep.write_text("mine")
    result = run_job(
        "jobs.tune",
        str(shards),
        "--storage",
        str(tmp_path / "a" / "st"),
        "--name",
        "..",
        "--fresh",
        "--tracking-uri",
        f"sqlite:///{tmp_path}/m.db",
        timeout=120,
    )
    assert "--name" in _one_line(result.returncode, result.stderr)
    assert keep.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "keep.txt"]


@pytest.mark.parametrize("name", [".", "", " ", "a/b", "../x", "a\\b"])
def test_a_name_that_is_a_path_is_refused_before_anything_is_created(
    shards, tmp_path, capsys, name
):
    line = _tune(
        capsys,
        str(shards),
        "--storage",
        str(tmp_path / "st"),
        "--name",
        name,
        "--fresh",
        "--tracking-uri",
        f"sqlite:///{tmp_path}/m.db",
    )
    assert "--name" in line
    assert list(tmp_path.iterdir()) == []


def _settings(shards, tmp_path, **kw):
    from genre.config import SearchSettings

    return SearchSettings(
        shards=str(shards),
        models=("mlp",),
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        storage=str(tmp_path / "ray"),
        **kw,
    )


def test_fresh_refuses_a_folder_that_is_not_a_search(shards, tmp_path):
    from genre.tuning import remove_search

    settings = _settings(shards, tmp_path, name="photos")
    kept = tmp_path / "ray" / "photos" / "cat.jpg"
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"\xff\xd8")
    with pytest.raises(ParameterError, match="not a search folder"):
        remove_search(settings)
    assert kept.exists()


def test_fresh_removes_the_search_folder_and_nothing_beside_it(shards, tmp_path):
    from genre.tuning import MARKER, remove_search

    settings = _settings(shards, tmp_path, name="s1")
    (tmp_path / "ray" / "s1").mkdir(parents=True)
    (tmp_path / "ray" / "s1" / MARKER).write_text("{}")
    (tmp_path / "ray" / "other").mkdir()
    remove_search(settings)
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == ["other"]


def test_fresh_does_not_follow_a_link_out_of_the_storage(shards, tmp_path):
    from genre.tuning import MARKER, remove_search

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / MARKER).write_text("{}")
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "s1").symlink_to(elsewhere)
    with pytest.raises(ParameterError, match="not a search folder"):
        remove_search(_settings(shards, tmp_path, name="s1"))
    assert (elsewhere / MARKER).exists()


# ----------------------------------------------------------------------------- --storage


@pytest.fixture
def read_only_dir(tmp_path) -> Path:
    """A folder no file can be created in: mode 0555, or for root (whom modes do not
    stop) a read-only system folder."""
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    for candidate in (Path("/sys"), Path("/proc")):
        try:
            tempfile.mkstemp(dir=candidate)
        except OSError:
            yield candidate
            return
    pytest.skip("no read-only folder on this machine")


def test_read_only_storage_is_one_line_before_anything_starts(
    shards, tmp_path, capsys, read_only_dir
):
    line = _tune(
        capsys,
        str(shards),
        "--storage",
        str(read_only_dir / "genre-storage"),
        "--tracking-uri",
        f"sqlite:///{tmp_path}/m.db",
    )
    assert "not writable" in line
    assert not (tmp_path / "m.db").exists()


def test_an_oserror_after_the_parent_run_is_created_ends_it_failed(shards, tmp_path, monkeypatch):
    from genre import tuning
    from genre.shards import read_segments

    def disk_gone(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tuning, "_save_marker", disk_gone)
    settings = _settings(shards, tmp_path, experiment="ro")
    with pytest.raises(OSError):
        tuning.run_search(read_segments(str(shards)), settings, progress=False)
    parents = _parents(settings.tracking_uri, "ro")
    assert [p.info.status for p in parents] == ["FAILED"]


# ----------------------------------------------------------------------------- --register-as


@pytest.mark.parametrize("name", ["bad/name", " ", "a:b", ".."])
def test_a_registered_model_name_mlflow_refuses_is_one_line_before_the_search(
    shards, tmp_path, capsys, name
):
    line = _tune(
        capsys,
        str(shards),
        "--register-as",
        name,
        "--storage",
        str(tmp_path / "st"),
        "--tracking-uri",
        f"sqlite:///{tmp_path}/m.db",
    )
    assert "--register-as" in line
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- tracking URI


@pytest.mark.parametrize("job", ["tune", "label"])
@pytest.mark.parametrize("uri", ["foo://bar", "mlruns"])
def test_a_tracking_uri_mlflow_has_no_store_for_is_one_line(shards, tmp_path, capsys, job, uri):
    (tmp_path / "in").mkdir()
    if job == "tune":
        line = _tune(capsys, str(shards), "--storage", str(tmp_path / "st"), "--tracking-uri", uri)
    else:
        line = _label(
            capsys,
            str(tmp_path / "in"),
            str(tmp_path / "out"),
            "--model",
            "models:/genre@champion",
            "--tracking-uri",
            uri,
        )
    assert "--tracking-uri" in line
    assert [p.name for p in tmp_path.iterdir()] == ["in"]


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def _serve(kind: str, release: threading.Event):
    """A tracking server on loopback that answers ``/health`` 200 and everything else
    with ``kind``: 500, 404, or never."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self):
            if self.path.rstrip("/") == "/health":
                code = 200
            elif kind == "hang":
                release.wait(120)
                return
            else:
                code = int(kind)
            body = b"OK" if code == 200 else b'{"error_code": "INTERNAL_ERROR"}'
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(params=["500", "404", "hang"])
def broken_server(request, monkeypatch):
    for key in (
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    ):
        monkeypatch.delenv(key, raising=False)  # restored after the test
    release = threading.Event()
    server = _serve(request.param, release)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    release.set()
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("job", ["tune", "label"])
def test_a_tracking_server_that_answers_health_but_fails_its_api_is_one_line_within_seconds(
    shards, tmp_path, capsys, broken_server, job
):
    (tmp_path / "in").mkdir()
    started = time.monotonic()
    if job == "tune":
        line = _tune(
            capsys,
            str(shards),
            "--storage",
            str(tmp_path / "st"),
            "--tracking-uri",
            broken_server,
        )
    else:
        line = _label(
            capsys,
            str(tmp_path / "in"),
            str(tmp_path / "out"),
            "--model",
            "models:/genre@champion",
            "--tracking-uri",
            broken_server,
        )
    assert time.monotonic() - started < 30
    assert broken_server in line
    assert [p.name for p in tmp_path.iterdir()] == ["in"]


def test_label_with_a_missing_model_creates_no_database(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "in").mkdir()
    line = _label(capsys, "in", "out", "--model", "models:/genre@champion")
    assert "not found" in line
    assert [p.name for p in tmp_path.iterdir()] == ["in"]


# ----------------------------------------------------------------------------- resources


@pytest.mark.slow
def test_cpus_per_trial_above_the_largest_node_is_one_line_and_creates_no_run(shards, tmp_path):
    result = run_job(
        "jobs.tune",
        str(shards),
        "--num-cpus",
        "1",
        "--cpus-per-trial",
        "2",
        "--storage",
        str(tmp_path / "st"),
        "--tracking-uri",
        f"sqlite:///{tmp_path}/m.db",
        timeout=180,
        own_runtime=True,  # a runtime of 1 CPU: the shared one has 2
    )
    assert "--cpus-per-trial" in _one_line(result.returncode, result.stderr)
    assert list(tmp_path.iterdir()) == []


def _idle(config):
    from ray import tune

    tune.report({"x": 1})


@pytest.mark.slow
def test_a_search_whose_trials_can_never_be_scheduled_ends_with_one_line(ray_local, tmp_path):
    from ray import tune

    from genre.tuning import _Unschedulable

    tuner = tune.Tuner(
        tune.with_resources(_idle, {"cpu": 3}),  # the local runtime has 2
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(
            storage_path=str(tmp_path),
            name="stuck",
            callbacks=[_Unschedulable(cpus=3, gpus=0, limit_s=2)],
            verbose=0,
        ),
    )
    started = time.monotonic()
    with pytest.raises(ParameterError, match="no trial could start"):
        tuner.fit()
    assert time.monotonic() - started < 60


# ----------------------------------------------------------------------------- concurrency


def test_a_second_run_of_the_same_search_is_refused_while_the_first_runs(shards, tmp_path):
    from genre.shards import read_segments
    from genre.store import FolderLock
    from genre.tuning import _search_path, run_search

    settings = _settings(shards, tmp_path, name="twice")
    with FolderLock(_search_path(settings), command="jobs.tune"):  # the first run
        with pytest.raises(ParameterError, match="being written by jobs.tune"):
            run_search(read_segments(str(shards)), settings, progress=False)
    assert not (tmp_path / "mlflow.db").exists(), "the second run created no MLflow run"


# ----------------------------------------------------------------------------- Ctrl-C


# ----------------------------------------------------------------------------- --other


@pytest.mark.parametrize("case", ["missing", "file", "same", "no-shards", "other-settings"])
def test_a_bad_other_folder_is_one_line_before_anything_is_created(tmp_path, capsys, rng, case):
    from genre.config import FeatureConfig
    from tests.test_shards import _shards

    cfg = FeatureConfig(features=("mfcc",))
    shards = _shards(
        tmp_path / "shards", cfg, rng, [("rock/a.wav", "rock"), ("jazz/b.wav", "jazz")]
    )
    other = {"missing": tmp_path / "nowhere", "same": Path(shards), "no-shards": tmp_path / "empty"}
    other["file"] = tmp_path / "notes.txt"
    other["file"].write_text("not a folder")
    other["no-shards"].mkdir()
    other["other-settings"] = _shards(
        tmp_path / "longer",
        FeatureConfig(features=("mfcc",), segment_seconds=4.0),
        rng,
        [("x.wav", None)],
    )
    before = sorted(tmp_path.rglob("*"))
    line = _tune(
        capsys,
        shards,
        "--other",
        str(other[case]),
        "--models",
        "mlp",
        "--storage",
        str(tmp_path / "st"),
        "--tracking-uri",
        f"sqlite:///{tmp_path}/m.db",
    )
    assert "--other" in line
    assert sorted(tmp_path.rglob("*")) == before  # no database, no search folder


# ----------------------------------------------------------------------------- several SHARDS


@pytest.mark.parametrize("case", ["other-settings", "twice", "missing"])
def test_bad_shards_folders_are_one_line_before_anything_is_created(tmp_path, capsys, rng, case):
    from genre.config import FeatureConfig
    from tests.test_shards import _shards

    cfg = FeatureConfig(features=("mfcc",))
    first = _shards(tmp_path / "a", cfg, rng, [("rock/a.wav", "rock"), ("jazz/b.wav", "jazz")])
    second = {
        "other-settings": _shards(
            tmp_path / "b",
            FeatureConfig(features=("mfcc",), segment_seconds=4.0),
            rng,
            [("pop/c.wav", "pop")],
        ),
        "twice": first + "/",
        "missing": str(tmp_path / "nowhere"),
    }[case]
    before = sorted(tmp_path.rglob("*"))
    line = _tune(
        capsys,
        first,
        second,
        "--models",
        "mlp",
        "--storage",
        str(tmp_path / "st"),
        "--tracking-uri",
        f"sqlite:///{tmp_path}/m.db",
    )
    assert {"other-settings": "same settings", "twice": "given twice", "missing": "nowhere"}[
        case
    ] in line
    assert sorted(tmp_path.rglob("*")) == before  # no database, no search folder
