"""Decoding, measured side by side in one run.

(a) Decode speed per format and decoder, × realtime on one core: the same 120 s of
    44.1 kHz stereo music-like signal in every format, decoded to mono at its native
    rate (``blocks()`` of each decoder) by libsndfile where it can and by FFmpeg (PyAV),
    and through ``genre.audio.load`` at 22.05 kHz (the decoder genre picks, downmix and
    resampling included). Best of three.
(b) The label job end to end (Ray, decode, features, predictor pool, results) on an mp3
    collection (30 s tracks and 3-minute tracks, whose spread windows are all that is
    resampled): mp3 through libsndfile, the decoder before FFmpeg took mp3 over, vs
    FFmpeg, same code otherwise (a worker set-up hook sends mp3 back to libsndfile in
    every Ray worker). Alternating rounds, best of two each.

    python tests/bench/bench_decode.py [--tracks 40] [--long-tracks 10] [--cpus 2]

The last line is machine-readable:
ffmpeg_over_sndfile_mp3=<f> label_mp3_ffmpeg_over_sndfile=<f>
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
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.audio_shapes import encode, signal  # noqa: E402

SECONDS = 120.0


def _formats(folder: Path) -> dict[str, Path]:
    """One file per format of the same signal."""
    import soundfile as sf

    y = signal(seconds=SECONDS, sample_rate=44100, channels=2)
    paths = {}
    for name, fmt, subtype in (
        ("wav", "WAV", "PCM_16"),
        ("flac", "FLAC", "PCM_16"),
        ("ogg", "OGG", "VORBIS"),
    ):
        paths[name] = folder / f"a.{name}"
        with sf.SoundFile(paths[name], "w", 44100, 2, format=fmt, subtype=subtype) as f:
            for start in range(0, len(y), 8192):
                f.write(y[start : start + 8192])
    for name, codec, container, rate in (
        ("mp3", "libmp3lame", "mp3", 44100),
        ("m4a", "aac", "mp4", 44100),
        ("opus", "libopus", "ogg", 48000),
        ("wma", "wmav2", "asf", 44100),
    ):
        paths[name] = folder / f"a.{name}"
        signal_at = y if rate == 44100 else signal(seconds=SECONDS, sample_rate=rate, channels=2)
        encode(
            paths[name],
            signal_at,
            sample_rate=rate,
            codec=codec,
            container=container,
            bit_rate=128_000,
        )
    return paths


def _best(fn, rounds: int = 3) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def decode_speeds(folder: Path) -> dict[tuple[str, str], float]:
    """× realtime of each decoder on each format it reads, and of ``load`` at 22.05 kHz."""
    from genre import audio

    speeds = {}
    for fmt, path in _formats(folder).items():
        for decoder, cls in (("libsndfile", audio._SndfileReader), ("FFmpeg", audio._FFmpegReader)):

            def run(cls=cls, path=path):
                reader = cls(str(path), str(path))
                try:
                    n = sum(len(b) for b in reader.blocks())
                finally:
                    reader.close()
                assert n > 0 and not reader.stopped

            try:
                run()
            except Exception:  # libsndfile reads no m4a, opus or wma
                continue
            speeds[(fmt, decoder)] = SECONDS / _best(run)
        speeds[(fmt, "load 22.05 kHz")] = SECONDS / _best(
            lambda path=path: audio.load(path, sample_rate=22050)
        )
    return speeds


def _mp3_collection(folder: Path, *, tracks: int, long_tracks: int) -> None:
    for i in range(tracks + long_tracks):
        seconds = 30.0 if i < tracks else 180.0
        y = signal(seconds=seconds, sample_rate=44100, channels=2, seed=i)
        genre = ("blues", "rock")[i % 2]
        (folder / genre).mkdir(parents=True, exist_ok=True)
        encode(
            folder / genre / f"t{i:03d}.mp3",
            y,
            sample_rate=44100,
            codec="libmp3lame",
            container="mp3",
            bit_rate=128_000,
        )


def _mp3_through_libsndfile() -> None:
    """Worker set-up hook: the decoder choice as it was before FFmpeg took mp3 over."""
    from genre import audio

    audio.SOUNDFILE_EXTENSIONS = (*audio.SOUNDFILE_EXTENSIONS, ".mp3")


def label_rates(work: Path, *, tracks: int, long_tracks: int, cpus: int) -> dict[str, float]:
    """Tracks/s of the label job on the mp3 collection, libsndfile vs FFmpeg for mp3."""
    import ray

    from genre.labeling import run_label
    from tests.bench.bench_label import train_model

    _mp3_collection(work / "mp3", tracks=tracks, long_tracks=long_tracks)
    model = train_model(work, kind="cnn", feature="mfcc")
    times: dict[str, list[float]] = {"libsndfile": [], "FFmpeg": []}
    for _ in range(2):
        for decoder in times:
            if ray.is_initialized():
                ray.shutdown()
            hook = {"worker_process_setup_hook": _mp3_through_libsndfile}
            ray.init(
                num_cpus=cpus,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env=hook if decoder == "libsndfile" else None,
            )
            shutil.rmtree(work / "labels", ignore_errors=True)
            summary = run_label(str(work / "mp3"), str(work / "labels"), model=model)
            assert summary.labelled == tracks + long_tracks, summary.format()
            times[decoder].append(summary.wall_s)
    ray.shutdown()
    return {k: (tracks + long_tracks) / min(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracks", type=int, default=40, help="30 s mp3 tracks")
    parser.add_argument("--long-tracks", type=int, default=10, help="3-minute mp3 tracks")
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-decode-"))
    try:
        speeds = decode_speeds(work)
        print(f"(a) decode, × realtime on one core ({SECONDS:.0f} s, 44.1 kHz stereo):")
        print(f"  {'format':<6} {'libsndfile':>11} {'FFmpeg':>9} {'load 22.05 kHz':>15}")
        for fmt in dict.fromkeys(f for f, _ in speeds):
            row = [speeds.get((fmt, d)) for d in ("libsndfile", "FFmpeg", "load 22.05 kHz")]
            cells = [f"{v:.0f}×" if v else "—" for v in row]
            print(f"  {fmt:<6} {cells[0]:>11} {cells[1]:>9} {cells[2]:>15}")
        rates = label_rates(work, tracks=args.tracks, long_tracks=args.long_tracks, cpus=args.cpus)
        print(
            f"(b) label job, {args.tracks} × 30 s + {args.long_tracks} × 3 min mp3, "
            f"{args.cpus} CPUs, seed cnn on MFCC: mp3 through libsndfile "
            f"{rates['libsndfile']:.2f} tracks/s, through FFmpeg {rates['FFmpeg']:.2f} tracks/s "
            f"({rates['FFmpeg'] / rates['libsndfile']:.2f}×)"
        )
        mp3 = speeds[("mp3", "FFmpeg")] / speeds[("mp3", "libsndfile")]
        label = rates["FFmpeg"] / rates["libsndfile"]
        print(f"ffmpeg_over_sndfile_mp3={mp3:.2f} label_mp3_ffmpeg_over_sndfile={label:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
