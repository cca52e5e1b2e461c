"""What every job's command line shares: the error contract and common flags."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable

from genre.errors import GenreError, ParameterError

__all__ = [
    "comma_list",
    "run_main",
    "add_ray_flags",
    "check_ray_flags",
    "check_folder",
    "add_max_duration",
    "tracking_uri",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for a GenreError
        self.exit(2, f"{self.prog}: error: {message}\n")


def comma_list(text: str | None) -> tuple[str, ...]:
    """A flag's comma list: ``"a, b,,c"`` is ``("a", "b", "c")``; none given, ``()``."""
    return tuple(x.strip() for x in (text or "").split(",") if x.strip())


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    return _Parser(prog=prog, description=description)


def add_ray_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster address (default: RAY_ADDRESS or a local runtime)",
    )
    p.add_argument(
        "--num-cpus", type=int, default=None, help="CPUs of the local Ray runtime (default: all)"
    )
    p.add_argument(
        "--smoke-test", action="store_true", help="tiny run that checks the wiring in seconds"
    )


def check_ray_flags(args: argparse.Namespace) -> None:
    """Refuse bad Ray flags before anything is created or started."""
    if args.num_cpus is not None and args.num_cpus <= 0:
        raise ParameterError(f"--num-cpus={args.num_cpus} must be a positive integer")


def check_folder(path: str | None, what: str) -> None:
    """Refuse a local folder argument that is missing or a file (``what`` names it in the
    message: ``shards folder``, ``--other``); object-store URIs are checked on reading, and
    ``None`` (an optional flag not given) passes."""
    from genre.store import is_uri  # pyarrow: only for the jobs that read folders

    if path is None or is_uri(path) or os.path.isdir(path):
        return
    problem = "is not a folder" if os.path.exists(path) else "does not exist"
    raise ParameterError(f"{what} {path!r} {problem}")


def add_max_duration(p: argparse.ArgumentParser) -> None:
    from genre.audio import MAX_DURATION_S

    p.add_argument(
        "--max-duration",
        type=float,
        default=MAX_DURATION_S,
        metavar="SECONDS",
        help="longest file decoded; longer (or headers claiming longer) are reported, not decoded "
        "(default %(default).0f s = 3 h)",
    )


def tracking_uri(flag: str | None) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the working dir."""
    return (
        flag or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath('mlflow.db')}"
    )


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the job is, so that it unwinds as after Ctrl-C: locks
    released, runs ended, temporaries removed by the code that handles Ctrl-C."""


def _terminate(signum, frame) -> None:
    # A second SIGTERM while the job unwinds ends the process at once (a lock it leaves
    # is taken over by the next run, its process being gone).
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise _Terminated


def run_main(body: Callable[[], int]) -> int:
    """Run ``body``; a GenreError becomes one line on stderr and exit code 2.

    Ctrl-C and SIGTERM (``kill``, a scheduler's stop) stop the job cleanly with one line
    on stderr: exit code 130 and 143 (128 + the signal).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        return body()
    except GenreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        stopped = "terminated" if isinstance(exc, _Terminated) else "interrupted"
        print(
            f"{stopped}: re-run the same command to finish (work already written is kept)",
            file=sys.stderr,
        )
        return 128 + signal.SIGTERM if isinstance(exc, _Terminated) else 130
    finally:
        if main_thread:  # None: a handler not set from Python, which cannot be put back
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
