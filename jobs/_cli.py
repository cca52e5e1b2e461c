"""What every job's command line shares: the error contract and common flags."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from genre.errors import GenreError

__all__ = ["run_main", "add_ray_flags", "tracking_uri"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for a GenreError
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    return _Parser(prog=prog, description=description)


def add_ray_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local runtime)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray runtime (default: all)")
    p.add_argument("--smoke-test", action="store_true", help="tiny run that checks the wiring in seconds")


def tracking_uri(flag: str | None) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``mlflow.db`` in the working directory."""
    return flag or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{os.path.abspath('mlflow.db')}"


def run_main(body: Callable[[], int]) -> int:
    """Run ``body``; a GenreError becomes one line on stderr and exit code 2."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        return body()
    except GenreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: re-run the same command to finish (work already written is kept)", file=sys.stderr)
        return 130
