"""Training throughput per model type: the lean epoch beside the old per-epoch-copy epoch.

Both loops train the same network on the same shuffled order, side by side in one
process; they differ only in how an epoch's batches are made: ``genre.training``
gathers each batch by index (a ``keras.utils.PyDataset``), the old loop copied the
whole training array into shuffled order first (``x[order]``) inside the timed epoch.
Each figure is the median of ``--epochs`` epochs after one warm-up epoch (tracing), with
the two loops alternating epoch by epoch so that machine noise hits both alike.

    python tests/bench/bench_train.py [--per-genre 6] [--batch-size 64] [--epochs 3]

The last line is machine-readable: ``lean_over_copy=<f>`` (geometric mean of the
per-model ratios of segments/s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def copy_epoch(network, data, *, batch_size: int, epoch: int) -> float:
    """The loop before: shuffle by copying the whole array. Returns segments/s."""
    import numpy as np

    order = np.random.default_rng(epoch).permutation(len(data.y["train"]))
    started = time.perf_counter()
    network.fit(
        data.x["train"][order],
        data.y["train"][order],
        batch_size=batch_size,
        epochs=1,
        shuffle=False,
        verbose=0,
    )
    return len(order) / (time.perf_counter() - started)


def lean_epoch(network, data, *, batch_size: int, epoch: int) -> float:
    from genre.training import train_epoch

    return train_epoch(network, data, batch_size=batch_size, epoch=epoch)["train_segments_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-genre", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--models", default="mlp,cnn,gru,cnn_gru,crnn,short_chunk_cnn")
    args = ap.parse_args()

    from genre.backend import configure
    from genre.config import FeatureConfig
    from genre.extraction import extract_batch
    from genre.models import ModelConfig
    from genre.shards import read_segments
    from genre.synth import write_corpus
    from genre.training import build_network, prepare
    from genre.tuning import default_features

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    paths = write_corpus(work / "corpus", per_genre=args.per_genre, seconds=30.0, seed=0)
    import numpy as np

    batch = {
        "path": np.array([str(p) for p in paths], object),
        "track_id": np.array([f"{p.parent.name}/{p.name}" for p in paths], object),
        "genre": np.array([p.parent.name for p in paths], object),
    }
    extract_batch(batch, cfg=FeatureConfig(features=("mfcc", "mel")), output=str(work / "shards"))
    segments = read_segments(str(work / "shards"))
    configure()
    print(
        f"{len(segments)} segments, batch {args.batch_size}, width 32, {os.cpu_count()} cores, "
        f"Keras backend {os.environ.get('KERAS_BACKEND', 'tensorflow')}"
    )
    print(f"{'model':<28} {'copy seg/s':>11} {'lean seg/s':>11} {'lean/copy':>9}")
    ratios = []
    for kind in args.models.split(","):
        data = prepare(segments, features=default_features(kind), seed=0)
        network = build_network(ModelConfig(kind=kind, width=32), data)
        lean_epoch(network, data, batch_size=args.batch_size, epoch=0)  # warm-up: tracing
        copy_epoch(network, data, batch_size=args.batch_size, epoch=0)
        copy, lean = [], []
        for epoch in range(1, args.epochs + 1):
            copy.append(copy_epoch(network, data, batch_size=args.batch_size, epoch=epoch))
            lean.append(lean_epoch(network, data, batch_size=args.batch_size, epoch=epoch))
        c, n = statistics.median(copy), statistics.median(lean)
        ratios.append(n / c)
        label = f"{kind} ({'+'.join(default_features(kind))})"
        print(f"{label:<28} {c:11.0f} {n:11.0f} {n / c:9.2f}")
    print(f"lean_over_copy={statistics.geometric_mean(ratios):.3f}")


if __name__ == "__main__":
    main()
