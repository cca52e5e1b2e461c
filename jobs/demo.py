"""Demo: the whole pipeline on the built-in synthetic corpus (what ``make demo`` runs).

    python -m jobs.demo [OUTPUT] [--per-genre 10] [--seconds 30] [--num-samples 8] [--max-epochs 20]
    python -m jobs.demo --smoke-test        # 3 tracks per genre of 6 s, 2 short trials:
                                            # the wiring in about a minute

synth → extract → tune → label (plus a few broken files) → results head, track-level
accuracy, pictures → two tracks corrected (flagged first) and one trial tuned again with them
(``jobs.tune --labels``). Re-running resumes where an interrupted run stopped.
"""

from __future__ import annotations

import argparse
import sys
import tempfile

from genre.demo import DemoSettings
from jobs._cli import comma_list, parser, run_main


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def body() -> int:
        from genre.demo import run_demo

        run_demo(_settings(args))
        return 0

    return run_main(body)


def _parser() -> argparse.ArgumentParser:
    D = DemoSettings  # the defaults live there, once
    p = parser("jobs.demo", __doc__.splitlines()[0])
    p.add_argument(
        "output",
        nargs="?",
        default=D.output,
        help="folder for everything the demo writes (default: %(default)s)",
    )
    p.add_argument(
        "--per-genre",
        type=int,
        default=D.per_genre,
        help="synthetic tracks per genre (default %(default)s)",
    )
    p.add_argument(
        "--seconds", type=float, default=D.seconds, help="seconds per track (default %(default)s)"
    )
    p.add_argument(
        "--models",
        default=",".join(D.models),
        help="model kinds to search over (default %(default)s)",
    )
    p.add_argument(
        "--num-samples", type=int, default=D.num_samples, help="tune trials (default %(default)s)"
    )
    p.add_argument(
        "--max-epochs",
        type=int,
        default=D.max_epochs,
        help="epochs per trial at most (default %(default)s)",
    )
    p.add_argument(
        "--num-cpus", type=int, default=None, help="CPUs of the local Ray runtime (default: all)"
    )
    p.add_argument(
        "--docs", default=None, help="also copy the pictures into this folder (the README's docs/)"
    )
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help="tiny corpus and search: checks the wiring quickly",
    )
    return p


def _settings(args: argparse.Namespace) -> DemoSettings:
    """The run's settings; ``--smoke-test`` replaces them with a tiny corpus and search."""
    from genre.errors import ParameterError

    if args.per_genre < 3:
        raise ParameterError(
            f"--per-genre={args.per_genre}: at least 3, "
            "one track each for train, validation and test"
        )
    settings = DemoSettings(
        output=args.output,
        per_genre=args.per_genre,
        seconds=args.seconds,
        models=comma_list(args.models),
        num_samples=args.num_samples,
        max_epochs=args.max_epochs,
        num_cpus=args.num_cpus,
        docs=args.docs,
    )
    if args.smoke_test:
        settings = DemoSettings(
            output=tempfile.mkdtemp(prefix="genre-demo-")
            if args.output == DemoSettings.output
            else args.output,
            per_genre=3,
            seconds=6.0,
            models=("cnn",),
            num_samples=2,
            max_epochs=2,
            grace_epochs=1,
            num_cpus=args.num_cpus,
        )
    return settings


if __name__ == "__main__":
    sys.exit(main())
