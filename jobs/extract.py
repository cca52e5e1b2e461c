"""Extract job: an audio tree → Parquet segment shards (one row per 3 s segment).

    python -m jobs.extract INPUT OUTPUT [--features mfcc,chroma,mel,musicnn_msd]
                           [--gpus-per-worker G] [--num-cpus N] [--address ADDR]
                           [--retry-errors]

Re-running over the same INPUT extracts only new tracks (and retries failed ones, but
files that crashed a worker only with ``--retry-errors``);
a different feature config needs a new OUTPUT. ``musicnn_msd`` and ``musicnn_mtt`` add
three columns each (embedding, pooled features, tag probabilities) from a pretrained
model run in an actor pool, on GPUs when the cluster has them and ``--gpus-per-worker``
is given.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile

from genre.config import FEATURES, PRETRAINED, FeatureConfig
from genre.errors import ParameterError
from jobs._cli import (
    add_max_duration,
    add_ray_flags,
    check_ray_flags,
    comma_list,
    parser,
    run_main,
)


def _features(text: str) -> tuple[str, ...]:
    names = comma_list(text)
    unknown = [n for n in names if n not in FEATURES + PRETRAINED]
    if unknown or not names:
        raise ParameterError(
            f"--features {text!r}: unknown feature {','.join(unknown) or '(none)'}; "
            f"choose from {','.join(FEATURES + PRETRAINED)}"
        )
    return names


def main(argv: list[str] | None = None) -> int:
    p = parser("jobs.extract", __doc__.splitlines()[0])
    p.add_argument(
        "input",
        nargs="?",
        help="folder of audio files (local or s3://, gs://); labels from <root>/<genre>/<file>",
    )
    p.add_argument(
        "output", nargs="?", help="folder for the shards, _manifest.json and _errors.parquet"
    )
    p.add_argument(
        "--features",
        default=",".join(FEATURES),
        help=f"comma list of {','.join(FEATURES + PRETRAINED)} (default: {','.join(FEATURES)})",
    )
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        help="GPUs per musicnn actor, used only when the cluster has GPUs (default: CPU actors)",
    )
    p.add_argument(
        "--tracks-per-shard",
        type=int,
        default=None,
        help="tracks per shard/batch (default: auto, ≤ 32)",
    )
    p.add_argument(
        "--retry-errors",
        action="store_true",
        help="also try again files that crashed a worker (other failed files are retried "
        "on every run)",
    )
    add_max_duration(p)
    add_ray_flags(p)
    args = p.parse_args(argv)

    def body() -> int:
        from genre.extraction import check_extract_arguments, run_extract

        cfg = FeatureConfig(features=_features(args.features))
        check_ray_flags(args)
        check_extract_arguments(
            num_cpus=args.num_cpus,
            tracks_per_shard=args.tracks_per_shard,
            max_duration_s=args.max_duration,
            gpus_per_worker=args.gpus_per_worker,
        )
        input_root, output = args.input, args.output
        smoke = tempfile.TemporaryDirectory(prefix="genre-smoke-") if args.smoke_test else None
        with smoke or contextlib.nullcontext() as scratch:
            if smoke:  # a generated corpus, removed at the end; INPUT and OUTPUT optional
                from genre.synth import write_corpus

                input_root = f"{scratch}/corpus"
                output = output or f"{scratch}/shards"
                write_corpus(input_root, per_genre=1, seconds=6.0)
            if not input_root or not output:
                raise ParameterError("INPUT and OUTPUT are required (or --smoke-test)")
            summary = run_extract(
                input_root,
                output,
                cfg=cfg,
                address=args.address,
                num_cpus=args.num_cpus,
                tracks_per_shard=args.tracks_per_shard,
                max_duration_s=args.max_duration,
                gpus_per_worker=args.gpus_per_worker,
                retry_errors=args.retry_errors,
            )
            print(summary.format())
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
