"""Five-fold evaluation on real music: the 50 GTZAN clips in ../shared/data/gtzan-mini.

Leave one clip per genre out: fold k tests on the k-th clip of every genre (10 clips),
validates early stopping on the next clip of every genre, and trains on the other
three. Every clip is tested exactly once; the confusion matrix sums the five folds.
Track-level accuracy is the mean of segment probabilities per clip.

The clips are read where they lie; nothing is copied into the repository.

    python tests/bench/eval_gtzan_mini.py [--data ../shared/data/gtzan-mini]
                                          [--configs seed_cnn,short_chunk_cnn,crnn,musicnn_linear]

Configurations on musicnn features extract them too (the pretrained weights must be
installed: ``make install``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

#: name → (model settings, features, batch size). seed_cnn is the seed projects' MFCC CNN.
CONFIGS = {
    "seed_cnn": (
        {"kind": "cnn", "width": 64, "dropout": 0.3, "learning_rate": 1e-3},
        ("mfcc",),
        32,
    ),
    "short_chunk_cnn": (
        {"kind": "short_chunk_cnn", "width": 32, "dropout": 0.3, "learning_rate": 1e-3},
        ("mel",),
        32,
    ),
    "crnn": ({"kind": "crnn", "width": 32, "dropout": 0.3, "learning_rate": 1e-3}, ("mel",), 32),
    "cnn_mfcc_chroma": (
        {"kind": "cnn", "width": 64, "dropout": 0.3, "learning_rate": 1e-3},
        ("mfcc", "chroma"),
        32,
    ),
    "mlp": ({"kind": "mlp", "width": 64, "dropout": 0.5, "learning_rate": 1e-3}, ("mfcc",), 32),
    # Heads on the pooled features of the pretrained musicnn (MSD) model, frozen.
    "musicnn_linear": ({"kind": "linear", "learning_rate": 1e-3}, ("musicnn_msd_pool",), 32),
    "musicnn_mlp_head": (
        {"kind": "mlp_head", "width": 32, "depth": 1, "dropout": 0.3, "learning_rate": 1e-3},
        ("musicnn_msd_pool",),
        32,
    ),
}


def folds(track_ids: list[str], k: int = 5) -> list[dict[str, str]]:
    """Leave-one-clip-per-genre-out assignments (test clip k, validation clip k+1)."""
    by_genre: dict[str, list[str]] = {}
    for t in sorted(track_ids):
        by_genre.setdefault(t.split("/")[0], []).append(t)
    out = []
    for fold in range(k):
        assignment = {}
        for clips in by_genre.values():
            for i, t in enumerate(clips):
                assignment[t] = (
                    "test" if i % k == fold else "val" if i % k == (fold + 1) % k else "train"
                )
        out.append(assignment)
    return out


def _with_validation_in_training(data):
    """The same folds with the validation clips added to training (normalisation refitted)."""
    import dataclasses

    x = {**data.x, "train": np.concatenate([data.x["train"], data.x["val"]])}
    y = {**data.y, "train": np.concatenate([data.y["train"], data.y["val"]])}
    track = {**data.track, "train": np.concatenate([data.track["train"], data.track["val"]])}
    flat = x["train"].reshape(-1, x["train"].shape[-1]).astype(np.float64)
    return dataclasses.replace(
        data,
        x=x,
        y=y,
        track=track,
        mean=flat.mean(axis=0).astype(np.float32),
        variance=np.maximum(flat.var(axis=0), 1e-6).astype(np.float32),
    )


def evaluate_config(segments, name: str, *, max_epochs: int, patience: int, refit: bool) -> dict:
    from genre.models import ModelConfig
    from genre.report import evaluate as score
    from genre.training import evaluate, fit, prepare

    settings, features, batch = CONFIGS[name]
    labels, y_true, probs, seg_acc = None, [], [], []
    t0 = time.perf_counter()
    for fold, assignment in enumerate(folds(sorted(set(segments.track_id)))):
        data = prepare(segments, features=features, assignment=assignment)
        result = fit(
            data,
            ModelConfig(**settings),
            max_epochs=max_epochs,
            batch_size=batch,
            patience=patience,
            seed=fold,
        )
        if refit:
            # The usual last step: train again on training + validation clips for the number
            # of epochs validation chose (the test clips stay unseen; nothing is chosen on them).
            data = _with_validation_in_training(data)
            result = fit(
                data,
                ModelConfig(**settings),
                max_epochs=result.best_epoch + 1,
                batch_size=batch,
                patience=max_epochs,
                seed=fold,
                restore_best=False,
            )
        report = evaluate(result.network, data, split="test")
        labels = data.labels
        confusion = np.asarray(report["confusion"])
        for i in range(
            len(labels)
        ):  # expand the fold's confusion matrix back into (true, predicted) pairs
            for j in range(len(labels)):
                y_true += [i] * int(confusion[i, j])
                probs += [np.eye(len(labels))[j]] * int(confusion[i, j])
        seg_acc.append(report["segment_accuracy"])
        print(
            f"  {name} fold {fold + 1}: track {report['track_accuracy']:.2f}, "
            f"segment {report['segment_accuracy']:.2f}, "
            f"best epoch {result.best_epoch + 1}",
            flush=True,
        )
    total = score(y_true=np.array(y_true), probs=np.array(probs), labels=labels)
    return {
        "name": name,
        "track": total["accuracy"],
        "segment": float(np.mean(seg_acc)),
        "report": total,
        "labels": labels,
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "gtzan-mini"))
    ap.add_argument("--configs", default="seed_cnn,short_chunk_cnn,crnn")
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=8)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument(
        "--refit",
        action="store_true",
        help="retrain on training + validation clips for the epochs validation chose",
    )
    ap.add_argument(
        "--figure", default=None, help="write the best config's confusion matrix here (PNG)"
    )
    args = ap.parse_args()
    if not Path(args.data).is_dir():
        sys.exit(
            f"error: {args.data} does not exist (the GTZAN clips are not part of the repository)"
        )

    import ray

    from genre.backend import configure
    from genre.config import FEATURES, FeatureConfig
    from genre.extraction import run_extract
    from genre.report import classification_report_text, plot_confusion
    from genre.runtime import init_ray
    from genre.shards import read_segments

    names = args.configs.split(",")
    wanted = {f for name in names for f in CONFIGS[name][1]}
    cfg = FeatureConfig(features=FEATURES + tuple(FeatureConfig(features=tuple(wanted)).extractors))
    work = Path(tempfile.mkdtemp(prefix="eval-gtzan-"))
    try:
        init_ray(num_cpus=args.cpus)
        print(run_extract(args.data, str(work / "shards"), cfg=cfg).format())
        ray.shutdown()
        segments = read_segments(str(work / "shards"))
        configure()
        results = [
            evaluate_config(
                segments, name, max_epochs=args.max_epochs, patience=args.patience, refit=args.refit
            )
            for name in names
        ]
        protocol = "train 3 + validate 1, then refit on 4" if args.refit else "train 3, validate 1"
        print(
            "\nfive-fold leave-one-clip-per-genre-out on 50 GTZAN clips "
            f"({protocol}, test 1 clip per genre):"
        )
        for r in results:
            print(
                f"  {r['name']:<18} track accuracy {r['track']:.2f} "
                f"({int(round(r['track'] * 50))}/50)   "
                f"segment accuracy {r['segment']:.2f}   {r['seconds']:.0f} s"
            )
        best = max(results, key=lambda r: r["track"])
        print(
            f"\nbest: {best['name']}; confusion matrix "
            f"(rows true, columns predicted; {', '.join(best['labels'])}):"
        )
        for label, row in zip(best["labels"], best["report"]["confusion"], strict=True):
            print(f"  {label:>10} " + " ".join(f"{v:2d}" for v in row))
        print(classification_report_text(best["report"]))
        if args.figure:
            plot_confusion(
                np.asarray(best["report"]["confusion"]),
                best["labels"],
                title=f"GTZAN-mini, 5 folds — {best['name']}",
                path=args.figure,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
