"""A search over a collection twice as large as the memory it allows its Ray node's
object store (80 MiB) and its trials' data (``--trial-memory``, checked after every batch)
together: the trials stream the shards (``--data stream``), no object larger than the store
is made (the in-memory path puts the whole collection in one), and the search keeps its
promises (ASHA, MLflow runs, resume after a kill, a registered champion whose post-hoc fits
stream too, its statistics stored with it and read back on resume). What Ray spilled to disk,
the trials' data at its most and the peak resident memory of the job's driver and of the
Ray workers are printed (``-s``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import (
    RAY,
    REPO,
    ray_head_with,
    write_learnable_shards,
)

pytestmark = pytest.mark.slow

#: Ray's object store of the test's own node: the least Ray accepts.
OBJECT_STORE_BYTES = 80 * 1024**2
#: What each trial may take for its data beyond its framework and model (--trial-memory).
TRIAL_MIB = 256
#: Segments of the collection: log-mel, 66.5 kB each.
TRACKS, SEGMENTS, GENRES = 2150, 5, ("rock", "jazz", "pop", "blues")


@pytest.fixture(scope="module")
def big_shards(tmp_path_factory) -> tuple[str, int]:
    """Learnable log-mel shards written directly (no audio), several times the caps; the
    folder and its features' bytes."""
    root = str(tmp_path_factory.mktemp("big-shards"))
    size = write_learnable_shards(
        root, feature="mel", genres=GENRES, tracks=TRACKS, segments=SEGMENTS
    )
    return root, size


@pytest.fixture(scope="module")
def capped_ray():
    """A Ray node of its own with a small object store (2 CPUs, loopback): its address and
    its ``ray start`` process."""
    with ray_head_with({}, store_bytes=OBJECT_STORE_BYTES) as head:
        yield head


class _PeakRss:
    """The largest resident set (``VmHWM``) any process of a Ray node's session reached,
    sampled while a job runs (a trial's actor is gone before the job ends)."""

    def __init__(self, session: int):
        self.session, self.peak, self.stopped = session, {}, threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        from tests.conftest import _session

        while not self.stopped.is_set():
            for pid in _session(self.session):
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    name = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
                except OSError:
                    continue
                lines = status.splitlines()
                kb = next((int(x.split()[1]) for x in lines if x.startswith("VmHWM")), 0)
                if kb * 1024 > self.peak.get(pid, ("", 0))[1]:
                    self.peak[pid] = (name, kb * 1024)
            time.sleep(0.25)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()


def _store_stats(address: str) -> dict[str, int]:
    """What the node's object store has spilled to disk and allocated on disk beside it
    (objects larger than the store), in bytes, so far (``ray memory --stats-only``)."""
    import re

    out = subprocess.run(
        [str(RAY), "memory", "--stats-only", "--address", address],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "RAY_ADDRESS": ""},
    ).stdout
    assert "Plasma memory usage" in out, out

    def mib(pattern: str) -> int:
        found = re.search(pattern, out)
        return int(found.group(1)) * 2**20 if found else 0

    return {
        "spilled": mib(r"Spilled (\d+) MiB"),
        "beside": mib(r"filesystem mmap usage: (\d+) MiB"),
    }


def _kill_once_checkpointed(command: list[str], env: dict, storage: Path) -> None:
    """Run ``command`` and SIGKILL it (a crash, not an interrupt) once a trial has
    checkpointed an epoch under ``storage``."""
    proc = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if list(storage.glob("stream/*/checkpoint_*")):
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _run_watched(command: list[str], env: dict) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``command`` to its end; what it printed, and its peak resident bytes."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err, text=True)
        peak, deadline = 0, time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                peak = max(peak, *(int(x.split()[1]) * 1024 for x in status if "VmHWM" in x))
            except (OSError, TypeError):
                pass
            time.sleep(0.25)
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        out.seek(0), err.seek(0)
        return subprocess.CompletedProcess(command, proc.returncode, out.read(), err.read()), peak


def test_a_streamed_search_over_twice_its_caps_resumes_and_registers_a_champion(
    big_shards, capped_ray, mlflow_server, tmp_path
):
    import mlflow

    shards, corpus_bytes = big_shards
    address, head = capped_ray
    assert corpus_bytes >= 2 * (OBJECT_STORE_BYTES + TRIAL_MIB * 2**20)
    storage = tmp_path / "ray-results"
    args = [shards, "--data", "stream", "--models", "mlp", "--features", "mel"]
    args += ["--num-samples", "2", "--max-epochs", "2", "--grace-epochs", "1"]
    args += ["--trial-memory", str(TRIAL_MIB)]
    # The streamed refit is tested in test_searchdata (its folds' trainings cost minutes here).
    args += ["--refit-folds", "0", "--tracking-uri", mlflow_server, "--experiment", "stream"]
    args += ["--register-as", "genre-stream", "--storage", str(storage), "--name", "stream"]
    command = [sys.executable, "-m", "jobs.tune", *args]
    env = {**os.environ, "RAY_ADDRESS": address, "PYTHONUNBUFFERED": "1"}
    stats = storage / "stream" / "genre_stats" / "mel.json"
    with _PeakRss(head.pid) as rss:
        _kill_once_checkpointed(command, env, storage)
        assert stats.is_file(), "the statistics are stored before the first trial"
        stored = stats.stat().st_mtime_ns
        result, driver = _run_watched(command, env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "data: stream: --data stream" in result.stdout
    assert "tune: 2 trials" in result.stdout and "(resumed)" in result.stdout
    assert stats.stat().st_mtime_ns == stored, "a resumed search reads its statistics back"
    print(f"job driver: {driver / 2**20:.0f} MiB resident at its peak")
    # No object larger than the store: in memory, the trials' data (a copy of every segment)
    # is one object, which Ray can only allocate on disk beside an 80 MiB store.
    store = _store_stats(address)
    assert store["beside"] == 0, store
    print(f"spilled through the object store: {store['spilled'] / 2**20:.0f} MiB")
    workers = [b for name, b in rss.peak.values() if name.startswith("ray::")]
    print(f"largest Ray worker: {max(workers) / 2**20:.0f} MiB resident at its peak")
    client = mlflow.MlflowClient(mlflow_server)
    version = client.get_model_version_by_alias("genre-stream", "champion")
    runs = client.search_runs([client.get_experiment_by_name("stream").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    # Each trial checked its cap after every batch (a trial over it fails the search); what
    # its data took at most, beyond its framework and model:
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    took = [r.data.metrics["data_memory_mb"] for r in trials]
    assert len(took) >= 2 and max(took) <= TRIAL_MIB, took
    print(f"trials' data: at most {max(took):.0f} MiB of the {TRIAL_MIB} MiB cap")
    assert [p.info.status for p in parents] == ["FINISHED"], "the kill's run was resumed"
    assert version.run_id == parents[0].info.run_id
