"""Connecting to Ray: the same code locally and on a cluster.

``address=None`` and no ``RAY_ADDRESS`` start (or join) a local Ray runtime;
``--address``/``RAY_ADDRESS`` point at a cluster (``auto``, ``ray://host:10001`` or
``host:6379``).
"""

from __future__ import annotations

import logging
import os

from genre.errors import ParameterError

__all__ = ["init_ray", "cluster_gpus"]


def init_ray(
    *, address: str | None = None, num_cpus: int | None = None, quiet: bool = True
) -> None:
    """Start or join Ray once per process.

    Parameters
    ----------
    address : str or None
        Cluster address; ``None`` uses ``RAY_ADDRESS`` when set, else a local runtime.
    num_cpus : int or None
        CPUs of a new local runtime (ignored when joining a cluster). Without it and
        without an address, a cluster started with ``ray start`` on this machine is joined.
    quiet : bool
        Hide Ray's start-up banner and per-task log lines.
    """
    import ray

    if ray.is_initialized():
        return
    if num_cpus is not None and num_cpus <= 0:
        raise ParameterError(f"--num-cpus={num_cpus} must be a positive integer")
    address = address or os.environ.get("RAY_ADDRESS") or None
    # Workers inherit this: TensorFlow and Ray stay quiet unless something is wrong.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    kwargs = dict(
        address=address,
        include_dashboard=False,
        logging_level=logging.WARNING if quiet else logging.INFO,
        log_to_driver=not quiet,
        configure_logging=True,
    )
    if address is None and num_cpus is not None:
        # CPUs of a local runtime were asked for: start one even where a `ray start`
        # cluster runs on this machine (ray.init() would join it and refuse num_cpus).
        kwargs.update(address="local", num_cpus=num_cpus)
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise ParameterError(f"cannot reach the Ray cluster at {address!r}: {exc}") from exc
    ctx = __import__("ray.data", fromlist=["DataContext"]).DataContext.get_current()
    ctx.enable_progress_bars = True
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def cluster_gpus() -> float:
    """GPUs the connected cluster declares (0.0 when none)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))
