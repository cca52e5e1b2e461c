"""Collections in object storage: extract, tune and label against a real S3-compatible
server (moto's) on loopback, with the endpoint given as users give it.

The server runs in this process and logs every request it answers (method, object,
``Range`` header, bytes sent), which is how the tests see ranged reads. Jobs reach it
through ``AWS_ENDPOINT_URL`` and the usual credential variables; the fast tests also
through ``?endpoint_override=`` in the URI.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import browser
from tests.conftest import (
    free_port,
    ray_head_with,
    run_job,
    start_mlflow_server,
    stop_mlflow_server,
    tone,
    write_audio,
)

pytest.importorskip("moto", reason="moto[server] (the dev extra) runs the S3 server")

pytestmark = pytest.mark.s3

BUCKET = "genre"
#: What users export to reach an S3-compatible store (the values moto accepts).
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "genre-test-key",
    "AWS_SECRET_ACCESS_KEY": "genre-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    # No instance metadata service on loopback: boto3 would wait for it.
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass
class Request:
    method: str
    path: str  # /bucket/key, percent-decoded
    range: str | None
    sent: int  # response body bytes


@dataclass
class S3Server:
    """moto's S3 on a free loopback port, in a thread of this process.

    Requests are answered one at a time: S3 orders the writes of one key, while moto
    checks a put's ``If-None-Match`` and stores the object in two steps that two of its
    threads could interleave. Every request is appended to :attr:`log`.
    """

    endpoint: str = ""
    port: int = 0
    log: list[Request] = field(default_factory=list)

    def start(self) -> S3Server:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)
        one_at_a_time = threading.Lock()

        def serve(environ, start_response):
            with one_at_a_time:
                body = b"".join(app(environ, start_response))
            path = urllib.parse.unquote(environ.get("PATH_INFO", ""))
            method = environ["REQUEST_METHOD"]
            self.log.append(Request(method, path, environ.get("HTTP_RANGE"), len(body)))
            return [body]

        self.port = free_port()
        self._server = make_server(
            "127.0.0.1", self.port, serve, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=30)

    @property
    def env(self) -> dict[str, str]:
        """The variables a job needs to reach this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, **CREDENTIALS}

    def filesystem(self):
        """pyarrow's S3 filesystem on this server, configured without the environment."""
        from pyarrow import fs as pafs

        return pafs.S3FileSystem(
            endpoint_override=f"127.0.0.1:{self.port}",
            scheme="http",
            access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region=CREDENTIALS["AWS_DEFAULT_REGION"],
            allow_bucket_creation=True,
        )


@pytest.fixture(scope="module")
def s3():
    """The server, with the bucket created (a bucket is made by its owner, not the jobs)."""
    quiet = logging.getLogger("werkzeug")  # a line per request otherwise
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    server = S3Server().start()
    server.filesystem().create_dir(BUCKET)
    yield server
    server.stop()
    quiet.setLevel(level)


@pytest.fixture
def aws_env(s3, monkeypatch):
    """This process reaches the server as the jobs do: through the environment."""
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    return s3.env


# ----------------------------------------------------------------------------- the lock


def _race(root: str, runs: int) -> list[object]:
    """``runs`` acquisitions of ``root``'s lock released together; each outcome: the
    lock that won, or the refusal's message."""
    from genre.errors import ParameterError
    from genre.store import FolderLock

    locks = [FolderLock(root, command=f"run {i}") for i in range(runs)]
    start = threading.Barrier(runs, timeout=30)
    outcomes: list[object] = [None] * runs

    def run(i: int) -> None:
        locks[i].fs.create_dir(locks[i].base, recursive=True)  # acquire's first steps
        start.wait()
        try:
            outcomes[i] = locks[i].acquire()
        except ParameterError as exc:
            outcomes[i] = str(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(runs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return outcomes


def test_of_runs_locking_one_s3_folder_at_once_exactly_one_wins(s3, aws_env):
    """Five races of three runs each: the conditional put lets the store pick one winner.

    A check before the write (what pyarrow alone allows) lets all three see no lock
    and all three write one.
    """
    import json

    fs = s3.filesystem()
    for race in range(5):
        outcomes = _race(f"s3://{BUCKET}/race-{race}", runs=3)
        won = [o for o in outcomes if not isinstance(o, str)]
        refused = [o for o in outcomes if isinstance(o, str)]
        assert len(won) == 1, outcomes
        assert all("is being written by run" in message for message in refused), refused
        with fs.open_input_stream(f"{BUCKET}/race-{race}/_lock") as f:
            assert json.loads(f.read())["token"] == won[0].token
        won[0].release()
        assert fs.get_file_info(f"{BUCKET}/race-{race}/_lock").type.name == "NotFound"


def test_without_boto3_the_s3_lock_is_checked_then_written_with_a_note_once(
    s3, aws_env, monkeypatch, capsys
):
    import sys

    from genre import store
    from genre.errors import ParameterError

    monkeypatch.setitem(sys.modules, "boto3", None)  # import boto3 raises ImportError
    monkeypatch.setattr(store, "_NOTED", set())
    with store.FolderLock(f"s3://{BUCKET}/no-boto3", command="first"):
        with pytest.raises(ParameterError, match="is being written by first"):
            store.FolderLock(f"s3://{BUCKET}/no-boto3", command="second").acquire()
    assert capsys.readouterr().err.count("boto3 is not installed") == 1
    puts = [r for r in s3.log if r.method == "PUT" and r.path == f"/{BUCKET}/no-boto3/_lock"]
    assert puts  # written by pyarrow, after a check


# ----------------------------------------------------------------------------- ?endpoint_override=


def test_an_endpoint_in_the_uri_reaches_the_store_for_listing_reading_locking_and_links(
    s3, monkeypatch, tmp_path
):
    """``?endpoint_override=…&scheme=http`` instead of ``AWS_ENDPOINT_URL``: every path
    listed keeps it, so a file is read, a folder locked and a link signed on that store."""
    from genre.audio import load_segments
    from genre.corpus import list_tracks
    from genre.errors import ParameterError
    from genre.store import FolderLock, presigned_urls

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    song = write_audio(
        tmp_path / "rock" / "a song.wav", tone(seconds=7, sample_rate=22050), sample_rate=22050
    )
    with s3.filesystem().open_output_stream(f"{BUCKET}/in-uri/rock/a song.wav") as f:
        f.write(song.read_bytes())
    options = f"endpoint_override=127.0.0.1:{s3.port}&scheme=http"

    (track,) = list_tracks(f"s3://{BUCKET}/in-uri?{options}").tracks
    assert track.path == f"s3://{BUCKET}/in-uri/rock/a%20song.wav?{options}"
    assert track.track_id == "rock/a song.wav" and track.genre == "rock"
    assert load_segments(track.path, segment_seconds=3.0).audio.shape == (2, 66150)

    with FolderLock(f"s3://{BUCKET}/in-uri-out?{options}", command="first"):
        with pytest.raises(ParameterError, match="is being written by first"):
            FolderLock(f"s3://{BUCKET}/in-uri-out?{options}", command="second").acquire()

    (link,) = presigned_urls([track.path])
    assert link.startswith(f"{s3.endpoint}/{BUCKET}/in-uri/rock/a%20song.wav?")
    with urllib.request.urlopen(link, timeout=30) as response:
        assert response.read() == song.read_bytes()


# ----------------------------------------------------------------------------- the page


@pytest.mark.skipif(
    browser.chromium() is None,
    reason="headless Chromium is not installed (apt-get install chromium): page not opened",
)
def test_the_page_plays_audio_from_the_bucket_through_its_presigned_link(s3, aws_env, tmp_path):
    """The page's script builds each player's link from the embedded parts, and the
    browser fetches the audio's header through it from the server."""
    from genre.results import read_results
    from genre.review_page import PAGE_NAME, render_page, sample_results

    song = write_audio(tmp_path / "song.wav", tone(seconds=4, sample_rate=22050), sample_rate=22050)
    with s3.filesystem().open_output_stream(f"{BUCKET}/page/a song.wav") as f:
        f.write(song.read_bytes())
    root = tmp_path / "labels"
    sample_results(str(root), tracks=8)
    frame = read_results(str(root))
    frame["path"] = f"s3://{BUCKET}/page/a%20song.wav"  # as listing an s3:// INPUT writes it
    (root / PAGE_NAME).write_text(render_page(frame, root=str(root)), encoding="utf-8")
    s3.log.clear()
    with browser.Browser(tmp_path / "chromium") as chromium:
        tab = chromium.open(root / PAGE_NAME)
        tab.wait_for("document.querySelectorAll('#queue-body tr').length > 0")
        audio = "document.querySelector('#queue-body audio')"
        src = tab.js(f"{audio}.getAttribute('src')")
        assert src.startswith(f"{s3.endpoint}/{BUCKET}/page/a%20song.wav?X-Amz-Algorithm=")
        assert "&X-Amz-Signature=" in src and src.endswith("#t=0,3")
        tab.js(f"(() => {{ const a = {audio}; a.preload = 'metadata'; a.load(); }})()")
        tab.wait_for(f"{audio}.readyState >= 1 || {audio}.error !== null")
        assert tab.js(f"{audio}.error") is None
        assert tab.js(f"{audio}.duration") == pytest.approx(4.0)
    assert any(r.method == "GET" and r.path == f"/{BUCKET}/page/a song.wav" for r in s3.log)


# ----------------------------------------------------------------------------- the pipeline


def _upload(s3, local: Path, prefix: str) -> None:
    from pyarrow import fs as pafs

    pafs.copy_files(
        str(local),
        f"{BUCKET}/{prefix}",
        source_filesystem=pafs.LocalFileSystem(),
        destination_filesystem=s3.filesystem(),
    )


def _objects(s3, prefix: str) -> list[str]:
    from pyarrow import fs as pafs

    infos = s3.filesystem().get_file_info(pafs.FileSelector(f"{BUCKET}/{prefix}", recursive=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File)


def _collection(tmp_path: Path) -> Path:
    """What label reads from the bucket: a minute of WAV (of which it reads two 3 s
    windows) and a short Ogg."""
    root = tmp_path / "collection"
    write_audio(
        root / "long.wav", tone(seconds=60, sample_rate=22050, freq_hz=220.0), sample_rate=22050
    )
    write_audio(
        root / "short.ogg", tone(seconds=7, sample_rate=44100, freq_hz=660.0), sample_rate=44100
    )
    return root


def _link(queue: dict, row: int) -> str:
    """A row's player link, built as the page's script builds it."""
    links = queue["links"]
    head, query, signature = links["rows"][row]
    return f"{links['prefix']}{head}?{links['queries'][query]}&X-Amz-Signature={signature}"


@pytest.mark.slow
def test_extract_tune_label_run_on_s3(s3, aws_env, small_corpus, tmp_path):
    """Audio in a bucket → extract → shards in the bucket → tune (its search state and the
    MLflow server's artifacts in the bucket) → label → results in the bucket, read back by
    pandas and DuckDB; the label job reads only its windows of a long WAV; the review
    page's players are presigned links that fetch the audio."""
    _upload(s3, small_corpus, "audio")
    collection = _collection(tmp_path)
    _upload(s3, collection, "collection")
    data = f"s3://{BUCKET}"
    # The three jobs on one Ray head whose workers have the store's endpoint and credentials.
    with ray_head_with(s3.env) as (address, _):
        _pipeline_on_s3(s3, collection, data, tmp_path, env={**s3.env, "RAY_ADDRESS": address})


def _pipeline_on_s3(s3, collection: Path, data: str, tmp_path: Path, *, env: dict) -> None:
    import json

    import duckdb
    import pandas as pd
    import pyarrow.dataset as ds

    from genre.store import PRESIGN_EXPIRES_S

    extract = run_job(
        "jobs.extract", f"{data}/audio", f"{data}/shards", "--num-cpus", "2",
        "--features", "mfcc", env=env, timeout=300,
    )  # fmt: skip
    assert extract.returncode == 0, extract.stdout[-2000:] + extract.stderr[-3000:]
    assert "40 tracks → 120 segments" in extract.stdout
    shards = pd.read_parquet(f"{BUCKET}/shards", filesystem=s3.filesystem())
    assert shards.track_id.nunique() == 40 and shards.path.str.startswith(f"{data}/audio/").all()

    proc, uri = start_mlflow_server(tmp_path / "mlflow", artifacts=f"{data}/mlflow", env=s3.env)
    try:
        tune = run_job(
            "jobs.tune", f"{data}/shards", "--models", "mlp", "--features", "mfcc",
            "--num-samples", "2", "--max-epochs", "2", "--grace-epochs", "1",
            "--refit-folds", "0", "--tracking-uri", uri, "--experiment", "s3",
            "--register-as", "genre-s3", "--storage", f"{data}/ray_results",
            "--num-cpus", "2", env=env, timeout=400,
        )  # fmt: skip
        assert tune.returncode == 0, tune.stdout[-3000:] + tune.stderr[-3000:]
        assert any(p.endswith("/MLmodel") for p in _objects(s3, "mlflow"))
        assert _objects(s3, "ray_results")

        s3.log.clear()
        label = run_job(
            "jobs.label", f"{data}/collection", f"{data}/labels",
            "--model", "models:/genre-s3@champion", "--tracking-uri", uri,
            "--segments", "2", "--min-confidence", "1", "--csv", "--num-cpus", "2",
            env=env, timeout=300,
        )  # fmt: skip
        assert label.returncode == 0, label.stdout[-3000:] + label.stderr[-3000:]
    finally:
        stop_mlflow_server(proc)

    long_wav = (collection / "long.wav").stat().st_size
    reads = [r for r in s3.log if r.method == "GET" and r.path.endswith("/collection/long.wav")]
    assert reads and all(r.range for r in reads), reads
    assert sum(r.sent for r in reads) < long_wav / 2, (sum(r.sent for r in reads), long_wav)

    names = {p.rsplit("/", 1)[-1] for p in _objects(s3, "labels")}
    assert {"_report.html", "_results.csv"} <= names and any(n.startswith("part-") for n in names)
    results = pd.read_parquet(f"{BUCKET}/labels", filesystem=s3.filesystem())
    assert sorted(results.path) == [f"{data}/collection/long.wav", f"{data}/collection/short.ogg"]
    assert results.error.isna().all() and results.needs_review.all()
    # DuckDB scans the folder through pyarrow's S3 filesystem (its own httpfs extension
    # would be downloaded on first use).
    db = duckdb.connect()
    db.register("labels", ds.dataset(f"{BUCKET}/labels", filesystem=s3.filesystem()))
    assert db.sql("select count(*), count(genre) from labels").fetchall() == [(2, 2)]

    page = s3.filesystem().open_input_stream(f"{BUCKET}/labels/_report.html").read().decode()
    queue = json.loads(re.search(r'id="queue-data">(.*?)</script>', page, re.S)[1])
    assert queue["audio"] is None and len(queue["links"]["rows"]) == 2
    for row, rest in enumerate(r[0] for r in queue["rows"]):
        link = _link(queue, row)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(link).query)
        assert link.startswith(f"{s3.endpoint}/{BUCKET}/collection/{rest}?")
        assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
        assert query["X-Amz-Credential"][0].startswith(CREDENTIALS["AWS_ACCESS_KEY_ID"] + "/")
        assert query["X-Amz-Expires"] == [str(PRESIGN_EXPIRES_S)]
        assert len(query["X-Amz-Signature"][0]) == 64
        with urllib.request.urlopen(link, timeout=30) as response:
            assert response.read() == (collection / rest).read_bytes()
    assert "presigned links, valid until" in page
