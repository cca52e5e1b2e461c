"""Shared fixtures: a seeded rng, real audio files in every format, a local Ray runtime."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genre.synth import WRITE_FORMATS, write_audio  # noqa: F401  (re-exported for the tests)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

#: Every format the product accepts, with the libsndfile format/subtype that writes it.
FORMATS = WRITE_FORMATS


def tone(
    *, seconds: float, sample_rate: int, freq_hz: float = 440.0, channels: int = 1, amp: float = 0.3
) -> np.ndarray:
    """A pure tone with a little noise: ``(samples,)`` or ``(samples, channels)`` float32."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    rng = np.random.default_rng(int(freq_hz * 10 + sample_rate))
    y = amp * np.sin(2 * np.pi * freq_hz * t) + 0.003 * rng.standard_normal(len(t))
    if channels > 1:
        y = np.stack([y * (1.0 - 0.1 * c) for c in range(channels)], axis=1)
    return y.astype(np.float32)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray runtime for the in-process tests that need one (2 CPUs)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


def run_job(
    module: str, *args: str, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m <module> args…`` as a user would; capture its output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


#: Ports :func:`free_port` handed out in this run.
_GIVEN_PORTS: set[int] = set()


def free_port() -> int:
    """A free loopback TCP port, never one handed out before in this run: the OS may offer a
    port it has just freed again, and two components of one ``ray start`` given the same
    port refuse to start."""
    import socket

    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN_PORTS:
            _GIVEN_PORTS.add(port)
            return port


def start_mlflow_server(root: Path, *, timeout_s: float = 90.0) -> tuple[subprocess.Popen, str]:
    """A real ``mlflow server`` on a free loopback port: SQLite backend, local artifact store."""
    import time
    import urllib.request

    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited with {proc.returncode}: "
                f"{(root / 'server.log').read_text()[-2000:]}"
            )
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    return proc, uri
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"mlflow server did not answer on {uri} within {timeout_s:.0f} s")


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """URI of a real MLflow tracking server for the session (stopped at the end)."""
    proc, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow"))
    yield uri
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


class Tuned:
    """What the session's one small search produced (see :func:`tuned`)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """The synthetic corpus at test size: 10 genres × 4 tracks of 9 s (3 segments each)."""
    from genre.synth import write_corpus

    root = tmp_path_factory.mktemp("small-corpus")
    write_corpus(root, per_genre=4, seconds=9.0, seed=11)
    return root


@pytest.fixture(scope="session")
def small_shards(small_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("small-shards")
    result = run_job(
        "jobs.extract", str(small_corpus), str(out), "--num-cpus", "2", "--features", "mfcc,mel"
    )
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def tuned(small_shards, mlflow_server, tmp_path_factory) -> Tuned:
    """One small search through the tune job's command line, against the real MLflow server.

    ``--gpus-per-trial 0.5`` on a runtime without GPUs: the search only finishes if
    trials do not ask for GPUs the cluster lacks.
    """
    storage = tmp_path_factory.mktemp("ray-results")
    args = [
        str(small_shards),
        "--models",
        "cnn,mlp",
        "--num-samples",
        "3",
        "--max-epochs",
        "3",
        "--grace-epochs",
        "1",
        "--tracking-uri",
        mlflow_server,
        "--experiment",
        "tests",
        "--register-as",
        "genre-test",
        "--storage",
        str(storage),
        "--num-cpus",
        "2",
        "--gpus-per-trial",
        "0.5",
    ]
    result = run_job("jobs.tune", *args, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return Tuned(
        result=result,
        args=args,
        uri=mlflow_server,
        name="genre-test",
        storage=storage,
        shards=small_shards,
    )
