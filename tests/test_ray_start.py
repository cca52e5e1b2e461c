"""extract → tune → label submitted with ``ray job submit`` to a cluster made with ``ray start``.

The README's "On your own machines", run as written on one machine: a token made with
``ray get-auth-token --generate``, a head started with ``ray start --head`` (dashboard and job
server on 127.0.0.1, token authentication on), a second node joined with ``ray start --address``
in its own process with its own CPU and one declared GPU, and the three jobs sent to the job
server with ``--working-dir .`` as from a laptop at the end of an SSH tunnel. Extraction spreads
over both nodes; every trial (``--gpus-per-trial 0.5``) and predictor (``--gpus-per-worker 0.5``)
goes to the GPU node. TensorFlow runs on its CPU there: what is tested is where Ray puts the work.

Unlike ``ray stop``, which ends every Ray process on the machine, the test stops only the two
nodes it started (their sessions), so Ray runtimes of tests running beside it live on. The nodes
get free ports and temp dirs of their own: the head's keeps a plain ``ray.init()`` elsewhere from
joining it, and the second node's keeps its copy of ``--working-dir`` apart, as on a machine of
its own (a node that shares the head's folder replaces the copy a running driver stands in when it
first meets a new working dir). The token lives in the test's folder, never in ``~/.ray``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import RAY, REPO, free_port, start_ray_node, stop_ray_node

pytestmark = [pytest.mark.slow, pytest.mark.multinode]

#: Each node's object store: the data here is a few MB; the default (30 % of RAM per node)
#: is not needed.
OBJECT_STORE_BYTES = str(300 * 1024**2)


def _client_env(token_path: Path) -> dict[str, str]:
    """What a submitting shell sets: token mode, and where the token is."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path))
    return env


def _node_env(token_path: Path) -> dict[str, str]:
    env = _client_env(token_path)
    # As after `. .venv/bin/activate`: the job entrypoints' `python` is the venv's.
    env["PATH"] = f"{RAY.parent}{os.pathsep}{env.get('PATH', '')}"
    # SIGTERM would otherwise drain the node for up to 30 s before it stops.
    env["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] = "0"
    return env


def _ray(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(RAY), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def _alive_nodes(dashboard: str, env: dict[str, str]) -> list[dict]:
    listed = _ray("list", "nodes", "--address", dashboard, "--format", "json", env=env)
    if listed.returncode != 0:
        return []
    return [n for n in json.loads(listed.stdout) if n["state"] == "ALIVE"]


@pytest.fixture(scope="module")
def cluster():
    """A head (1 CPU, dashboard on loopback) and a second node (1 CPU, 1 GPU declared) made
    with ``ray start``."""
    # A short folder under /tmp: Ray's Unix socket paths must stay under ~107 characters.
    root = Path(tempfile.mkdtemp(prefix="genre-rs-", dir="/tmp"))
    procs: list[subprocess.Popen] = []
    try:
        # `ray get-auth-token --generate` writes ~/.ray/auth_token; HOME points it at our folder.
        bare = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
        generated = _ray("get-auth-token", "--generate", env=bare | {"HOME": str(root)})
        token_path = root / ".ray" / "auth_token"
        assert generated.returncode == 0 and token_path.is_file(), generated.stderr
        token_path.chmod(0o600)
        env = _node_env(token_path)
        port, dashboard_port = free_port(), free_port()
        dashboard = f"http://127.0.0.1:{dashboard_port}"
        procs.append(
            start_ray_node(
                [
                    "--head",
                    "--dashboard-host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--dashboard-port",
                    str(dashboard_port),
                    "--ray-client-server-port",
                    str(free_port()),
                    "--dashboard-agent-listen-port",
                    str(free_port()),
                    "--metrics-export-port",
                    str(free_port()),
                    "--temp-dir",
                    str(root / "ray"),
                    "--num-cpus",
                    "1",
                    "--object-store-memory",
                    OBJECT_STORE_BYTES,
                    "--disable-usage-stats",
                ],
                root / "head.log",
                env,
            )
        )
        head = _alive_nodes(dashboard, env)
        assert len(head) == 1, (root / "head.log").read_text()[-3000:]
        procs.append(
            start_ray_node(
                [
                    "--address",
                    f"{head[0]['node_ip']}:{port}",
                    "--dashboard-agent-listen-port",
                    str(free_port()),
                    "--metrics-export-port",
                    str(free_port()),
                    "--temp-dir",
                    str(root / "worker"),
                    "--num-cpus",
                    "1",
                    "--num-gpus",  # declared, as on a GPU machine: where Ray puts GPU work
                    "1",
                    "--object-store-memory",
                    OBJECT_STORE_BYTES,
                    "--disable-usage-stats",
                ],
                root / "worker.log",
                env,
            )
        )
        deadline = time.time() + 60
        while len(nodes := _alive_nodes(dashboard, env)) < 2 and time.time() < deadline:
            time.sleep(1)
        assert len(nodes) == 2, (root / "worker.log").read_text()[-3000:]
        yield {
            "dashboard": dashboard,
            "dashboard_port": dashboard_port,
            "ip": head[0]["node_ip"],
            "env": _client_env(token_path),
            "head": next(n["node_id"] for n in nodes if n["is_head_node"]),
            "worker": next(n["node_id"] for n in nodes if not n["is_head_node"]),
        }
    finally:
        for proc in reversed(procs):
            stop_ray_node(proc)
        shutil.rmtree(root, ignore_errors=True)


def _submit(cluster: dict, name: str, *entrypoint: str, timeout_s: float = 480) -> str:
    """``ray job submit --working-dir . -- python -m jobs.<name> …``; its output (the job's log)."""
    job_id = f"genre-{name}-{uuid.uuid4().hex[:8]}"
    argv = [
        "job",
        "submit",
        "--address",
        cluster["dashboard"],
        "--submission-id",
        job_id,
        "--working-dir",
        ".",
        "--",
        "python",
        "-m",
        f"jobs.{name}",
        *entrypoint,
    ]
    try:
        done = _ray(*argv, env=cluster["env"], timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _ray("job", "stop", "--address", cluster["dashboard"], job_id, env=cluster["env"])
        raise
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    return done.stdout


@pytest.fixture(scope="module")
def pipeline(cluster, small_corpus, mlflow_server, tmp_path_factory):
    out, uri = tmp_path_factory.mktemp("ray-start"), mlflow_server
    extract = _submit(
        cluster, "extract", str(small_corpus), str(out / "shards"), "--features", "mfcc"
    )
    tune = _submit(
        cluster,
        "tune",
        str(out / "shards"),
        "--models",
        "mlp",
        "--num-samples",
        "2",
        "--max-epochs",
        "2",
        "--grace-epochs",
        "1",
        "--tracking-uri",
        uri,
        "--experiment",  # the run's shared tracking server: an experiment of its own
        "ray-start",
        "--register-as",
        "genre-ray-start",
        "--storage",
        str(out / "ray_results"),
        "--gpus-per-trial",
        "0.5",
        "--refit-folds",  # the refit's K + 1 trainings would queue on the GPU node's one
        "0",  # CPU; where Ray puts a trial is what is tested, and trials show it
    )
    label = _submit(
        cluster,
        "label",
        str(small_corpus),
        str(out / "labels"),
        "--model",
        "models:/genre-ray-start@champion",
        "--tracking-uri",
        uri,
        "--gpus-per-worker",
        "0.5",
    )
    yield {"extract": extract, "tune": tune, "label": label, "out": out, "uri": uri}


def _nodes(stdout: str, word: str) -> dict[str, int]:
    """``ran on 2 node(s): 1a2b3c4d 7 tracks, …`` → {prefix: count}."""
    line = next(line for line in stdout.splitlines() if "node(s):" in line)
    return {m[0]: int(m[1]) for m in re.findall(rf"([0-9a-f]{{8}}) (\d+) {word}", line)}


def _trial_nodes(stdout: str) -> list[str]:
    return [
        line.split()[-1] for line in stdout.splitlines() if re.match(r"^[0-9a-f]{5}_\d{5} ", line)
    ]


def test_the_job_server_listens_on_loopback_only(cluster):
    if ipaddress.ip_address(cluster["ip"]).is_loopback:
        pytest.skip("this machine has no address but loopback")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((cluster["ip"], cluster["dashboard_port"]), timeout=5).close()
    socket.create_connection(("127.0.0.1", cluster["dashboard_port"]), timeout=5).close()


def test_a_client_without_the_token_is_turned_away(cluster, tmp_path):
    env = {k: v for k, v in cluster["env"].items() if not k.startswith("RAY_AUTH")} | {
        "HOME": str(tmp_path)
    }
    listed = _ray("job", "list", "--address", cluster["dashboard"], env=env)
    assert listed.returncode != 0
    assert "Missing authentication token" in listed.stdout + listed.stderr


def test_extract_wrote_shards_for_every_track(pipeline):
    manifest = json.loads((pipeline["out"] / "shards" / "_manifest.json").read_text())
    assert manifest["tracks"] == 40 and manifest["segments"] == 120


def test_tune_registered_a_champion_in_the_tracking_server(pipeline):
    from mlflow import MlflowClient

    version = MlflowClient(pipeline["uri"]).get_model_version_by_alias(
        "genre-ray-start", "champion"
    )
    assert version.status == "READY"
    assert len(_trial_nodes(pipeline["tune"])) == 2


def test_label_wrote_one_row_per_file(pipeline):
    import pandas as pd

    rows = pd.read_parquet(pipeline["out"] / "labels")
    assert len(rows) == 40 and rows.path.is_unique and rows.error.isna().all()


def test_extraction_ran_on_both_nodes(cluster, pipeline):
    extracted = _nodes(pipeline["extract"], "tracks")
    assert sum(extracted.values()) == 40
    assert set(extracted) == {cluster["head"][:8], cluster["worker"][:8]}


def test_every_trial_and_predictor_ran_on_the_gpu_node(cluster, pipeline):
    """Trials asking half a GPU, and predictors too, go where the GPU is (TensorFlow itself
    runs on the CPU there: the GPU is only declared)."""
    assert set(_trial_nodes(pipeline["tune"])) == {cluster["worker"][:8]}
    assert _nodes(pipeline["label"], "files") == {cluster["worker"][:8]: 40}
