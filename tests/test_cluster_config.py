"""cluster.yaml and cluster-local.yaml: accepted by Ray's own launcher validation, offline, and true
to what the docs promise.

``ray up`` runs ``prepare_config`` (merge with the AWS defaults, merge setup commands, check the
Docker section, fill per-type worker bounds) and then ``validate_config`` (jsonschema against
``ray/autoscaler/ray-schema.json`` plus the head-type and worker-count checks) before it makes
any cloud call. The tests run the same two functions, so a key Ray does not know fails here.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"
LOCAL_YAML = Path(__file__).resolve().parents[1] / "cluster-local.yaml"

#: The only values a user fills in; everything else must work as written.
PLACEHOLDERS = {"<BUCKET>"}
LOCAL_PLACEHOLDERS = {"<HEAD_IP>", "<WORKER_IP_1>", "<WORKER_IP_2>", "<SSH_USER>"}

#: vCPUs and GPUs of the instance types the pools may use.
INSTANCE_SPECS = {"m5.2xlarge": (8, 0), "c6i.4xlarge": (16, 0), "g5.xlarge": (4, 1)}


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def _worker_setup(config: dict, node_type: str) -> list[str]:
    # As the autoscaler does: a node type's own list replaces the merged global one.
    return config["available_node_types"][node_type].get(
        "worker_setup_commands", config["worker_setup_commands"]
    )


def _images(raw: dict) -> dict[str, str]:
    docker = raw["docker"]
    images = {key: docker[key] for key in ("image", "head_image", "worker_image") if key in docker}
    for name, node_type in raw["available_node_types"].items():
        if "worker_image" in node_type.get("docker", {}):
            images[name] = node_type["docker"]["worker_image"]
    return images


def _mlflow_server_argv(raw: dict) -> list[str]:
    commands = [
        c
        for c in raw["head_setup_commands"] + raw["head_start_ray_commands"]
        if "mlflow server" in c
    ]
    assert len(commands) == 1, commands
    inner = re.search(r"exec (mlflow server[^']*)'", commands[0])
    assert inner, commands[0]
    return shlex.split(inner.group(1))


def _flag(argv: list[str], name: str) -> str:
    assert name in argv, f"{name} missing from {argv}"
    return argv[argv.index(name) + 1]


def test_ray_launcher_validation_accepts_the_config(prepared):
    assert prepared["cluster_name"] == "genre"
    assert prepared["provider"]["type"] == "aws"
    assert prepared["provider"]["region"] == "us-west-2"


@pytest.mark.parametrize(
    "path, key, typo",
    [
        ((), "max_workers", "max_worker"),
        (("available_node_types", "gpu"), "max_workers", "max_worker"),
        (("docker",), "run_options", "run_option"),
    ],
)
def test_a_misspelled_key_is_rejected_by_the_same_validation(raw, path, key, typo):
    config = copy.deepcopy(raw)
    section = config
    for step in path:
        section = section[step]
    section[typo] = section.pop(key)
    with pytest.raises(jsonschema.ValidationError, match=f"'{typo}' was unexpected"):
        validate_config(prepare_config(config))


def test_head_cpu_and_gpu_pools_exist_with_their_resources(raw, prepared):
    types = prepared["available_node_types"]
    assert set(types) == {"head", "cpu", "gpu"} and prepared["head_node_type"] == "head"
    assert types["head"]["resources"] == {"CPU": 0}  # nothing heavy lands next to GCS and MLflow
    assert types["head"]["max_workers"] == 0
    assert types["cpu"]["resources"].get("CPU", 0) >= 1 and "GPU" not in types["cpu"]["resources"]
    assert types["gpu"]["resources"].get("GPU", 0) >= 1
    for name, node_type in types.items():
        cpus, gpus = INSTANCE_SPECS[node_type["node_config"]["InstanceType"]]
        assert node_type["resources"].get("CPU", 0) <= cpus, name
        assert node_type["resources"].get("GPU", 0) == gpus, name
        assert 0 <= node_type["min_workers"] <= node_type["max_workers"], name
    assert raw["max_workers"] == types["cpu"]["max_workers"] + types["gpu"]["max_workers"]
    assert raw["idle_timeout_minutes"] > 0


def test_images_are_pinned_to_the_installed_ray(raw):
    images = _images(raw)
    assert {"head_image", "worker_image", "gpu"} <= set(images)
    pattern = re.compile(rf"rayproject/ray:{re.escape(ray.__version__)}-py3\d+-(cpu|gpu)")
    for where, image in images.items():
        assert pattern.fullmatch(image), (
            f"{where}: {image} is not rayproject/ray:{ray.__version__}-pyXY-cpu|gpu"
        )
        assert "latest" not in image and "nightly" not in image
    assert images["gpu"].endswith("-gpu") and images["head_image"].endswith("-cpu")
    assert len({image.split("-")[1] for image in images.values()}) == 1  # one Python everywhere


def test_every_node_installs_this_package(raw, prepared):
    assert raw["file_mounts"]["/home/ray/genre"] == "."
    plain = re.compile(r"pip install .*-e '/home/ray/genre\[cpu\]'$")
    assert any(plain.search(c) for c in prepared["head_setup_commands"])
    assert any(plain.search(c) for c in _worker_setup(prepared, "cpu"))
    assert any(
        "pip install" in c and "-e '/home/ray/genre[gpu]'" in c
        for c in _worker_setup(prepared, "gpu")
    )
    # Exactly one TensorFlow build per node: the CPU build never lands on GPU nodes.
    assert not any("[cpu]" in c for c in _worker_setup(prepared, "gpu"))
    assert "-e TF_CPP_MIN_LOG_LEVEL=2" in raw["docker"]["run_options"]


def test_mlflow_runs_basic_auth_on_a_non_public_address(raw):
    argv = _mlflow_server_argv(raw)
    assert _flag(argv, "--app-name") == "basic-auth"
    host = ipaddress.ip_address(_flag(argv, "--host"))
    assert host.is_loopback or (host.is_private and not host.is_unspecified), host
    assert _flag(argv, "--port") == "5000"
    assert _flag(argv, "--artifacts-destination").startswith("s3://<BUCKET>/")
    assert "--serve-artifacts" in argv
    # The SQLite store sits in a folder mounted from the head's disk, not in the throwaway
    # container.
    assert _flag(argv, "--backend-store-uri").startswith("sqlite:///$HOME/mlflow/")
    assert "-v /home/ubuntu/mlflow:/home/ray/mlflow" in raw["docker"]["head_run_options"]
    assert f"-e MLFLOW_TRACKING_URI=http://{host}:5000" in raw["docker"]["head_run_options"]


def test_nothing_is_opened_to_the_internet(raw):
    # Ray's own group: all traffic between members, SSH from outside; no extra rules, no other
    # groups.
    assert raw["provider"]["security_group"]["IpPermissions"] == []
    assert all(
        "SecurityGroupIds" not in t["node_config"] for t in raw["available_node_types"].values()
    )
    head_start = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host" not in head_start  # Ray's default: the head's loopback only
    docker = raw["docker"]
    options = " ".join(
        docker.get("run_options", [])
        + docker.get("head_run_options", [])
        + docker.get("worker_run_options", [])
    )
    assert not re.search(r"(^|\s)(-p|--publish)(\s|=)", options)


@pytest.mark.parametrize(
    "path, placeholders",
    [(CLUSTER_YAML, PLACEHOLDERS), (LOCAL_YAML, LOCAL_PLACEHOLDERS)],
    ids=["aws", "local"],
)
def test_only_documented_placeholders_are_left(path, placeholders):
    text = path.read_text()
    found = set(re.findall(r"<[A-Za-z_][A-Za-z0-9_-]*>", text))
    assert found == placeholders
    header = text.splitlines()[0]
    assert header.startswith("#") and all(p in header for p in placeholders)


@pytest.mark.parametrize("path", [CLUSTER_YAML, LOCAL_YAML], ids=["aws", "local"])
def test_every_section_has_a_comment_line(path):
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"[a-z_]+:", line):
            previous = next(p for p in reversed(lines[:i]) if p.strip())
            assert previous.startswith("#"), f"section {line.split(':')[0]!r} has no comment line"


# ----------------------------------------------------------------------------- cluster-local.yaml


@pytest.fixture(scope="module")
def local_raw() -> dict:
    return yaml.safe_load(LOCAL_YAML.read_text())


@pytest.fixture(scope="module")
def local_prepared(local_raw) -> dict:
    config = prepare_config(copy.deepcopy(local_raw))
    validate_config(config)
    return config


def _ray_start(commands: list[str]) -> str:
    starts = [c for c in commands if "ray start" in c]
    assert len(starts) == 1, commands
    return starts[0]


def test_ray_launcher_validation_accepts_the_local_config(local_prepared):
    assert local_prepared["cluster_name"] == "genre-local"
    assert local_prepared["provider"]["type"] == "local"
    assert local_prepared["provider"]["head_ip"] == "<HEAD_IP>"
    # Ray's on-prem provider keeps every listed worker: as many as worker_ips, no autoscaling.
    (node_type,) = local_prepared["available_node_types"].values()
    assert (
        node_type["min_workers"]
        == node_type["max_workers"]
        == len(local_prepared["provider"]["worker_ips"])
    )


def test_a_misspelled_key_in_the_local_config_is_rejected(local_raw):
    config = copy.deepcopy(local_raw)
    config["file_mount"] = config.pop("file_mounts")
    with pytest.raises(jsonschema.ValidationError, match="'file_mount' was unexpected"):
        validate_config(prepare_config(config))


def test_every_local_node_installs_this_package_in_its_venv(local_raw, local_prepared):
    assert local_raw["file_mounts"]["~/genre"] == "."
    assert local_raw["rsync_filter"] == [".gitignore"]  # the laptop's .venv stays at home
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert "cd ~/genre && make install" in local_prepared[key], key
    # The job entrypoints' `python` is the venv's on every node.
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "export PATH=$HOME/genre/.venv/bin:$PATH" in _ray_start(local_prepared[key]), key


def test_local_nodes_keep_token_authentication_on(local_raw, local_prepared):
    assert local_raw["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert re.search(r"\bRAY_AUTH_MODE=token\b", _ray_start(local_prepared[key])), key


def test_the_local_job_server_listens_on_loopback_only(local_prepared):
    argv = shlex.split(_ray_start(local_prepared["head_start_ray_commands"]).split(";")[-1])
    flags = dict(a.split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    assert ipaddress.ip_address(flags["--dashboard-host"]).is_loopback
