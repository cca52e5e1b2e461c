"""Connecting to Ray: the same code locally and on a cluster.

``address=None`` and no ``RAY_ADDRESS`` start (or join) a local Ray runtime;
``--address``/``RAY_ADDRESS`` point at a cluster (``auto``, ``ray://host:10001`` or
``host:6379``).

A local runtime listens on the loopback interface only (GCS, raylet, workers, agents):
a laptop run is not reachable from the network. A cluster address is probed with a
bounded wait (:func:`check_address`) before Ray is asked to join it, because Ray
itself retries an address nobody listens on forever.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import warnings
from collections.abc import Iterator
from urllib.parse import urlsplit

from genre.errors import ParameterError

__all__ = [
    "JOIN_TIMEOUT_S",
    "check_address",
    "init_ray",
    "cluster_gpus",
    "live_nodes",
    "node_id",
    "bounded_retries",
]

#: Seconds a cluster address may take to accept a connection before a job gives up.
JOIN_TIMEOUT_S = 10.0
#: Ray's switch between a local-only runtime (node IP 127.0.0.1, the default on macOS and
#: Windows) and one other machines may join (the machine's address, the Linux default).
_CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _address(address: str | None) -> str | None:
    """The address :func:`init_ray` joins: ``address``, else ``RAY_ADDRESS``, else None."""
    return address or os.environ.get("RAY_ADDRESS") or None


def check_address(address: str | None = None, *, timeout_s: float = JOIN_TIMEOUT_S) -> None:
    """Refuse a cluster address that accepts no connection within ``timeout_s``.

    Cheap (no Ray start), so a job calls it before it creates its output or lock.
    ``None`` (and no ``RAY_ADDRESS``), ``local`` and ``auto`` name no remote address
    and pass.

    Parameters
    ----------
    address : str or None
        ``host:port`` (the GCS) or ``ray://host:port`` (Ray Client); ``None`` reads
        ``RAY_ADDRESS``.
    timeout_s : float
        Longest wait for the connection.

    Raises
    ------
    ParameterError
        A malformed address, or nothing answering on it in time.
    """
    address = _address(address)
    if address in (None, "local", "auto"):
        return
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        port = parts.port or (10001 if parts.scheme == "ray" else None)
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ParameterError(f"--address {address!r} must be host:port, ray://host:port or auto")
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise ParameterError(
            f"cannot reach the Ray cluster at {address!r} within {timeout_s:.0f} s "
            f"({exc.strerror or exc}): start it, or fix --address / RAY_ADDRESS"
        ) from exc


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Make a new local runtime take 127.0.0.1 as its node IP, so that every Ray server
    (GCS, raylet, workers, dashboard and runtime-env agents) binds to loopback.

    Ray gives every server the node IP, and a new runtime's node IP is the loopback
    address only where ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` is off; Ray reads that
    switch once, when ``ray._private.ray_constants`` is imported (often before this
    runs), so the constant is set too. ``ray.init(_node_ip_address="127.0.0.1")`` is no
    help: ray.init maps loopback to the machine's address.
    """
    from ray._private import ray_constants

    # A private constant: a Ray without it keeps its own default (the loopback test says so).
    known = hasattr(ray_constants, "ENABLE_RAY_CLUSTER")
    saved = getattr(ray_constants, "ENABLE_RAY_CLUSTER", None), os.environ.get(_CLUSTER_SWITCH)
    if known:
        ray_constants.ENABLE_RAY_CLUSTER = False
    os.environ[_CLUSTER_SWITCH] = "0"  # the processes ray.init starts see the same
    try:
        yield
    finally:
        if known:
            ray_constants.ENABLE_RAY_CLUSTER = saved[0]
        if saved[1] is None:
            os.environ.pop(_CLUSTER_SWITCH, None)
        else:
            os.environ[_CLUSTER_SWITCH] = saved[1]


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

    Raises
    ------
    ParameterError
        ``num_cpus`` not positive; a cluster address that does not answer within
        :data:`JOIN_TIMEOUT_S` (:func:`check_address`) or refuses the connection.
    """
    import ray

    if ray.is_initialized():
        return
    if num_cpus is not None and num_cpus <= 0:
        raise ParameterError(f"--num-cpus={num_cpus} must be a positive integer")
    address = _address(address)
    check_address(address)
    # Workers of a runtime started here inherit it: TensorFlow stays quiet unless something
    # is wrong.
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
    # ray.init replaces the process's SIGTERM handler with its own (exit status 15, no
    # word why); a job's handler (run_main: SIGTERM stops the job as Ctrl-C does) is
    # put back.
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:
        with _loopback_only() if address in (None, "local") else contextlib.nullcontext():
            ray.init(**kwargs)
    except ConnectionError as exc:
        raise ParameterError(f"cannot reach the Ray cluster at {address!r}: {exc}") from exc
    finally:
        if callable(sigterm):
            signal.signal(signal.SIGTERM, sigterm)
    ctx = __import__("ray.data", fromlist=["DataContext"]).DataContext.get_current()
    ctx.enable_progress_bars = True
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def cluster_gpus() -> float:
    """GPUs the connected cluster declares (0.0 when none)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def live_nodes() -> list[tuple[float, float]]:
    """``(CPUs, GPUs)`` of each live Ray node."""
    import ray

    return [
        (float(n["Resources"].get("CPU", 0.0)), float(n["Resources"].get("GPU", 0.0)))
        for n in ray.nodes()
        if n.get("Alive")
    ]


def node_id() -> str:
    """The Ray node this runs on ("" outside Ray): the summaries say where work ran.

    Imports nothing: a process that never imported Ray is not on a node.
    """
    import sys

    if "ray" not in sys.modules:
        return ""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


@contextlib.contextmanager
def bounded_retries() -> Iterator[None]:
    """Around ``map_batches`` calls that bound retries with ``max_retries`` or
    ``max_task_retries``: hide Ray's warning that ``**ray_remote_args`` is deprecated,
    and only that one.

    Ray Data retries a dead worker's task forever by default; the crash journal needs
    three runs of a batch to skip its culprit. Ray 2.60 names no parameter for that bound
    (``DataContext.max_map_retries`` retries an exception in a live worker, not a dead
    one), so it goes in ``**ray_remote_args``, which Ray deprecates in favour of named
    ones (ray-project/ray#65227).
    """
    from ray.util.annotations import RayDeprecationWarning

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated", RayDeprecationWarning)
        yield
