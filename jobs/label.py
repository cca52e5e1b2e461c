"""Label job: bulk-label an audio collection into a results table (one row per file).

    python -m jobs.label INPUT OUTPUT --model models:/genre@champion [--aggregate mean|max|vote]
                         [--coverage 0.9] [--max-set 2] [--review-domain-shift]
                         [--segments 10] [--top-k 3] [--csv] [--retry-errors] [--new-model-ok]
    python -m jobs.label song.mp3 --model models:/genre@champion     # one file: print its genres

INPUT is a folder (searched recursively), a glob, or a .txt/.csv/.parquet list of paths.
Re-running with the same OUTPUT and model labels only what is new.
"""

from __future__ import annotations

import argparse
import os
import sys

from genre.config import AGGREGATES, FRONTENDS
from genre.errors import ParameterError
from genre.store import is_uri
from jobs._cli import add_max_duration, add_ray_flags, check_ray_flags, parser, run_main
from jobs._cli import tracking_uri as cli_tracking_uri


def main(argv: list[str] | None = None) -> int:
    p = parser("jobs.label", __doc__.splitlines()[0])
    _add_flags(p)
    add_max_duration(p)
    add_ray_flags(p)
    args = p.parse_args(argv)

    def body() -> int:
        from genre.labeling import format_file_label, label_file, open_model, run_label

        check_ray_flags(args)
        settings = _settings(args)  # validates every setting; nothing has started yet
        if args.smoke_test:
            from genre.demo import smoke_label

            print(smoke_label(args.output, settings=settings).format())
            return 0
        if not args.model:
            raise ParameterError("--model is required (for example models:/genre@champion)")
        if not args.input:
            raise ParameterError("INPUT is required")
        single = _single_file(args)
        model, note = open_model(
            args.model,
            tracking_uri=cli_tracking_uri(args.tracking_uri),
            mapping=args.mapping,
            calibrate_on=args.calibrate_on,
            settings=settings,
        )
        if note:
            print(note)
        if single:
            print(format_file_label(label_file(args.input, model=model, settings=settings)))
        else:
            print(run_label(args.input, args.output, model=model, settings=settings).format())
        return 0

    return run_main(body)


#: The label job's flags beside INPUT, OUTPUT and the Ray flags: (flag, argparse keywords).
_FLAGS = (
    ("--model", dict(help="MLflow model URI (models:/genre@champion, models:/genre/3, runs:/…), "
     "or zero-shot: musicnn's tags mapped to genres, no training (see --mapping)")),
    ("--tracking-uri", dict(help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
     "sqlite:///mlflow.db in the working directory)")),
    ("--mapping", dict(help="with --model zero-shot: a TOML file mapping your genres to musicnn "
     "tags (default: the shipped gtzan10 mapping)")),
    ("--calibrate-on", dict(metavar="FOLDER", help="with --model zero-shot: fit its calibration "
     "(temperature, genre sets, review thresholds) on a small labelled "
     "FOLDER/<genre>/<file>; without it zero-shot confidence is the raw normalised tag score")),
    ("--tags", dict(type=int, help="top musicnn tags kept per track (both vocabularies); "
     "default 5 when the model computes musicnn features anyway (zero-shot, heads on musicnn, "
     "a blend), else none; N > 0 computes them for any model; 0: no tags column")),
    ("--coverage", dict(type=float, help="1 − α of the genre sets: each holds the true genre "
     "this often on music like the validation tracks (default: the model card's, 0.9)")),
    ("--max-set", dict(type=int, default=2, help="review larger genre sets (default 2)")),
    ("--review-domain-shift", dict(action="store_true", help="also flag domain_shift > 1")),
    ("--min-confidence", dict(type=float, help="also flag tracks below this calibrated "
     "confidence (a model without genre sets: instead of its card's threshold)")),
    ("--aggregate", dict(choices=AGGREGATES, help="segment → track (default: the model's, mean)")),
    ("--segments", dict(type=int, default=10, help="segments per track, spread evenly over long "
     "tracks (default 10)")),
    ("--top-k", dict(type=int, default=3, help="genres kept per track (default 3)")),
    ("--batch-size", dict(type=int, help="segments per compiled predict step (default 256 on "
     "CPUs, 1024 on GPU predictors)")),
    ("--gpus-per-worker", dict(type=float, default=0.0, help="GPUs per predictor actor, used "
     "only when the cluster has GPUs")),
    ("--predictors", dict(type=int, help="predictor actors (default: one per GPU share; without "
     "GPUs 1, growing to one per 8 CPUs when batches queue up)")),
    ("--frontend", dict(choices=FRONTENDS, default="auto", help="where log-mel is computed: device "
     "(in the predictor's compiled step), host (numpy, in the decode tasks); auto: device on GPU")),
    ("--flush-seconds", dict(type=float, default=5.0, help="write finished rows at least this "
     "often (default 5): a killed run loses no more")),
    ("--csv", dict(action="store_true", help="also write OUTPUT/_results.csv (the leading _ "
     "keeps it out of the Parquet dataset)")),
    ("--retry-errors", dict(action="store_true", help="label files that failed before again")),
    ("--new-model-ok", dict(action="store_true", help="OUTPUT holds labels of another model: "
     "move them aside and label again")),
)  # fmt: skip


def _add_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "input", nargs="?", help="folder, glob, .txt/.csv/.parquet list of paths, or one audio file"
    )
    p.add_argument(
        "output", nargs="?", help="results folder (Parquet parts); omit for a single file"
    )
    for flag, keywords in _FLAGS:
        p.add_argument(flag, **keywords)


#: Flags that are LabelSettings' fields of the same name and meaning.
_AS_IS = (
    "aggregate top_k batch_size gpus_per_worker predictors retry_errors new_model_ok csv address "
    "num_cpus min_confidence coverage max_set review_domain_shift tags frontend"
).split()


def _settings(args: argparse.Namespace):
    from genre.labeling import LabelSettings

    return LabelSettings(
        max_segments=args.segments,
        max_duration_s=args.max_duration,
        flush_s=args.flush_seconds,
        **{name: getattr(args, name) for name in _AS_IS},
    )


def _single_file(args: argparse.Namespace) -> bool:
    """Whether INPUT is one audio file to print; checks INPUT and OUTPUT otherwise."""
    single = os.path.isfile(args.input) and args.output is None
    if not single and args.output is None:
        raise ParameterError("OUTPUT is required unless INPUT is a single audio file")
    if (
        not single
        and not os.path.exists(args.input)
        and not any(c in args.input for c in "*?[")
        and not is_uri(args.input)
    ):
        raise ParameterError(f"input {args.input!r} does not exist")
    return single


if __name__ == "__main__":
    sys.exit(main())
