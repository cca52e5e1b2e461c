"""Tune job: search models and hyperparameters (Ray Tune + ASHA), log to MLflow, register the best.

The best trial's model is registered with the alias ``champion``.

    python -m jobs.tune SHARDS [SHARDS ...] [--models short_chunk_cnn,crnn,cnn]
                               [--num-samples N] [--max-epochs N] [--tracking-uri URI]
                               [--register-as NAME] [--labels corrections.csv ...]
                               [--address ADDR]

Without ``--models``, shards that hold musicnn features add the heads mlp_head and linear.
Tracks under the corpus's ``_other/`` (and every track of ``--other DIR``, shards of audio
that is none of the genres) are outlier exposure: trained towards uniform probabilities.

Several SHARDS folders (a collection extracted in parts) are one collection of one feature config.
``--labels`` puts a review page's corrections over the shards' labels (genre.corrections).

Re-running the same command resumes an interrupted search (or reports a finished one).
"""

from __future__ import annotations

import argparse
import sys

from genre.config import DATA_MODES, SCHEDULERS, SPLIT_METHODS, SearchSettings
from genre.errors import ParameterError
from jobs._cli import add_ray_flags, check_folder, check_ray_flags, comma_list, parser, run_main
from jobs._cli import tracking_uri as cli_tracking_uri


def _parser() -> argparse.ArgumentParser:
    S = SearchSettings  # the defaults live there, once
    p = parser("jobs.tune", __doc__.splitlines()[0])
    add, default = p.add_argument, " (default %(default)s)"
    # A flag a line with its help beside it reads better than the formatter's seven lines.
    # fmt: off
    add("shards", nargs="*", help="output folder(s) of the extract job, of one feature config")
    add("--models", default="auto", help="comma list of model kinds to search over (default: "
        f"{','.join(S.models)}, plus mlp_head,linear when the shards hold musicnn features)")
    add("--features", default="auto", help="comma list of features to stack (default: mfcc for "
        "seed models, mel for crnn and short_chunk_cnn, the pooled musicnn features for heads)")
    add("--num-samples", type=int, default=S.num_samples, help="trials to run" + default)
    add("--max-epochs", type=int, default=S.max_epochs, help="epochs per trial at most" + default)
    add("--grace-epochs", type=int, default=S.grace_epochs,
        help="epochs before ASHA may stop a trial" + default)
    add("--reduction-factor", type=int, default=S.reduction_factor,
        help="ASHA keeps the best 1/N of trials at each rung" + default)
    add("--patience", type=int, default=S.patience,
        help="early stopping: epochs without val-loss improvement" + default)
    add("--scheduler", choices=SCHEDULERS, default=S.scheduler,
        help="asha stops trials that fall behind; fifo runs every trial to the end")
    add("--cpus-per-trial", type=float, default=S.cpus_per_trial,
        help="CPUs per trial, also TensorFlow's thread count" + default)
    add("--gpus-per-trial", type=float, default=S.gpus_per_trial,
        help="may be fractional; used only when the cluster has GPUs")
    add("--mixed-precision", action="store_true",
        help="float16 compute in trials that get a GPU (ignored on CPUs)")
    add("--no-blend", action="store_true", help="do not blend the champion with the zero-shot "
        "tag mapping (by default its weight is chosen on the validation tracks, 0 allowed, "
        "when the shards hold musicnn's tag columns)")
    add("--mapping", default=None, help="TOML tag mapping for the blend (default: the shipped "
        "gtzan10; see python -m jobs.label --model zero-shot)")
    add("--coverage", type=float, default=S.coverage, help="1 − α of the champion's genre "
        "sets: the card's default, label may ask for another (default %(default)s)")
    add("--other", default=None, metavar="DIR", help="shards (extract output, same flags) of "
        "audio that is none of the genres, trained on with the corpus's _other/ tracks")
    add("--outlier-weight", type=float, default=S.outlier_weight, help="λ of outlier exposure "
        "on _other/ and --other tracks; 0: measured on, not trained on" + default)
    add("--refit-folds", type=int, default=S.refit_folds, help="train the best configuration "
        "again on train + val, calibrated on K-fold out-of-fold predictions; 0: no" + default)
    add("--labels", action="append", metavar="CSV", help="corrections (path,genre: the review "
        "page's corrections.csv) over the shards' labels; repeatable, later files win")
    add("--data", choices=DATA_MODES, default=S.data, help="trials read the shards held in "
        "memory, or streamed with Ray Data (auto: memory when it fits comfortably)")
    add("--trial-memory", type=int, default=S.trial_memory_mb, dest="trial_memory_mb",
        metavar="MIB", help="MiB a trial may take for its data beyond its model; past it the "
        "trial fails with one line (default 0: no cap)")
    add("--split", choices=SPLIT_METHODS, default=S.split,
        help="by-track split (auto: GTZAN lists when the corpus is GTZAN)")
    add("--seed", type=int, default=S.seed, help="seed of the split and of the search" + default)
    add("--tracking-uri", default=None, help="MLflow tracking URI (default: "
        "$MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory)")
    add("--experiment", default=S.experiment, help="MLflow experiment name" + default)
    add("--register-as", default=S.register_as,
        help=f"registered model name (default %(default)s; alias {S.alias})")
    add("--storage", default=S.storage, help="where Ray Tune keeps trial state (local folder "
        "or s3://; default: beside a sqlite:/// tracking database, else ~/ray_results)")
    add("--name", default=None,
        help="search name (default: derived from the arguments, so a re-run resumes)")
    add("--fresh", action="store_true",
        help="forget a previous search with the same name and start again")
    # fmt: on
    add_ray_flags(p)
    return p


#: Flags that are SearchSettings' fields of the same name and meaning.
_AS_IS = (
    "grace_epochs reduction_factor patience cpus_per_trial gpus_per_trial mixed_precision mapping "
    "coverage other outlier_weight refit_folds scheduler split seed experiment register_as storage "
    "name labels data trial_memory_mb"
).split()


def _given(text: str | None) -> tuple[str, ...] | None:
    """A comma list flag whose default is ``auto``: ``None`` for auto (or nothing)."""
    return None if text in (None, "", "auto") else comma_list(text)


def _settings(
    args: argparse.Namespace, shards: tuple[str, ...], tracking_uri: str
) -> SearchSettings:
    """The search settings the flags ask for (validated on construction)."""
    from genre.shards import common_config
    from genre.tuning import default_models

    return SearchSettings(  # validates every setting; nothing has started yet
        shards=shards,
        models=_given(args.models) or default_models(common_config(shards)),
        features=_given(args.features),
        num_samples=2 if args.smoke_test else args.num_samples,
        max_epochs=2 if args.smoke_test else args.max_epochs,
        blend=not args.no_blend,
        tracking_uri=tracking_uri,
        **{name: getattr(args, name) for name in _AS_IS},
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def body() -> int:
        from genre import tuning
        from genre.runtime import init_ray

        shards = tuple(args.shards)
        if not shards:
            raise ParameterError(
                "--smoke-test needs SHARDS (run python -m jobs.extract --smoke-test first)"
                if args.smoke_test
                else "SHARDS is required: the output folder of the extract job"
            )
        for folder in shards:
            check_folder(folder, "shards folder")
        check_folder(args.other, "--other")
        check_ray_flags(args)
        tuning.check_search_name(args.name)  # before _settings: an empty --name reads as none
        settings = _settings(args, shards, cli_tracking_uri(args.tracking_uri))
        if settings.grace_clamped:
            print(
                f"note: --grace-epochs {args.grace_epochs} is more than "
                f"--max-epochs {settings.max_epochs}; using {settings.grace_epochs}",
                file=sys.stderr,
            )
        segments, plan = tuning.plan_search(settings)  # every check before anything starts
        if args.fresh:
            tuning.remove_search(settings)
        init_ray(address=args.address, num_cpus=args.num_cpus)
        print(tuning.run_search(segments, settings, plan=plan).format())
        return 0

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
