"""extract → tune → label through the same command lines on a multi-node cluster.

A ``ray.cluster_utils.Cluster``: a head with no CPUs (as in cluster.yaml: it only runs the
drivers), a CPU worker and a worker that declares one GPU. TensorFlow itself runs on the CPU
there; what is tested is where Ray puts the work: extraction on the workers, every trial on
the GPU node when trials ask for half a GPU, and predictors there too.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import run_job

pytestmark = [pytest.mark.slow, pytest.mark.multinode]


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    cpu = c.add_node(num_cpus=2)
    gpu = c.add_node(num_cpus=2, num_gpus=1)
    c.wait_for_nodes()
    yield {
        "address": c.address,
        "head": c.head_node.node_id,
        "cpu": cpu.node_id,
        "gpu": gpu.node_id,
    }
    c.shutdown()


def _nodes(stdout: str, word: str) -> dict[str, int]:
    """``ran on 2 node(s): 1a2b3c4d 7 tracks, …`` → {prefix: count}."""
    line = next(line for line in stdout.splitlines() if "node(s):" in line)
    return {m[0]: int(m[1]) for m in re.findall(rf"([0-9a-f]{{8}}) (\d+) {word}", line)}


@pytest.fixture(scope="module")
def pipeline(cluster, small_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("multinode")
    address = ["--address", cluster["address"]]
    extract = run_job(
        "jobs.extract", str(small_corpus), str(out / "shards"), "--features", "mfcc", *address
    )
    assert extract.returncode == 0, extract.stderr[-3000:]
    tune = run_job(
        "jobs.tune",
        str(out / "shards"),
        "--models",
        "mlp",
        "--num-samples",
        "2",
        "--max-epochs",
        "2",
        "--grace-epochs",
        "1",
        "--gpus-per-trial",
        "0.5",
        "--tracking-uri",
        f"sqlite:///{out / 'mlflow.db'}",
        "--storage",
        str(out / "ray_results"),
        *address,
        timeout=600,
    )
    assert tune.returncode == 0, tune.stdout[-3000:] + tune.stderr[-3000:]
    label = run_job(
        "jobs.label",
        str(small_corpus),
        str(out / "labels"),
        "--model",
        "models:/genre@champion",
        "--tracking-uri",
        f"sqlite:///{out / 'mlflow.db'}",
        "--gpus-per-worker",
        "0.5",
        *address,
        timeout=600,
    )
    assert label.returncode == 0, label.stdout[-3000:] + label.stderr[-3000:]
    return {"extract": extract.stdout, "tune": tune.stdout, "label": label.stdout, "out": out}


def test_extraction_ran_on_the_worker_nodes(cluster, pipeline):
    nodes = _nodes(pipeline["extract"], "tracks")
    assert sum(nodes.values()) == 40
    assert set(nodes) <= {cluster["cpu"][:8], cluster["gpu"][:8]}
    assert cluster["head"][:8] not in nodes


def test_every_trial_ran_on_the_gpu_node(cluster, pipeline):
    rows = [
        line.split()
        for line in pipeline["tune"].splitlines()
        if re.match(r"^[0-9a-f]{5}_\d{5} ", line)
    ]
    assert len(rows) == 2
    assert {row[-1] for row in rows} == {cluster["gpu"][:8]}


def test_predictors_ran_on_the_gpu_node(cluster, pipeline):
    assert _nodes(pipeline["label"], "files") == {cluster["gpu"][:8]: 40}


def test_labels_cover_every_file_once(pipeline):
    import pandas as pd

    rows = pd.read_parquet(pipeline["out"] / "labels")
    assert len(rows) == 40 and rows.path.is_unique and rows.error.isna().all()
