"""ASHA vs FIFO on the same search space and budget, side by side in one run.

Both searches draw the same trial configurations (same search seed) on the default
synthetic corpus and run with early stopping by patience switched off, so the only
difference is the scheduler: FIFO trains every trial for ``--max-epochs``; ASHA stops
the trials that fall behind at its rungs. Printed for each: trial-epochs, wall time,
best validation accuracy (segments; tracks beside it). Then training throughput
(segments/s) of every model type on the same data, two CPU threads.

    python tests/bench/bench_tune.py [--per-genre 10] [--num-samples 16] [--max-epochs 16] \
        [--grace-epochs 2]

The last line is machine-readable:
asha_epochs=<n> fifo_epochs=<n> asha_best=<f> fifo_best=<f>
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def search(segments, shards: str, work: Path, scheduler: str, args) -> dict:
    from genre.config import SearchSettings
    from genre.tuning import run_search

    settings = SearchSettings(
        shards=shards,
        models=tuple(args.models.split(",")),
        num_samples=args.num_samples,
        max_epochs=args.max_epochs,
        grace_epochs=args.grace_epochs,
        reduction_factor=args.reduction_factor,
        patience=args.max_epochs,
        scheduler=scheduler,
        tracking_uri=f"sqlite:///{work / 'mlflow.db'}",
        experiment=f"bench-{scheduler}",
        register_as=f"bench-{scheduler}",
        storage=str(work / "ray_results"),
        name=f"bench-{scheduler}",
    )
    t0 = time.perf_counter()
    outcome = run_search(segments, settings, progress=False)
    wall = time.perf_counter() - t0
    best = max(outcome.trials, key=lambda t: (t["val_accuracy"], t["val_track_accuracy"]))
    return {
        "epochs": sum(t["epochs"] for t in outcome.trials),
        "wall": wall,
        "best": best["val_accuracy"],
        "best_track": best["val_track_accuracy"],
        "best_trial": f"{best['kind']} lr {best['learning_rate']:.1e} width {best['width']}",
        "test_track": outcome.test["track_accuracy"],
    }


def throughput(segments, *, epochs: int = 2) -> dict[str, float]:
    """Training segments/s per model type.

    Measured on the last of ``epochs`` epochs: the first traces the graph.
    """
    from genre.backend import configure
    from genre.models import HEAD_KINDS, MODEL_KINDS, ModelConfig
    from genre.training import build_network, prepare, train_epoch
    from genre.tuning import default_features

    configure()  # the backend's default threads: all cores of this machine
    out = {}
    for kind in (k for k in MODEL_KINDS if k not in HEAD_KINDS):  # heads: eval-gtzan
        data = prepare(segments, features=default_features(kind), seed=0)
        network = build_network(ModelConfig(kind=kind, width=32), data)
        for epoch in range(epochs):
            metrics = train_epoch(network, data, batch_size=64, epoch=epoch)
        out[f"{kind} ({'+'.join(default_features(kind))})"] = metrics["train_segments_per_s"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-genre", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--models", default="short_chunk_cnn,crnn,cnn")
    ap.add_argument("--num-samples", type=int, default=16)
    ap.add_argument("--max-epochs", type=int, default=16)
    ap.add_argument("--grace-epochs", type=int, default=2)
    ap.add_argument("--reduction-factor", type=int, default=4)
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()

    import ray

    from genre.config import FeatureConfig
    from genre.extraction import run_extract
    from genre.runtime import init_ray
    from genre.shards import read_segments
    from genre.synth import write_corpus

    work = Path(tempfile.mkdtemp(prefix="bench-tune-"))
    try:
        write_corpus(work / "corpus", per_genre=args.per_genre, seconds=args.seconds, seed=0)
        init_ray(num_cpus=args.cpus)
        run_extract(
            str(work / "corpus"), str(work / "shards"), cfg=FeatureConfig(features=("mfcc", "mel"))
        )
        segments = read_segments(str(work / "shards"))
        print(
            f"corpus: {args.per_genre * 10} tracks, {len(segments)} segments; "
            f"search: {args.models}, {args.num_samples} trials, ≤ {args.max_epochs} epochs, "
            f"ASHA grace {args.grace_epochs} and reduction factor {args.reduction_factor}, "
            f"{args.cpus} CPUs (1 per trial)"
        )
        results = {
            name: search(segments, str(work / "shards"), work, name, args)
            for name in ("asha", "fifo")
        }
        ray.shutdown()
        for name, r in results.items():
            print(
                f"{name}: {r['epochs']:>4} trial-epochs in {r['wall']:6.0f} s | "
                f"best val accuracy {r['best']:.3f} "
                f"(tracks {r['best_track']:.3f}; {r['best_trial']}) | "
                f"champion's test tracks {r['test_track']:.3f}"
            )
        a, f = results["asha"], results["fifo"]
        print(
            f"ASHA / FIFO: trial-epochs {a['epochs'] / f['epochs']:.2f}, "
            f"wall time {a['wall'] / f['wall']:.2f}, "
            f"best val accuracy {100 * (a['best'] - f['best']):+.1f} points"
        )
        print(f"training throughput, segments/s ({os.cpu_count()} cores, batch 64, width 32):")
        for kind, rate in throughput(segments).items():
            print(f"  {kind:<24} {rate:8.0f}")
        print(
            f"asha_epochs={a['epochs']} fifo_epochs={f['epochs']} "
            f"asha_best={a['best']:.4f} fifo_best={f['best']:.4f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
