"""The label job's cost and memory, measured side by side in one run.

(a) Cost: the label job end to end (decode, features, predictor pool, results table) vs
    the extract job alone (decode, the same features, shards), same collection, same
    CPUs, one Ray runtime; best of two alternating rounds each. Two models: the demo's
    champion kind (short_chunk_cnn on log-mel) and the seed CNN on MFCC, whose inference
    is ~6× cheaper, to tell the model's cost from the pipeline's. Then the usual
    champion: a musicnn head (mlp_head on musicnn_msd_pool) against extract with
    musicnn_msd features, same collection (``--musicnn-tracks``), the label run computing
    the same features (``--tags 0``: no second vocabulary), and its tracks/s.
(b) Memory: peak resident memory of the whole run, driver and every Ray process
    (sum of RSS over the driver and its descendants, sampled every 0.2 s), labelling
    1000 and then 4000 short tracks, each in a fresh Ray runtime. Streaming keeps it flat.

The model is the demo's kind (short_chunk_cnn on log-mel, width 32), trained for one
epoch: what it predicts does not matter here, what it costs does.

    python tests/bench/bench_label.py [--tracks 100,400] [--cpus 2]

(c) Inference: the predictor actor's segments/s (``Predictor.__call__`` on batches of
    tracks: compiled predict step, aggregation, result columns) beside the model's own
    compiled ``model.predict`` on the same segments, and the eager ``model(x)`` per batch
    the predictor used before, same model, same batch size, in this process.

(d) musicnn's front end on CPUs: segments/s of musicnn_msd with its log-mel computed on
    the host in numpy (``log_mel`` then the compiled network on patches) and with the
    log-mel inside the compiled step (waveforms in, :mod:`genre.frontend`), same segments,
    same batch (32), in this process: what ``--frontend auto`` picks on CPUs follows it.

The last line is machine-readable:
label_over_extract=<f> label_over_extract_musicnn=<f> predictor_over_predict=<f>
frontend_device_over_host_cpu=<f> peak_rss_1k_mb=<f> peak_rss_4k_mb=<f>
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


class PeakRss:
    """Samples the summed RSS of this process and all its descendants (Ray's raylet, workers, …)."""

    def __init__(self, interval_s: float = 0.2):
        import psutil

        self.me, self.interval_s, self.peak, self._stop = (
            psutil.Process(),
            interval_s,
            0,
            threading.Event(),
        )

    def _total(self) -> int:
        total = 0
        for proc in [self.me, *self.me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except Exception:  # a worker that just exited
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            self._stop.wait(self.interval_s)

    def __enter__(self):
        self.peak = self._total()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def train_model(work: Path, *, kind: str = "short_chunk_cnn", feature: str = "mel"):
    """A one-epoch model of ``kind`` on ``feature``, as a LabelModel.

    No MLflow needed for a benchmark.
    """
    from genre.backend import configure
    from genre.config import FeatureConfig
    from genre.extraction import run_extract
    from genre.labeling import model_from_network
    from genre.models import ModelConfig
    from genre.shards import read_segments
    from genre.synth import write_corpus
    from genre.training import fit, prepare

    configure()
    if not (work / "train-corpus").exists():
        write_corpus(work / "train-corpus", per_genre=3, seconds=6.0, seed=5)
    cfg = FeatureConfig(features=(feature,))
    run_extract(str(work / "train-corpus"), str(work / f"train-shards-{feature}"), cfg=cfg)
    data = prepare(read_segments(str(work / f"train-shards-{feature}")), features=(feature,))
    network = fit(data, ModelConfig(kind=kind, width=32), max_epochs=1).network
    return model_from_network(network, data, name=f"bench-{kind}/1")


def cost_ratio(work: Path, model, *, rounds: int = 2, settings=None) -> tuple[float, float]:
    """Best-of-``rounds`` wall time of extract (the model's features) and of label, alternating."""
    from genre.extraction import run_extract
    from genre.labeling import run_label

    costs: dict[str, list[float]] = {"extract": [], "label": []}
    for _ in range(rounds):
        shutil.rmtree(work / "shards", ignore_errors=True)
        shutil.rmtree(work / "labels", ignore_errors=True)
        costs["extract"].append(
            run_extract(str(work / "corpus"), str(work / "shards"), cfg=model.feature_config).wall_s
        )
        costs["label"].append(
            run_label(
                str(work / "corpus"), str(work / "labels"), model=model, settings=settings
            ).wall_s
        )
    return min(costs["extract"]), min(costs["label"])


def inference_rates(model, *, tracks: int = 256, per_track: int = 10, batch: int = 256) -> dict:
    """Segments/s of the predictor, of compiled ``model.predict`` and of eager ``model(x)``."""

    import keras

    from genre.card import LabelPlan
    from genre.labeling import Predictor
    from genre.predictor import load_keras

    rng = np.random.default_rng(0)
    xs = [
        rng.standard_normal((per_track, *model.card.input_shape)).astype(np.float32)
        for _ in range(tracks)
    ]
    batches = [xs[i : i + 16] for i in range(0, tracks, 16)]  # 16 tracks a Ray Data batch
    plan = LabelPlan.from_card(model.card, aggregate="mean", top_k=3)
    predictor = Predictor(plan, model_bytes=model.keras_bytes, batch_size=batch)
    network = load_keras(model.keras_bytes)
    flat = np.concatenate(xs)

    def call_predictor():
        for group in batches:
            x = np.empty(len(group), dtype=object)
            x[:] = group
            n = len(group)
            predictor(
                {
                    "x": x,
                    "reason": np.array([""] * n, object),
                    "error": np.array([""] * n, object),
                    "path": np.array(["p"] * n, object),
                    "track_id": np.array(["t"] * n, object),
                    "n_segments": np.full(n, per_track, np.int32),
                    "duration_s": np.full(n, 30.0, np.float32),
                    "warning_kind": np.array([""] * n, object),
                    "warning": np.array([""] * n, object),
                }
            )

    def call_predict():
        network.predict(flat, batch_size=batch, verbose=0)

    def call_eager():
        for i in range(0, len(flat), batch):
            keras.ops.convert_to_numpy(network(flat[i : i + batch], training=False))

    rates = {}
    for name, fn in (
        ("predictor", call_predictor),
        ("predict", call_predict),
        ("eager", call_eager),
    ):
        fn()  # warm-up: tracing
        best = min(_timed(fn) for _ in range(3))
        rates[name] = len(flat) / best
    return rates


def frontend_rates(*, segments: int = 96, batch: int = 32) -> dict:
    """Segments/s of musicnn_msd from 16 kHz audio: numpy log-mel on the host then the
    compiled network, vs the log-mel inside the compiled step."""
    from genre.embeddings import Embedder
    from genre.musicnn_spec import PATCH_SAMPLES
    from genre.pretrained import log_mel

    audio = 0.1 * np.random.default_rng(1).standard_normal((segments, PATCH_SAMPLES))
    audio = audio.astype(np.float32)
    host = Embedder(("musicnn_msd",), batch_size=batch)
    device = Embedder(("musicnn_msd",), batch_size=batch, waveform_samples=PATCH_SAMPLES)
    calls = {"host": lambda: host(log_mel(audio)), "device": lambda: device(audio)}
    times: dict[str, list[float]] = {name: [] for name in calls}
    for fn in calls.values():
        fn()  # warm-up: tracing
    for _ in range(3):  # alternating, best of three: a busy neighbour hits both alike
        for name, fn in calls.items():
            times[name].append(_timed(fn))
    return {name: segments / min(t) for name, t in times.items()}


def _timed(fn) -> float:
    import time

    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def short_tracks(folder: Path, n: int, *, seconds: float = 4.0, sample_rate: int = 16000) -> None:
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    rng = np.random.default_rng(n)
    for i in range(n):
        y = 0.2 * np.sin(2 * np.pi * (100 + 5 * (i % 200)) * t) + 0.02 * rng.standard_normal(len(t))
        sf.write(folder / f"t{i:05d}.flac", y.astype(np.float32), sample_rate)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", default="100,400", help="collection sizes for (a), tracks of 30 s")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--memory-sizes", default="1000,4000")
    ap.add_argument("--musicnn-tracks", type=int, default=100, help="tracks of the musicnn row")
    args = ap.parse_args()

    import ray

    from genre.labeling import LabelSettings, run_label
    from genre.runtime import init_ray
    from genre.synth import write_corpus

    work = Path(tempfile.mkdtemp(prefix="bench-label-"))
    try:
        init_ray(num_cpus=args.cpus)
        ratios = {}
        models = {
            kind: train_model(work, kind=kind, feature=feature)
            for kind, feature in (("short_chunk_cnn", "mel"), ("cnn", "mfcc"))
        }
        for n_tracks in (int(x) for x in args.tracks.split(",")):
            shutil.rmtree(work / "corpus", ignore_errors=True)
            write_corpus(work / "corpus", per_genre=max(1, n_tracks // 10), seconds=30.0, seed=7)
            for kind, candidate in models.items():
                extract_s, label_s = cost_ratio(work, candidate)
                ratios[(kind, n_tracks)] = label_s / extract_s
                print(
                    f"(a) {n_tracks} tracks of 30 s, {args.cpus} CPUs, "
                    f"{kind} on {','.join(candidate.features)}: "
                    f"extract {extract_s:.1f} s, label {label_s:.1f} s → "
                    f"label / extract = {label_s / extract_s:.2f}",
                    flush=True,
                )
        head = train_model(work, kind="mlp_head", feature="musicnn_msd_pool")
        shutil.rmtree(work / "corpus", ignore_errors=True)
        n = args.musicnn_tracks
        write_corpus(work / "corpus", per_genre=max(1, n // 10), seconds=30.0, seed=7)
        extract_s, label_s = cost_ratio(work, head, settings=LabelSettings(tags=0))
        musicnn_ratio = label_s / extract_s
        print(
            f"(a) {n} tracks of 30 s, {args.cpus} CPUs, mlp_head on musicnn_msd_pool (label "
            f"--tags 0, same features): extract {extract_s:.1f} s, label {label_s:.1f} s → "
            f"label / extract = {musicnn_ratio:.2f}; label {n / label_s:.2f} tracks/s",
            flush=True,
        )
        front = frontend_rates()
        print(
            f"(d) musicnn_msd on CPUs, batch 32: log-mel on the host (numpy) then the network "
            f"{front['host']:.1f} seg/s, log-mel inside the compiled step {front['device']:.1f} "
            f"seg/s → device / host = {front['device'] / front['host']:.2f}",
            flush=True,
        )
        # The headline: the demo's champion kind on the largest collection measured.
        model = models["short_chunk_cnn"]
        rates = inference_rates(model)
        print(
            f"(c) short_chunk_cnn inference, batch 256: predictor {rates['predictor']:.0f} seg/s, "
            f"compiled model.predict {rates['predict']:.0f} seg/s, eager model(x) "
            f"{rates['eager']:.0f} seg/s → predictor / predict = "
            f"{rates['predictor'] / rates['predict']:.2f}",
            flush=True,
        )
        ratio = ratios[("short_chunk_cnn", max(int(x) for x in args.tracks.split(",")))]

        peaks = {}
        for n in (int(x) for x in args.memory_sizes.split(",")):
            short_tracks(work / f"short-{n}", n)
            # A fresh Ray runtime for each size: pages the object store touched in an earlier run
            # would otherwise count again in every process that mapped them.
            ray.shutdown()
            init_ray(num_cpus=args.cpus)
            with PeakRss() as rss:
                summary = run_label(
                    str(work / f"short-{n}"), str(work / f"labels-{n}"), model=model
                )
            peaks[n] = rss.peak / 2**20
            tracks = summary.labelled + sum(summary.failed.values())
            print(
                f"(b) {n} tracks of 4 s: {summary.wall_s:.0f} s "
                f"({tracks / summary.wall_s:.0f} tracks/s), "
                f"peak RSS of driver + Ray processes {peaks[n]:.0f} MB"
            )
        sizes = sorted(peaks)
        growth = peaks[sizes[-1]] / peaks[sizes[0]] - 1
        print(f"    memory growth from {sizes[0]} to {sizes[-1]} tracks: {100 * growth:+.1f} %")
        ray.shutdown()
        print(
            f"label_over_extract={ratio:.3f} "
            f"label_over_extract_musicnn={musicnn_ratio:.3f} "
            f"predictor_over_predict={rates['predictor'] / rates['predict']:.3f} "
            f"frontend_device_over_host_cpu={front['device'] / front['host']:.3f} "
            f"peak_rss_1k_mb={peaks[sizes[0]]:.1f} "
            f"peak_rss_4k_mb={peaks[sizes[-1]]:.1f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
