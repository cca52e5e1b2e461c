"""Confidence you can act on, measured on the synthetic corpus and its out-of-taxonomy styles.

Writes the demo corpus plus ``jobs.synth --extra-styles`` (drone, techno, solo percussion,
speech-like noise in ``_other/``, which extract and tune leave unlabelled), runs a small
search (its champion is calibrated on the validation tracks), then labels the held-out
test tracks and the ``_other/`` tracks with the champion. Printed: ECE before/after on
the test tracks (from the card), AUROC of ``ood_score`` (in-taxonomy test tracks vs
``_other/``), the share of test tracks flagged for review, and the accuracy of the test
tracks that were not flagged.

    python tests/bench/eval_ood.py [--per-genre 10] [--models short_chunk_cnn,cnn] [--cpus 2]

The last line is machine-readable:
``ece=<f> ece_raw=<f> auroc=<f> flagged=<f> unflagged_accuracy=<f>``
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-genre", type=int, default=10)
    ap.add_argument("--per-style", type=int, default=10)
    ap.add_argument("--models", default="short_chunk_cnn,cnn")
    ap.add_argument("--num-samples", type=int, default=4)
    ap.add_argument("--max-epochs", type=int, default=12)
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()

    import pandas as pd

    from genre.calibration import Calibration, auroc
    from genre.config import FeatureConfig, SearchSettings
    from genre.extraction import run_extract
    from genre.labeling import LabelSettings, resolve_model, run_label
    from genre.runtime import init_ray
    from genre.shards import read_segments
    from genre.synth import write_corpus, write_other
    from genre.tuning import run_search

    work = Path(tempfile.mkdtemp(prefix="eval-ood-"))
    try:
        corpus = work / "corpus"
        write_corpus(corpus, per_genre=args.per_genre, seconds=30.0, seed=0)
        write_other(corpus, per_style=args.per_style, seconds=30.0, seed=0)
        init_ray(num_cpus=args.cpus)
        run_extract(str(corpus), str(work / "shards"), cfg=FeatureConfig(features=("mfcc", "mel")))
        uri = f"sqlite:///{work / 'mlflow.db'}"
        settings = SearchSettings(
            shards=str(work / "shards"),
            models=tuple(args.models.split(",")),
            num_samples=args.num_samples,
            max_epochs=args.max_epochs,
            tracking_uri=uri,
            storage=str(work / "ray"),
            name="ood",
        )
        outcome = run_search(read_segments(str(work / "shards")), settings, progress=False)
        model = resolve_model(outcome.model_uri, tracking_uri=uri)
        calibration = Calibration.from_dict(model.card.calibration)
        test = sorted(model.card.splits["test"])
        other = sorted(str(p.relative_to(corpus)) for p in (corpus / "_other").iterdir())
        listing = work / "to_label.txt"
        listing.write_text("".join(f"{corpus / t}\n" for t in test + other))
        run_label(str(listing), str(work / "labels"), model=model, settings=LabelSettings())
        rows = pd.read_parquet(work / "labels")
        rows["other"] = rows.path.str.contains("/_other/")
        rows["truth"] = rows.path.map(lambda p: Path(p).parent.name)
        inside, outside = rows[~rows.other], rows[rows.other]
        score = auroc(inside.ood_score.to_numpy(), outside.ood_score.to_numpy())
        unflagged = inside[~inside.needs_review]
        accuracy = (
            float((unflagged.genre == unflagged.truth).mean()) if len(unflagged) else float("nan")
        )
        flagged = float(inside.needs_review.mean())
        print(
            f"champion {outcome.best['kind']}: "
            f"test track accuracy {outcome.test['track_accuracy']:.3f}"
        )
        print(
            f"ECE on {len(test)} test tracks: {calibration.ece_before:.3f} raw → "
            f"{calibration.ece_after:.3f} calibrated (T = {calibration.temperature:.2f})"
        )
        print(f"ood_score AUROC, {len(inside)} test tracks vs {len(outside)} _other/: {score:.3f}")
        print(
            f"flagged for review: {flagged:.0%} of test tracks, "
            f"{outside.needs_review.mean():.0%} of _other/; "
            f"accuracy of the unflagged: {accuracy:.3f}"
        )
        print(
            f"ece={calibration.ece_after:.4f} ece_raw={calibration.ece_before:.4f} "
            f"auroc={score:.4f} "
            f"flagged={flagged:.4f} unflagged_accuracy={accuracy:.4f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
