"""The project's own model code on an accelerator: training, the predictor, musicnn.

Runs on any Keras backend (``KERAS_BACKEND=jax`` on a GPU machine without TensorFlow);
random data of the real shapes, so it needs no corpus, no Ray and no MLflow.

(a) Training segments/s of ``genre.training.train_epoch`` (the lean loop) per model
    type at batch 64 and 256, median of epochs after a warm-up, plus
    ``short_chunk_cnn`` at batch 256 with ``mixed_float16``.
(b) Inference segments/s: ``genre.labeling.compiled_predict`` (the predictor's step:
    fixed-shape batches, padded last batch) beside Keras' own ``model.predict`` and the
    eager ``model(x)`` per batch the predictor used before.
(c) ``genre.pretrained.MusicnnExtractor`` segments/s (log-mel on the host + the model),
    weights from ``$GENRE_CACHE`` (converted once where TensorFlow is installed), and the
    same extractor on waveforms with the log-mel inside the compiled step
    (``waveform_samples=48000``, :mod:`genre.frontend`: what a GPU label run uses).

    KERAS_BACKEND=jax python tests/bench/bench_gpu.py [--segments 8192] [--skip-musicnn]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _data(kind: str, n: int, rng):
    from genre.config import FeatureConfig
    from genre.models import SEED_KINDS
    from genre.training import PreparedData

    features = ("mfcc",) if kind in SEED_KINDS else ("mel",)  # as tune's defaults
    cfg = FeatureConfig(features=features)
    bins = sum(cfg.bins(f) for f in features)
    shape = (cfg.frames, bins)
    x = {
        s: rng.standard_normal((m, *shape)).astype(np.float32)
        for s, m in (("train", n), ("val", 512))
    }
    y = {s: rng.integers(0, 10, len(x[s])).astype(np.int32) for s in x}
    track = {s: np.array([f"t{i // 10}" for i in range(len(x[s]))], object) for s in x}
    return PreparedData(
        x=x,
        y=y,
        track=track,
        labels=[f"g{i}" for i in range(10)],
        features=features,
        feature_config=cfg.with_features(features),
        mean=np.zeros(bins, np.float32),
        variance=np.ones(bins, np.float32),
        split_method="random",
        seed=0,
    )


def training(kinds, n: int, rng, *, epochs: int = 3) -> None:
    import keras

    from genre.models import ModelConfig
    from genre.training import build_network, train_epoch

    for kind in kinds:
        data = _data(kind, n, rng)
        for batch, policy in ((64, "float32"), (256, "float32"), (256, "mixed_float16")):
            if policy != "float32" and kind != "short_chunk_cnn":
                continue
            keras.mixed_precision.set_global_policy(policy)
            network = build_network(ModelConfig(kind=kind, width=32), data)
            rates = [
                train_epoch(network, data, batch_size=batch, epoch=e)["train_segments_per_s"]
                for e in range(epochs + 1)
            ][1:]
            print(
                f"(a) train {kind:<16} batch {batch:>4} {policy:<14} "
                f"{statistics.median(rates):9.0f} seg/s",
                flush=True,
            )
        keras.mixed_precision.set_global_policy("float32")


def inference(kinds, n: int, rng, *, batch: int = 1024) -> dict[str, float]:
    import keras

    from genre.labeling import compiled_predict
    from genre.models import ModelConfig
    from genre.training import build_network

    out = {}
    for kind in kinds:
        data = _data(kind, 16, rng)
        network = build_network(ModelConfig(kind=kind, width=32), data)
        x = rng.standard_normal((n, *data.input_shape)).astype(np.float32)
        x = x[: n - 37]  # a short last batch, as real collections have

        def predictor(network=network, x=x):
            compiled_predict(network, x, batch_size=batch, n_out=10)

        def predict(network=network, x=x):
            network.predict(x, batch_size=batch, verbose=0)

        def eager(network=network, x=x[: 8 * batch]):  # slow: a subset
            for i in range(0, len(x), batch):
                keras.ops.convert_to_numpy(network(x[i : i + batch], training=False))

        rates = {}
        for name, fn in (("predictor", predictor), ("predict", predict), ("eager", eager)):
            fn()
            count = min(len(x), 8 * batch) if name == "eager" else len(x)
            rates[name] = count / min(_timed(fn) for _ in range(3))
        out[kind] = rates["predictor"] / rates["predict"]
        print(
            f"(b) infer {kind:<16} batch {batch}: predictor {rates['predictor']:9.0f} seg/s, "
            f"model.predict {rates['predict']:9.0f}, eager model(x) {rates['eager']:9.0f} "
            f"→ predictor/predict {out[kind]:.2f}",
            flush=True,
        )
    return out


def musicnn(n: int, rng, *, batch: int) -> tuple[float, float]:
    from genre.pretrained import MusicnnExtractor

    audio = (0.1 * rng.standard_normal((n, 48000))).astype(np.float32)
    rates = []
    for where, samples in (("on the host", None), ("inside the compiled step", 48000)):
        extractor = MusicnnExtractor("musicnn_msd", batch_size=batch, waveform_samples=samples)
        extractor(audio[:batch])
        rate = n / min(_timed(lambda ex=extractor: ex(audio)) for _ in range(2))
        print(
            f"(c) musicnn_msd extractor, batch {batch}, log-mel {where}: {rate:.0f} seg/s "
            f"({3 * rate:.0f}× realtime)",
            flush=True,
        )
        rates.append(rate)
    return rates[0], rates[1]


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segments", type=int, default=8192)
    ap.add_argument("--models", default="short_chunk_cnn,crnn,cnn")
    ap.add_argument("--skip-musicnn", action="store_true")
    ap.add_argument("--skip-training", action="store_true")
    args = ap.parse_args()

    from genre.backend import backend_name, configure, gpu_count

    configure()
    print(f"backend {backend_name()}, {gpu_count()} GPU(s), {os.cpu_count()} CPU cores", flush=True)
    rng = np.random.default_rng(0)
    kinds = args.models.split(",")
    if not args.skip_training:
        training(kinds, args.segments, rng)
    ratios = inference(kinds, 4 * args.segments, rng)
    host, device = (
        (0.0, 0.0) if args.skip_musicnn else musicnn(min(args.segments, 4096), rng, batch=256)
    )
    print(
        f"predictor_over_predict={statistics.geometric_mean(ratios.values()):.3f} "
        f"musicnn_segments_per_s={host:.0f} musicnn_device_frontend_segments_per_s={device:.0f}"
    )


if __name__ == "__main__":
    main()
