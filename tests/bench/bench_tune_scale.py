"""How a log-mel search's memory grows with the collection: streamed at 1×, 4× and 16× a base
size, and streamed against in memory at 1×.

Shards are written directly (learnable synthetic log-mel features, no audio decode), so the
16× folder can be bigger than this machine's free memory. Each size runs one 2-trial search
through the tune job (a local Ray runtime of its own, ``--refit-folds 0``) while the memory
of the job and every process it started (Ray's daemons, the trials, Ray Data's tasks) is
sampled every 0.25 s and summed over processes as PSS (proportional set size: Ray's object
store is shared memory that every reader maps, which summed RSS counts once per reader;
that sum is printed beside it). Printed per run: the peak of that sum over the whole job
and over the Ray workers alone, the wall time, and the trials' training throughput
(segments/s, the mean over their epochs after the first, read from Tune's result files).
With ``--memory-sizes 1,4`` the in-memory search runs at 4× too, and the growth of its
peak per GB of mel is printed.

    python tests/bench/bench_tune_scale.py [--base-tracks 1000] [--sizes 1,4,16] [--cpus 2]
                                           [--memory-sizes 1[,4]]

Up to 40 minutes on 2 cores with the defaults; ``make bench-scale``, not ``make bench``.
The last line is machine-readable:
peak_rss_ratio=<16× over 1×> stream_over_memory=<f>
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
GENRES = ("rock", "jazz", "pop", "blues")
SEGMENTS = 10  # a 30 s track


def write_shards(root: Path, tracks: int, *, seed: int = 0) -> int:
    """``tracks`` learnable log-mel tracks as shards under ``root``; their features' bytes."""
    from genre.config import FeatureConfig
    from genre.shards import ShardStore, segments_table, write_shard

    cfg = FeatureConfig(features=("mel",))
    store = ShardStore(str(root), cfg)
    rng = np.random.default_rng(seed)
    per_shard = 32  # as extract batches them
    for start in range(0, tracks, per_shard):
        ends = min(tracks, start + per_shard)
        ids = [f"{GENRES[k % 4]}/t{k:06d}.wav" for k in range(start, ends)]
        genre = np.repeat([t.split("/")[0] for t in ids], SEGMENTS).astype(object)
        mel = rng.standard_normal((len(genre), *cfg.shape("mel")), dtype=np.float32)
        for g, name in enumerate(GENRES):
            mel[genre == name, :, g * 8 : g * 8 + 8] += 1.0
        track = np.repeat(ids, SEGMENTS).astype(object)
        write_shard(
            str(root),
            segments_table(
                track_id=track,
                path=track,
                genre=genre,
                segment=np.tile(np.arange(SEGMENTS), len(ids)),
                start_s=np.zeros(len(track)),
                duration_s=np.full(len(track), 30.0),
                features={"mel": mel},
                cfg=cfg,
            ),
        )
    store.write_manifest()
    return tracks * SEGMENTS * 4 * int(np.prod(cfg.shape("mel")))


def _tree(root: int) -> dict[int, str]:
    """``root`` and every process below it: pid → command name."""
    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        pid = int(stat.parent.name)
        names[pid] = text[text.index("(") + 1 : text.rindex(")")]
        children.setdefault(int(text.rsplit(")", 1)[1].split()[1]), []).append(pid)
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in names:
            found[pid] = names[pid]
        todo += children.get(pid, [])
    return found


def _memory(pid: int) -> tuple[int, int]:
    """Resident and proportional set size of ``pid`` in bytes. Ray's object store is shared
    memory every worker that reads an object maps: summed RSS counts those pages once per
    process, summed PSS (shared pages divided among their processes) once in all."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    sizes = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("Rss", "Pss"):
            sizes[key] = int(value.split()[0]) * 1024
    return sizes.get("Rss", 0), sizes.get("Pss", 0)


def run(shards: Path, work: Path, mode: str, cpus: int, store_share: float | None) -> dict:
    """One 2-trial search through the tune job; its peaks, wall time and throughput."""
    name = f"scale-{mode}-{shards.name}"
    args = [str(shards), "--data", mode, "--models", "short_chunk_cnn", "--features", "mel"]
    args += ["--num-samples", "2", "--max-epochs", "2", "--grace-epochs", "1"]
    args += ["--refit-folds", "0", "--num-cpus", str(cpus), "--name", name]
    args += ["--tracking-uri", f"sqlite:///{work / 'mlflow.db'}", "--register-as", name]
    args += ["--storage", str(work / "ray_results")]
    env = {**os.environ, "RAY_ADDRESS": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
    if store_share is not None:  # the local runtime's object store, as a share of memory
        env["RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION"] = str(store_share)
    peak = {"all": 0, "workers": 0, "rss": 0}
    t0 = time.perf_counter()
    with open(work / f"{name}.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.tune", *args], cwd=REPO, env=env, stdout=log, stderr=log
        )
        while proc.poll() is None:
            tree = _tree(proc.pid)
            sizes = {pid: _memory(pid) for pid in tree}
            peak["rss"] = max(peak["rss"], sum(rss for rss, _ in sizes.values()))
            peak["all"] = max(peak["all"], sum(pss for _, pss in sizes.values()))
            workers = sum(s[1] for pid, s in sizes.items() if tree[pid].startswith("ray::"))
            peak["workers"] = max(peak["workers"], workers)
            time.sleep(0.25)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"{name} failed: see {work / f'{name}.log'}")
    rates = []
    for result in (work / "ray_results" / name).glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        rates += [r["train_segments_per_s"] for r in rows[1:]]  # the first epoch traces
    return {**peak, "wall": wall, "rate": float(np.mean(rates)) if rates else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-tracks", type=int, default=1000)
    ap.add_argument("--sizes", default="1,4,16")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument(
        "--memory-sizes",
        default="1",
        help="sizes also searched in memory (two or more: the peak's growth per GB of mel)",
    )
    ap.add_argument(
        "--object-store-share",
        type=float,
        default=None,
        help="the object store as a share of memory (default: Ray's, 0.3)",
    )
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    in_memory = [int(s) for s in args.memory_sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-tune-scale-"))
    try:
        results, mel_bytes = {}, {}
        for size in sizes:
            shards = work / f"x{size}"
            mel_bytes[size] = write_shards(shards, args.base_tracks * size)
            gb = mel_bytes[size] / 1e9
            results[(size, "stream")] = r = run(
                shards, work, "stream", args.cpus, args.object_store_share
            )
            print(
                f"{size:>3}× ({args.base_tracks * size} tracks, {gb:.2f} GB of mel) stream: "
                f"peak {r['all'] / 1e9:.2f} GB PSS (Ray workers {r['workers'] / 1e9:.2f} GB; "
                f"summed RSS {r['rss'] / 1e9:.2f} GB), "
                f"{r['wall']:.0f} s, {r['rate']:.0f} training segments/s",
                flush=True,
            )
            if size in in_memory:
                results[(size, "memory")] = m = run(
                    shards, work, "memory", args.cpus, args.object_store_share
                )
                print(
                    f"{size:>3}× memory: peak {m['all'] / 1e9:.2f} GB PSS (Ray workers "
                    f"{m['workers'] / 1e9:.2f} GB; summed RSS {m['rss'] / 1e9:.2f} GB), "
                    f"{m['wall']:.0f} s, "
                    f"{m['rate']:.0f} training segments/s",
                    flush=True,
                )
            shutil.rmtree(shards, ignore_errors=True)
        known = sorted(s for s in in_memory if (s, "memory") in results)
        if len(known) > 1:
            lo, hi = known[0], known[-1]
            features = mel_bytes[hi] - mel_bytes[lo]
            grew = results[(hi, "memory")]["all"] - results[(lo, "memory")]["all"]
            print(
                f"in memory: the peak grows {grew / features:.2f} GB per GB of mel "
                f"({lo}× to {hi}×), from {results[(lo, 'memory')]['all'] / 1e9:.2f} GB at {lo}×",
                flush=True,
            )
        first, last = results[(sizes[0], "stream")], results[(sizes[-1], "stream")]
        ratio = last["all"] / first["all"]
        memory = results.get((sizes[0], "memory"))  # none unless --memory-sizes has it
        speed = first["rate"] / memory["rate"] if memory else float("nan")
        print(f"peak_rss_ratio={ratio:.2f} stream_over_memory={speed:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
