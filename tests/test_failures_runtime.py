"""The Ray runtime under failure: unreachable clusters, SIGTERM, crashed files, loopback.

Each promise is held by real parts: the jobs run as a user runs them (``run_job``), Ray
starts for real, signals are real signals and sockets are read from ``/proc``.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from genre.errors import ParameterError
from genre.runtime import check_address
from genre.store import AttemptJournal
from jobs._cli import run_main
from tests.conftest import REPO, run_job, tone, write_audio

#: An address nobody listens on (port 1 is never a Ray port).
NOBODY = "127.0.0.1:1"


def _corpus(root: Path, *, n: int, seconds: float, ext: str = ".wav") -> Path:
    for i in range(n):
        write_audio(
            root / "pop" / f"pop.{i:05d}{ext}",
            tone(seconds=seconds, sample_rate=22050, freq_hz=220 + 30 * i),
            sample_rate=22050,
        )
    return root


# ----------------------------------------------------------------------------- joining a cluster


def test_extract_against_an_address_nobody_listens_on_exits_2_and_leaves_no_lock(tmp_path):
    root = _corpus(tmp_path / "corpus", n=1, seconds=3.5)
    out = tmp_path / "out"
    result = run_job("jobs.extract", str(root), str(out), "--address", NOBODY, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert f"cannot reach the Ray cluster at '{NOBODY}'" in result.stderr
    assert not out.exists()  # neither OUTPUT nor its _lock was created


def test_label_against_an_address_nobody_listens_on_exits_2_and_creates_no_output(tmp_path):
    root = _corpus(tmp_path / "corpus", n=1, seconds=3.5)
    out = tmp_path / "labels"
    result = run_job(
        "jobs.label", str(root), str(out), "--model", "zero-shot", "--address", NOBODY, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert f"cannot reach the Ray cluster at '{NOBODY}'" in result.stderr
    assert not out.exists()  # neither OUTPUT nor its _lock was created


def test_init_ray_against_an_address_nobody_listens_on_raises_a_parameter_error():
    """label and tune join through init_ray: it refuses the address instead of waiting."""
    code = textwrap.dedent(
        f"""
        from genre.errors import ParameterError
        from genre.runtime import init_ray
        try:
            init_ray(address={NOBODY!r})
        except ParameterError as exc:
            print("refused:", exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "refused: cannot reach the Ray cluster" in result.stdout


@pytest.mark.parametrize("address", ["no-port", "host:http", "ray://"])
def test_a_malformed_address_is_refused_with_the_forms_it_may_take(address):
    with pytest.raises(ParameterError, match="must be host:port, ray://host:port or auto"):
        check_address(address)


@pytest.mark.parametrize("address", [None, "local", "auto"])
def test_no_remote_address_is_not_probed(address, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    check_address(address)


# ----------------------------------------------------------------------------- SIGTERM


def test_sigterm_stops_a_job_body_as_ctrl_c_does_with_exit_143():
    before = signal.getsignal(signal.SIGTERM)
    cleaned = []

    def body() -> int:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)  # the handler interrupts this
            return 0
        finally:
            cleaned.append(True)

    assert run_main(body) == 143
    assert cleaned == [True]
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
def test_sigterm_of_a_running_extract_releases_its_lock_and_exits_143(tmp_path):
    root = _corpus(tmp_path / "corpus", n=12, seconds=30.0, ext=".flac")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "jobs.extract", str(root), str(out)]
    cmd += ["--num-cpus", "1", "--tracks-per-shard", "1", "--features", "mfcc"]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 180
    # After Ray started (ray.init sets a SIGTERM handler of its own) and work is under way.
    while time.time() < deadline and not list(out.glob("part-*.parquet")):
        time.sleep(0.05)
    assert proc.poll() is None, "the run must still be going for this test to mean anything"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 143, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("terminated: re-run the same command")
    assert "Traceback" not in stderr
    assert not (out / "_lock").exists()


# ----------------------------------------------------------------------------- crashed files


@pytest.mark.slow
def test_extract_retry_errors_tries_a_file_that_crashed_its_worker_again(tmp_path):
    """A good file whose worker was killed twice mid-decode (say, two ``kill -9`` of the
    job while it decoded a long file) is skipped as ``crashed`` until --retry-errors."""
    root = _corpus(tmp_path / "corpus", n=2, seconds=3.5)
    out = tmp_path / "out"
    victim = root / "pop" / "pop.00000.wav"
    journal = AttemptJournal(str(out))
    for _ in range(journal.max_attempts):  # what two killed attempts leave behind
        assert journal.begin("pop/pop.00000.wav", path=str(victim))
    args = ["jobs.extract", str(root), str(out), "--num-cpus", "1", "--features", "mfcc"]
    result = run_job(*args, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "crashed: 1" in result.stdout and "--retry-errors" in result.stdout, result.stdout
    result = run_job(*args, "--retry-errors", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 tracks → 1 segments" in result.stdout, result.stdout
    assert "0 skipped" in result.stdout and "tried again 1 file(s)" in result.stdout
    assert len(pq.read_table(out / "_errors.parquet")) == 0
    assert set(pq.read_table(out, columns=["track_id"]).column("track_id").to_pylist()) == {
        "pop/pop.00000.wav",
        "pop/pop.00001.wav",
    }


# ----------------------------------------------------------------------------- loopback


def _process_tree(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(children.get(pid, []))
    return tree


def _listening(pids: set[int]) -> list[tuple[str, int, str]]:
    """``(address, port, command)`` of every TCP socket the processes ``pids`` listen on."""
    owners: dict[str, int] = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owners[target[8:-1]] = pid
    found = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/net/{table}") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] != "0A" or fields[9] not in owners:  # 0A: LISTEN
                    continue
                hex_ip, hex_port = fields[1].split(":")
                raw = bytes.fromhex(hex_ip)  # 32-bit words in host (little-endian) order
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                try:
                    with open(f"/proc/{owners[fields[9]]}/cmdline") as g:
                        command = g.read().replace("\0", " ")[:80]
                except OSError:
                    command = "?"
                found.append((str(ipaddress.ip_address(raw)), int(hex_port, 16), command))
    return found


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="reads Linux's /proc")
def test_a_local_runtime_listens_on_loopback_only():
    """GCS, raylet, a worker and the agents of a local runtime are not on the network."""
    code = textwrap.dedent(
        """
        import sys
        import ray
        from genre.runtime import init_ray
        init_ray(num_cpus=1)
        assert ray.get(ray.remote(lambda: 1).remote()) == 1  # a worker is up
        print("ready", flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(2)  # agents started beside the raylet open their ports meanwhile
        sockets = _listening(_process_tree(proc.pid))
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert len(sockets) >= 3, sockets  # GCS, raylet, worker at least
    exposed = [s for s in sockets if not _loopback(s[0])]
    assert not exposed, f"listening beyond loopback: {exposed}"
