"""Extraction speed, measured side by side in one run on the same audio.

(a) One core: genre's one-STFT feature path vs the seed style (three librosa calls
    per segment: mfcc, chroma_stft, melspectrogram) vs an FFT floor (framing +
    window + rfft only), and the pretrained musicnn_msd columns (resampling to 16 kHz,
    log-mel patches and the network, one backend thread) on the same segments.
    Figures are × realtime (seconds of audio per second).
(b) The extract job on a local 2-CPU Ray runtime vs a sequential seed-style loop
    (load each file, loop segments, three librosa calls, append) over the same
    synthetic tracks.

    python tests/bench/bench_extract.py [--tracks 100] [--seconds 30]

The last line is machine-readable:
per_core_x_realtime=<f> seed_x_realtime=<f> fft_floor_x_realtime=<f> job_speedup_vs_seed_loop=<f>
musicnn_x_realtime=<f>
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # part (a) is one core; Ray workers get one CPU each too

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from genre.audio import load_segments  # noqa: E402
from genre.config import FeatureConfig  # noqa: E402
from genre.features import _CHUNK, extract, hann_window  # noqa: E402


def _best_of(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def seed_features(y: np.ndarray, cfg: FeatureConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The seed projects' way: three independent librosa calls on one segment."""
    import librosa

    kw = dict(sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length)
    mfcc = librosa.feature.mfcc(y=y, n_mfcc=cfg.n_mfcc, **kw).T
    # tuning=0.0: estimating tuning segfaults in librosa 0.11 + numba 0.68 on float32.
    chroma = librosa.feature.chroma_stft(y=y, tuning=0.0, **kw).T
    mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, n_mels=cfg.n_mels, **kw)).T
    return mfcc, chroma, mel


def fft_floor(segments: np.ndarray, cfg: FeatureConfig) -> None:
    import scipy.fft

    pad = cfg.n_fft // 2
    padded = np.pad(segments, ((0, 0), (pad, pad)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft, axis=-1)[
        :, :: cfg.hop_length
    ]
    for lo in range(
        0, len(frames), _CHUNK
    ):  # the same chunking as genre's path, so the floor is its floor
        scipy.fft.rfft(frames[lo : lo + _CHUNK] * hann_window(cfg.n_fft), axis=-1)


def per_core(corpus: Path, cfg: FeatureConfig, n_segments: int = 160) -> tuple[float, float, float]:
    paths = sorted(p for p in corpus.rglob("*") if p.is_file())
    segments = np.concatenate([load_segments(str(p)).audio for p in paths[: n_segments // 10 + 1]])[
        :n_segments
    ]
    audio_s = len(segments) * cfg.segment_seconds
    extract(segments[:4], cfg), seed_features(segments[0], cfg)  # warm caches and imports
    ours = _best_of(lambda: extract(segments, cfg))
    seed = (
        _best_of(lambda: [seed_features(y, cfg) for y in segments[:40]], repeats=2)
        * len(segments)
        / 40
    )
    floor = _best_of(lambda: fft_floor(segments, cfg))
    return audio_s / ours, audio_s / seed, audio_s / floor


def musicnn_per_core(corpus: Path, cfg: FeatureConfig, n_segments: int = 64) -> float:
    """× realtime of the musicnn_msd columns on one core, from 22.05 kHz segments."""
    from genre import backend
    from genre.embeddings import Embedder, patches

    backend.configure(threads=1)
    paths = sorted(p for p in corpus.rglob("*") if p.is_file())
    segments = np.concatenate([load_segments(str(p)).audio for p in paths[: n_segments // 10 + 1]])[
        :n_segments
    ]
    embedder = Embedder(("musicnn_msd",))
    embedder(patches(segments[:32], sample_rate=cfg.sample_rate))  # trace the predict step
    seconds = _best_of(lambda: embedder(patches(segments, sample_rate=cfg.sample_rate)), repeats=2)
    return len(segments) * cfg.segment_seconds / seconds


def seed_loop(corpus: Path, cfg: FeatureConfig) -> tuple[float, float]:
    """Sequential seed-style extraction; returns (seconds, audio seconds)."""
    import librosa

    t0 = time.perf_counter()
    audio_s, rows = 0.0, []
    for path in sorted(p for p in corpus.rglob("*") if p.is_file()):
        y, _ = librosa.load(str(path), sr=cfg.sample_rate, mono=True)
        audio_s += len(y) / cfg.sample_rate
        for s in range(len(y) // cfg.segment_samples):
            rows.append(
                seed_features(y[s * cfg.segment_samples : (s + 1) * cfg.segment_samples], cfg)
            )
    return time.perf_counter() - t0, audio_s


def job(corpus: Path, cfg: FeatureConfig, cpus: int) -> tuple[float, float, float]:
    """The extract job; returns (seconds excluding Ray start-up, Ray start-up seconds,
    audio seconds)."""
    import ray

    from genre.extraction import run_extract
    from genre.runtime import init_ray

    t0 = time.perf_counter()
    init_ray(num_cpus=cpus)
    startup = time.perf_counter() - t0
    out = tempfile.mkdtemp(prefix="bench-shards-")
    try:
        summary = run_extract(str(corpus), out, cfg=cfg)
    finally:
        shutil.rmtree(out, ignore_errors=True)
        ray.shutdown()
    return summary.wall_s, startup, summary.audio_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--cpus", type=int, default=2)
    args = ap.parse_args()
    from genre.synth import write_corpus

    cfg = FeatureConfig()
    corpus = Path(tempfile.mkdtemp(prefix="bench-corpus-"))
    try:
        write_corpus(corpus, per_genre=max(1, args.tracks // 10), seconds=args.seconds, seed=7)
        ours, seed, floor = per_core(corpus, cfg)
        print(
            f"(a) one core, {cfg.features}: genre {ours:.0f}× realtime | "
            f"seed style {seed:.0f}× | FFT floor {floor:.0f}×"
        )
        print(f"    genre / seed = {ours / seed:.1f}×   genre / floor = {ours / floor:.2f}")
        musicnn = musicnn_per_core(corpus, cfg)
        print(
            f"    musicnn_msd (16 kHz resampling + log-mel + network, 1 thread): "
            f"{musicnn:.0f}× realtime, {ours / musicnn:.0f}× the cost of mfcc + chroma + mel"
        )
        loop_s, loop_audio = seed_loop(corpus, cfg)
        job_s, startup_s, job_audio = job(corpus, cfg, args.cpus)
        speedup = loop_s / job_s
        print(
            f"(b) {args.tracks} tracks, {loop_audio / 3600:.2f} h: seed loop {loop_s:.1f} s "
            f"({loop_audio / loop_s:.0f}× realtime) | extract job on {args.cpus} CPUs "
            f"{job_s:.1f} s ({job_audio / job_s:.0f}× realtime) + Ray start-up {startup_s:.1f} s"
        )
        print(
            f"    speed-up {speedup:.2f}× "
            f"(with Ray start-up counted: {loop_s / (job_s + startup_s):.2f}×)"
        )
        print(
            f"per_core_x_realtime={ours:.1f} seed_x_realtime={seed:.1f} "
            f"fft_floor_x_realtime={floor:.1f} job_speedup_vs_seed_loop={speedup:.2f} "
            f"musicnn_x_realtime={musicnn:.1f}"
        )
    finally:
        shutil.rmtree(corpus, ignore_errors=True)


if __name__ == "__main__":
    main()
