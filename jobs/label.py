"""Label job: bulk-label an audio collection into a results table (one row per file).

    python -m jobs.label INPUT OUTPUT --model models:/genre@champion [--aggregate mean|max|vote]
                         [--segments 10] [--top-k 3] [--csv] [--retry-errors] [--new-model-ok]
    python -m jobs.label song.mp3 --model models:/genre@champion     # one file: print its genres

INPUT is a folder (searched recursively), a glob, or a .txt/.csv/.parquet list of paths.
Re-running with the same OUTPUT and model labels only what is new.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from genre.config import AGGREGATES
from genre.errors import ParameterError
from genre.store import is_uri
from jobs._cli import add_max_duration, add_ray_flags, check_ray_flags, parser, run_main
from jobs._cli import tracking_uri as cli_tracking_uri

if TYPE_CHECKING:
    from genre.card import ResolvedModel
    from genre.labeling import LabelSettings


def main(argv: list[str] | None = None) -> int:
    p = parser("jobs.label", __doc__.splitlines()[0])
    _add_path_flags(p)
    _add_label_flags(p)
    add_max_duration(p)
    add_ray_flags(p)
    args = p.parse_args(argv)

    def body() -> int:
        from genre.labeling import run_label

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
        tracking_uri = cli_tracking_uri(args.tracking_uri)
        single = _single_file(args)
        model = _model(args, tracking_uri)
        if single:
            _label_one(args, model)
            return 0
        print(run_label(args.input, args.output, model=model, settings=settings).format())
        return 0

    return run_main(body)


def _add_path_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "input", nargs="?", help="folder, glob, .txt/.csv/.parquet list of paths, or one audio file"
    )
    p.add_argument(
        "output", nargs="?", help="results folder (Parquet parts); omit for a single file"
    )
    p.add_argument(
        "--model",
        default=None,
        help="MLflow model URI (models:/genre@champion, models:/genre/3, runs:/…), or "
        "zero-shot: musicnn's tags mapped to genres, no training (see --mapping)",
    )
    p.add_argument(
        "--tracking-uri",
        default=None,
        help=(
            "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
            "else sqlite:///mlflow.db in the working directory)"
        ),
    )


def _add_label_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mapping",
        default=None,
        help="with --model zero-shot: a TOML file mapping your genres to musicnn tags "
        "(default: the shipped gtzan10 mapping)",
    )
    p.add_argument(
        "--calibrate-on",
        default=None,
        metavar="FOLDER",
        help="with --model zero-shot: fit its calibration (temperature, review and "
        "out-of-taxonomy thresholds) on a small labelled FOLDER/<genre>/<file>; "
        "without it zero-shot confidence is the raw normalised tag score",
    )
    p.add_argument(
        "--tags",
        type=int,
        default=None,
        help="top musicnn tags kept per track (both vocabularies); default 5 when the "
        "model computes musicnn features anyway (zero-shot, heads on musicnn, a blend), "
        "else none; N > 0 computes them for any model; 0: no tags column",
    )
    p.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        help="flag tracks below this (calibrated) confidence for review "
        "(default: the model card's threshold)",
    )
    p.add_argument(
        "--aggregate",
        choices=AGGREGATES,
        default=None,
        help="segment → track (default: the model's, mean)",
    )
    p.add_argument(
        "--segments",
        type=int,
        default=10,
        help="segments per track, spread evenly over long tracks (default 10)",
    )
    p.add_argument("--top-k", type=int, default=3, help="genres kept per track (default 3)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="segments per compiled predict step (default 256 on CPUs, 1024 on GPU predictors)",
    )
    p.add_argument(
        "--gpus-per-worker",
        type=float,
        default=0.0,
        help="GPUs per predictor actor, used only when the cluster has GPUs",
    )
    p.add_argument(
        "--predictors",
        type=int,
        default=None,
        help=(
            "predictor actors (default: one per GPU share; without GPUs 1, "
            "growing to one per 8 CPUs when batches queue up)"
        ),
    )
    p.add_argument(
        "--flush-seconds",
        type=float,
        default=5.0,
        help="write finished rows at least this often (default 5): a killed run loses no more",
    )
    p.add_argument(
        "--csv",
        action="store_true",
        help="also write OUTPUT/_results.csv (the leading _ keeps it out of the Parquet dataset)",
    )
    p.add_argument(
        "--retry-errors", action="store_true", help="label files that failed before again"
    )
    p.add_argument(
        "--new-model-ok",
        action="store_true",
        help="OUTPUT holds labels of another model: move them aside and label again",
    )


def _settings(args: argparse.Namespace) -> LabelSettings:
    from genre.labeling import LabelSettings

    return LabelSettings(
        aggregate=args.aggregate,
        max_segments=args.segments,
        top_k=args.top_k,
        batch_size=args.batch_size,
        gpus_per_worker=args.gpus_per_worker,
        predictors=args.predictors,
        max_duration_s=args.max_duration,
        retry_errors=args.retry_errors,
        new_model_ok=args.new_model_ok,
        csv=args.csv,
        address=args.address,
        num_cpus=args.num_cpus,
        flush_s=args.flush_seconds,
        min_confidence=args.min_confidence,
        tags=args.tags,
    )


def _model(args: argparse.Namespace, tracking_uri: str) -> ResolvedModel:
    """The registered model, or a zero-shot model card over musicnn's tags."""
    from genre.labeling import resolve_model

    if args.model != "zero-shot":
        for flag, value in (("--mapping", args.mapping), ("--calibrate-on", args.calibrate_on)):
            if value:
                raise ParameterError(f"{flag} goes with --model zero-shot")
        return resolve_model(args.model, tracking_uri=tracking_uri)
    from genre.embeddings import check_extractors
    from genre.zeroshot import calibrate_zero_shot, load_mapping, zero_shot_model

    if args.calibrate_on and not os.path.isdir(args.calibrate_on):
        raise ParameterError(f"--calibrate-on {args.calibrate_on!r} is not a folder")
    model = zero_shot_model(load_mapping(args.mapping))
    check_extractors(model.card.feature_config)
    if args.calibrate_on:
        model = calibrate_zero_shot(model, args.calibrate_on, settings=_settings(args))
        cal, training = model.card.calibration, model.card.training
        left_out = training["calibration_left_out"]
        print(
            f"zero-shot calibrated on {training['calibration_tracks']} tracks of "
            f"{args.calibrate_on}: temperature {cal['temperature']:.2f}, review below "
            f"{cal['min_confidence']:.2f}"
            + (
                f" ({left_out} tracks of {', '.join(training['uncovered_genres'])} left out: "
                "no tag of the mapping covers them)"
                if left_out
                else ""
            )
        )
    return model


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


def _label_one(args: argparse.Namespace, model: ResolvedModel) -> None:
    from genre.labeling import label_file

    result = label_file(
        args.input,
        model=model,
        aggregate=args.aggregate,
        max_segments=args.segments,
        top_k=args.top_k,
        max_duration_s=args.max_duration,
        min_confidence=args.min_confidence,
        tags=args.tags,
    )
    print(
        f"{result['path']}  ({result['duration_s']:.1f} s, "
        f"{result['n_segments']} segments, {result['model']}, {result['aggregate']})"
    )
    for genre, prob in result["top"]:
        print(f"  {genre:<10} {prob:6.1%}  {'█' * int(round(prob * 40))}")
    if result["needs_review"]:
        print(f"  needs review: {result['review_reason']} (ood score {result['ood_score']:.2f})")
    if result["warning"]:
        print(f"  warning: {result['warning']}")
    if len(result["tags"]):
        print("  tags: " + ", ".join(f"{t['tag']} {t['probability']:.2f}" for t in result["tags"]))


if __name__ == "__main__":
    sys.exit(main())
