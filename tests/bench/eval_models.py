"""Every model type, one fixed configuration each, on the demo corpus: track-level test accuracy.

Trains on the demo corpus's by-track split (70/15/15, seed 0; early stopping on validation
loss) and scores (1) its 20 held-out test tracks and (2) a fresh synthetic corpus written
with another seed (100 tracks the model has never seen: a steadier figure than 20 tracks).
Not a search: each kind gets the same budget and sensible defaults, so the table compares
architectures, not tuning luck.

    python tests/bench/eval_models.py [--kinds all] [--max-epochs 30]
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
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default="all")
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--patience", type=int, default=6)
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()

    import ray

    from genre.backend import configure
    from genre.config import FeatureConfig
    from genre.extraction import run_extract
    from genre.models import HEAD_KINDS, MODEL_KINDS
    from genre.runtime import init_ray
    from genre.shards import read_segments
    from genre.synth import write_corpus

    # Heads read musicnn features, which this corpus is not extracted with (see eval-gtzan).
    every = tuple(k for k in MODEL_KINDS if k not in HEAD_KINDS)
    kinds = every if args.kinds == "all" else tuple(args.kinds.split(","))
    work = Path(tempfile.mkdtemp(prefix="eval-models-"))
    try:
        write_corpus(work / "corpus", per_genre=10, seconds=30.0, seed=0)  # the demo corpus
        write_corpus(work / "fresh", per_genre=10, seconds=30.0, seed=1)
        init_ray(num_cpus=args.cpus)
        cfg = FeatureConfig(features=("mfcc", "mel"))
        for name in ("corpus", "fresh"):
            run_extract(str(work / name), str(work / f"{name}-shards"), cfg=cfg)
        ray.shutdown()
        segments, fresh = (
            read_segments(str(work / "corpus-shards")),
            read_segments(str(work / "fresh-shards")),
        )
        configure()
        rows = [_evaluate_kind(kind, segments, fresh, args) for kind in kinds]
        _print_table(rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _evaluate_kind(kind: str, segments, fresh, args) -> tuple:
    """Train ``kind`` on ``segments``; its table row, scored on the test split and on ``fresh``."""
    from genre.models import ModelConfig
    from genre.report import segment_to_track
    from genre.training import evaluate, fit, prepare, stack_features
    from genre.tuning import default_features

    features = default_features(kind)
    data = prepare(segments, features=features, seed=0)
    model_cfg = ModelConfig(
        kind=kind, width=64 if kind == "mlp" else 32, dropout=0.3, learning_rate=1e-3
    )
    t0 = time.perf_counter()
    result = fit(data, model_cfg, max_epochs=args.max_epochs, batch_size=32, patience=args.patience)
    seconds = time.perf_counter() - t0
    test = evaluate(result.network, data, split="test")
    x = stack_features(fresh.features, features)
    probs = result.network.predict(x, batch_size=256, verbose=0)
    tracks, track_probs = segment_to_track(fresh.track_id, probs)
    truth = np.array([t.split("/")[0] for t in tracks])
    fresh_acc = float(np.mean(np.array(data.labels)[np.argmax(track_probs, axis=1)] == truth))
    rate = float(np.median(result.history["train_segments_per_s"]))
    print(
        f"  {kind}: test tracks {test['track_accuracy']:.2f}, "
        f"fresh corpus {fresh_acc:.2f}, {seconds:.0f} s",
        flush=True,
    )
    return (
        kind,
        "+".join(features),
        test["track_accuracy"],
        test["segment_accuracy"],
        fresh_acc,
        len(result.history["loss"]),
        seconds,
        rate,
    )


def _print_table(rows: list[tuple]) -> None:
    print(
        "\n| model | input | test tracks (20) | test segments | fresh corpus (100 tracks) "
        "| epochs | train time | segments/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind, feats, acc, seg, fr, epochs, seconds, rate in rows:
        print(
            f"| `{kind}` | {feats} | {acc:.2f} | {seg:.2f} | {fr:.2f} | {epochs} "
            f"| {seconds:.0f} s | {rate:.0f} |"
        )


if __name__ == "__main__":
    main()
