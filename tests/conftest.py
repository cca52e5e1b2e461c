"""Shared fixtures: a seeded rng, real audio files in every format, a local Ray runtime."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from genre.synth import WRITE_FORMATS, write_audio  # noqa: F401  (re-exported for the tests)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Ray's default for a new local runtime is token authentication with a token it writes to
# ~/.ray/auth_token: outside the test run's folders, and a head started after a token appeared
# refuses clients started before. Every runtime here listens on loopback only;
# tests/test_ray_start.py turns token mode on for its cluster, as the README does.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# No usage reports from the suite's Ray runtimes and jobs (as `ray start
# --disable-usage-stats` for its heads): with them on, Ray Data starts a usage actor per
# runtime, ~3.6 s of a CPU each, and nothing leaves this machine anyway.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

#: Every format the product accepts, with the libsndfile format/subtype that writes it.
FORMATS = WRITE_FORMATS

#: The ``ray`` command of the venv running the tests.
RAY = Path(sys.executable).with_name("ray")


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


# ----------------------------------------------------------------------------- Ray nodes


def start_ray_node(
    args: list[str], log: Path, env: dict[str, str], *, timeout_s: float = 120
) -> subprocess.Popen:
    """``ray start --block …`` in a session of its own; return once it says it started."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(RAY), "start", "--block", *args],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.time() + timeout_s
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.time() > deadline:
            stop_ray_node(proc)
            raise RuntimeError(
                f"ray start {' '.join(args[:2])} did not start:\n{log.read_text()[-3000:]}"
            )
        time.sleep(0.5)
    return proc


def _stat(pid: int) -> list[str]:
    """``/proc/PID/stat`` after the command: state, ppid, pgrp, session, …; ``[]`` once it
    is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _processes() -> list[tuple[int, list[str]]]:
    """Every process, zombies included, with its :func:`_stat` fields."""
    pids = (int(stat.parent.name) for stat in Path("/proc").glob("[0-9]*/stat"))
    return [(pid, fields) for pid in pids if (fields := _stat(pid))]


def _session(sid: int) -> list[int]:
    """Processes of session ``sid``: a node's daemons, and its workers (each in a group of
    its own)."""
    return [pid for pid, fields in _processes() if int(fields[3]) == sid]


def stop_session(sid: int, *, grace_s: float, reap: Callable[[], object] = lambda: None) -> None:
    """SIGTERM every process of session ``sid`` (what ``ray stop`` sends a node), then
    SIGKILL what is left after ``grace_s``; ``reap`` polls the session's leader when it is
    this process's child, so it does not stay behind as a zombie."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5)):
        for pid in _session(sid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + wait_s
        while time.time() < deadline:
            reap()
            members = [fields for _, fields in _processes() if int(fields[3]) == sid]
            if all(fields[0] == "Z" for fields in members):
                return
            time.sleep(0.2)


def ray_node_env() -> dict[str, str]:
    """The environment of a node the tests start with ``ray start``: joins no other
    cluster (no ``RAY_ADDRESS``), finds the venv's ``ray`` and stops at once when told (no
    drain)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PATH"] = f"{RAY.parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
    return env


def start_ray_head(
    root: Path, env: dict[str, str], *, store_bytes: int
) -> tuple[subprocess.Popen, str]:
    """A ``ray start --head`` of 2 CPUs on loopback (no dashboard, free ports, its temp dir
    under ``root``, which should be short: Ray's socket paths must stay within 107 bytes);
    its process and address."""
    port = free_port()
    args = ["--head", "--node-ip-address", "127.0.0.1", "--port", str(port)]
    args += ["--include-dashboard", "false", "--disable-usage-stats"]
    args += ["--num-cpus", "2", "--num-gpus", "0", "--temp-dir", str(root / "ray")]
    args += ["--object-store-memory", str(store_bytes)]
    for flag in ("--ray-client-server-port", "--dashboard-agent-listen-port"):
        args += [flag, str(free_port())]
    args += ["--metrics-export-port", str(free_port())]
    return start_ray_node(args, root / "head.log", env), f"127.0.0.1:{port}"


@contextlib.contextmanager
def ray_head_with(
    env: dict[str, str], *, store_bytes: int = 512 * 2**20
) -> Iterator[tuple[str, subprocess.Popen]]:
    """The address and process of a Ray head of the test's own whose processes see ``env``
    (as a cluster's nodes have what their jobs need: a store's endpoint and credentials);
    stopped, its temp dir removed, at the end. One head for a test's jobs, not a runtime
    started by each."""
    root = Path(tempfile.mkdtemp(prefix="genre-env-", dir="/tmp"))  # short socket paths
    proc, address = start_ray_head(root, {**ray_node_env(), **env}, store_bytes=store_bytes)
    try:
        yield address, proc
    finally:
        stop_ray_node(proc)
        shutil.rmtree(root, ignore_errors=True)


def stop_ray_node(proc: subprocess.Popen) -> None:
    """Stop a node started by :func:`start_ray_node` (:func:`stop_session`), and reap it."""
    stop_session(proc.pid, grace_s=30, reap=proc.poll)
    proc.wait(timeout=10)


class _SharedRay:
    """One ``ray start`` head (2 CPUs, loopback, no dashboard) that the run's jobs join.

    Each job starting and stopping a local runtime of its own cost ~5 s of the 2 cores,
    and the suite runs ~100 jobs. Started on first use, stopped when the run ends (and
    started again if a test took it down). Its own temp dir keeps a plain ``ray.init()``
    elsewhere on the machine from joining it.
    """

    proc: subprocess.Popen | None = None
    address: str = ""
    root: Path | None = None

    @classmethod
    def get(cls) -> str:
        if cls.proc is not None and cls.proc.poll() is None:
            return cls.address
        cls.stop()
        cls.root = Path(tempfile.mkdtemp(prefix="genre-rt-", dir="/tmp"))  # short socket paths
        cls.proc, cls.address = start_ray_head(cls.root, ray_node_env(), store_bytes=1024**3)
        return cls.address

    @classmethod
    def stop(cls) -> None:
        if cls.proc is not None:
            stop_ray_node(cls.proc)
            cls.proc = None
        if cls.root is not None:
            shutil.rmtree(cls.root, ignore_errors=True)
            cls.root = None


atexit.register(_SharedRay.stop)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _children(pid: int) -> list[int]:
    """Running (not zombie) children of ``pid``."""
    return [child for child, fields in _processes() if fields[0] != "Z" and fields[1] == str(pid)]


def _interrupt_workers(signum, frame):
    """The xdist controller's SIGTERM: the workers first, then itself.

    Each worker ends its session as on Ctrl-C: its jobs are killed, its fixtures torn down,
    its Ray head stopped (:func:`pytest_unconfigure`). The controller waits until no worker
    has a process of its own left (90 s at most): stopped from outside, the workers would
    die with their heads and servers still running.
    """
    workers = _children(os.getpid())
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 90
    while any(_children(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.5)
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config):
    # SIGTERM (a CI timeout, `kill`) ends the run as Ctrl-C does: fixtures are torn down and
    # the shared Ray head is stopped at exit instead of outliving the run.
    signal.signal(signal.SIGTERM, _interrupt_workers if _controller(config) else _interrupt)


def _controller(config) -> bool:
    """Whether this process is the xdist controller (it runs no test; its workers do)."""
    return bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput")


# ------------------------------------------------------------ built once per test run


def _run_root_of(config) -> Path:
    """The folder every process of this run shares: the controller's base temp dir, which
    holds each xdist worker's own (``popen-gwN``)."""
    base = config._tmp_path_factory.getbasetemp()
    return base.parent if hasattr(config, "workerinput") else base


def built_once(request, name: str, build: Callable[[], dict]) -> dict:
    """What ``build`` returned, built by the first process of the run that asks for ``name``.

    The suite runs in two processes (``make test``); the expensive session fixtures (a
    corpus, its shards, a search, a tracking server) are the same in both, so one builds
    while the other waits on a file lock, then reads the JSON the builder left. A build that
    fails leaves no JSON: the next process to ask tries again (and fails with its own error).
    """
    root = _run_root_of(request.config)
    done = root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        deadline = time.time() + 900  # the longest build (a search) takes ~1–2 min
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() > deadline:
                    raise RuntimeError(f"{name} was still being built after 900 s") from None
                time.sleep(0.5)
        if done.exists():
            return json.loads(done.read_text())
        value = build()
        done.write_text(json.dumps(value))
        return value


#: The files that take longest, longest first. ``make test`` runs the suite in two
#: processes, a file at a time each (``-n 2 --dist loadfile --no-loadscope-reorder``: by
#: default xdist hands out the files with the most tests first, which left the longest to
#: run alone at the end). Handing these out first keeps the two busy to the end; the first
#: needs no shared search, so it runs while the second process builds the run's one (``tuned``).
#: The order: seconds summed over each file's tests in a clean clone's ``make test`` of
#: 3827795 (tune_stream 336, tune 297, label 260, posthoc 218, demo 204, musicnn_pipeline
#: 195, ray_start 141, searchdata 139, failures 114, s3 113, extract 98, audio_shapes 59,
#: store 52).
_LONGEST_FIRST = (
    "test_tune_stream.py",
    "test_tune.py",
    "test_label.py",
    "test_posthoc.py",
    "test_demo.py",
    "test_musicnn_pipeline.py",
    "test_ray_start.py",
    "test_searchdata.py",
    "test_failures.py",
    "test_s3.py",
    "test_extract.py",
    "test_audio_shapes.py",
    "test_store.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept within


def pytest_unconfigure(config):
    # Here, not only at exit: an xdist worker's process outlives its session.
    _SharedRay.stop()
    if _controller(config):  # the servers the workers shared outlive each worker's session
        for record in _run_root_of(config).glob("*.server.json"):
            stop_session(json.loads(record.read_text())["pid"], grace_s=20)


def shared_ray_address() -> str:
    """Address of the run's shared Ray head (started on first call)."""
    return _SharedRay.get()


@pytest.fixture(scope="session")
def ray_local():
    """The run's shared Ray runtime, joined by the test process (2 CPUs)."""
    import ray

    ray.init(
        address=shared_ray_address(),
        include_dashboard=False,
        log_to_driver=False,
        ignore_reinit_error=True,
    )
    yield ray
    ray.shutdown()


def run_job(
    module: str,
    *args: str,
    timeout: float = 600,
    env: dict | None = None,
    own_runtime: bool = False,
) -> subprocess.CompletedProcess:
    """Run ``python -m <module> args…`` as a user would; capture its output.

    The job joins the run's shared Ray head (through ``RAY_ADDRESS``, as a user's shell
    would point it at a cluster) unless ``own_runtime`` or an ``env`` of its own is given:
    then it starts a local runtime as on a laptop (its ``--num-cpus`` counts; its workers
    see ``env``, which those of a shared head would not).
    """
    if env is None and not own_runtime:
        env = {"RAY_ADDRESS": shared_ray_address()}
    else:
        env = {"RAY_ADDRESS": "", **(env or {})}
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )


def main_in_process(capfd, module: str, *args: str) -> subprocess.CompletedProcess:
    """``python -m <module> args…`` run in this process, for a command line it refuses:
    its exit code, and what it wrote to stdout and stderr (file descriptors, so Ray's or
    TensorFlow's lines would show too) as :func:`run_job` returns them.

    A refusal is over before anything starts; as a subprocess it costs an interpreter and
    the job's imports (2–4 s) for a few microseconds of checks. The subprocess path itself
    (``sys.exit(main())``) is run by each job's other refusal tests, through :func:`run_job`.
    """
    import importlib

    capfd.readouterr()  # what earlier steps of the test printed is not the job's
    try:
        code = importlib.import_module(module).main(list(args))
    except SystemExit as exc:  # argparse's refusals exit from inside main
        code = exc.code
    out, err = capfd.readouterr()
    return subprocess.CompletedProcess(["python", "-m", module, *args], code, out, err)


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The one line a job refused with (exit 2, no traceback; Ray's WARNING lines aside)."""
    lines = [line for line in result.stderr.splitlines() if line.strip() and "WARNING" not in line]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


#: Ports :func:`free_port` handed out in this run.
_GIVEN_PORTS: set[int] = set()


def write_learnable_shards(
    root: str, *, feature: str, genres: tuple[str, ...], tracks: int, segments: int, seed: int = 5
) -> int:
    """Shards of ``tracks`` tracks written directly, no audio: ``feature`` is noise with a
    band of bins (8 at most) raised for each genre (learnable), the tracks dealt to
    ``genres`` in turn, 50 to a shard. Their features' bytes."""
    from genre.config import FeatureConfig
    from genre.shards import ShardStore, segments_table, write_shard

    cfg = FeatureConfig(features=(feature,))
    rng = np.random.default_rng(seed)
    per_shard = 50
    for start in range(0, tracks, per_shard):
        ids = [f"{genres[k % len(genres)]}/t{k:05d}.wav" for k in range(start, start + per_shard)]
        ids = ids[: tracks - start]
        genre = np.repeat([t.split("/")[0] for t in ids], segments).astype(object)
        values = rng.standard_normal((len(genre), *cfg.shape(feature)), dtype=np.float32)
        band = min(8, cfg.shape(feature)[-1] // len(genres))
        for g, name in enumerate(genres):
            values[genre == name, ..., g * band : (g + 1) * band] += 2.0
        track = np.repeat(ids, segments).astype(object)
        table = segments_table(
            track_id=track,
            path=track,
            genre=genre,
            segment=np.tile(np.arange(segments), len(ids)),
            start_s=np.zeros(len(track)),
            duration_s=np.full(len(track), 3.0 * segments),
            features={feature: values},
            cfg=cfg,
        )
        write_shard(root, table)
    ShardStore(root, cfg).write_manifest()
    return tracks * segments * 4 * int(np.prod(cfg.shape(feature)))


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


def start_mlflow_server(
    root: Path,
    *,
    artifacts: str | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 90.0,
) -> tuple[subprocess.Popen, str]:
    """A real ``mlflow server`` on a free loopback port: SQLite backend, artifacts proxied
    to ``artifacts`` (default: a local folder under ``root``; ``s3://…`` with the store's
    endpoint and credentials in ``env``)."""
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
            artifacts or str(root / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # MLflow 3 starts a job runner and seven huey consumers beside the server, for
        # features genre does not use: seconds of CPU at each start on 2 cores.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})},
    )
    deadline = time.time() + timeout_s
    try:
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
        raise RuntimeError(f"mlflow server did not answer on {uri} within {timeout_s:.0f} s")
    except BaseException:  # a timeout, or Ctrl-C/SIGTERM while it starts: no server left
        stop_mlflow_server(proc)
        raise


def stop_mlflow_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def mlflow_server(request, tmp_path_factory):
    """URI of a real MLflow tracking server for the run (stopped at its end), shared by the
    xdist workers: stopped by the controller once they are all done."""
    started = []

    def start() -> dict:
        proc, uri = start_mlflow_server(tmp_path_factory.mktemp("mlflow"))
        started.append(proc)
        return {"uri": uri, "pid": proc.pid}

    server = built_once(request, "mlflow.server", start)
    yield server["uri"]
    if not hasattr(request.config, "workerinput") and started:
        stop_mlflow_server(started[0])


class Tuned:
    """What the run's one small search produced (see :func:`tuned`)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


@pytest.fixture(scope="session")
def small_corpus(request, tmp_path_factory) -> Path:
    """The synthetic corpus at test size: 10 genres × 4 tracks of 9 s (3 segments each)."""

    def build() -> dict:
        from genre.synth import write_corpus

        root = tmp_path_factory.mktemp("small-corpus")
        write_corpus(root, per_genre=4, seconds=9.0, seed=11)
        return {"path": str(root)}

    return Path(built_once(request, "small-corpus", build)["path"])


@pytest.fixture(scope="session")
def small_shards(request, small_corpus, tmp_path_factory) -> Path:
    def build() -> dict:
        out = tmp_path_factory.mktemp("small-shards")
        result = run_job(
            "jobs.extract", str(small_corpus), str(out), "--num-cpus", "2", "--features", "mfcc,mel"
        )
        assert result.returncode == 0, result.stderr
        return {"path": str(out)}

    return Path(built_once(request, "small-shards", build)["path"])


@pytest.fixture(scope="session")
def tuned(request, small_shards, mlflow_server, tmp_path_factory) -> Tuned:
    """One small search through the tune job's command line, against the real MLflow server
    (built once per run, see :func:`built_once`).

    ``--gpus-per-trial 0.5`` on a runtime without GPUs: the search only finishes if
    trials do not ask for GPUs the cluster lacks.
    """

    def build() -> dict:
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
            "--refit-folds",  # the least a refit takes (the default 5 is K + 1 = 6 trainings)
            "2",
        ]
        result = run_job("jobs.tune", *args, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        run = {"args": result.args, "returncode": 0, "stdout": result.stdout}
        return {"result": {**run, "stderr": result.stderr}, "args": args, "storage": str(storage)}

    built = built_once(request, "tuned", build)
    return Tuned(
        result=subprocess.CompletedProcess(**built["result"]),
        args=built["args"],
        uri=mlflow_server,
        name="genre-test",
        storage=Path(built["storage"]),
        shards=small_shards,
    )
