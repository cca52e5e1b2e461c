"""The extract pipeline: an audio tree → segment shards, in parallel on Ray Data.

:func:`extract_batch` is the whole per-batch computation (decode, segment, one STFT
for the batch, write one shard) and runs without Ray; :func:`run_extract` lists the
files, skips what is done, and maps :func:`extract_batch` over the rest with Ray
Data. Files that cannot be decoded become error rows, never exceptions, because
Ray Data aborts the whole job on the first exception raised in a batch function.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from genre.audio import load_segments
from genre.config import FeatureConfig
from genre.corpus import list_tracks
from genre.errors import AudioFileError
from genre.features import extract
from genre.shards import ShardStore, segments_table, write_shard

__all__ = ["extract_batch", "ExtractSummary", "run_extract"]

_RESULT_KEYS = ("track_id", "path", "segments", "duration_s", "shard", "reason", "message")


def extract_batch(batch: dict[str, np.ndarray], *, cfg: FeatureConfig, output: str) -> dict[str, np.ndarray]:
    """Extract a batch of tracks into one shard under ``output``.

    Parameters
    ----------
    batch : dict
        ``path``, ``track_id``, ``genre`` arrays of equal length.
    cfg : FeatureConfig
    output : str
        Shard folder.

    Returns
    -------
    dict
        One entry per input track: ``track_id``, ``path``, ``segments`` (int),
        ``duration_s``, ``shard`` (file name, ``""`` on failure), ``reason`` and
        ``message`` (``""`` on success).
    """
    rows = {key: [] for key in _RESULT_KEYS}
    parts, ok = [], []
    for path, track_id, genre in zip(batch["path"], batch["track_id"], batch["genre"], strict=True):
        reason = message = ""
        try:
            segs = load_segments(str(path), sample_rate=cfg.sample_rate, segment_seconds=cfg.segment_seconds)
            parts.append((str(track_id), str(path), genre, segs))
        except AudioFileError as exc:
            reason, message = exc.reason, str(exc)
        except Exception as exc:  # a decoder bug must not sink the other files of the job
            reason, message = "internal", f"{path}: {type(exc).__name__}: {exc}"
        ok.append(not reason)
        for key, value in zip(_RESULT_KEYS, (str(track_id), str(path), 0, 0.0, "", reason, message), strict=True):
            rows[key].append(value)
    shard = ""
    if parts:
        audio = np.concatenate([p[3].audio for p in parts])
        counts = [len(p[3]) for p in parts]
        table = segments_table(
            track_id=np.repeat([p[0] for p in parts], counts),
            path=np.repeat([p[1] for p in parts], counts),
            genre=[p[2] for p, c in zip(parts, counts, strict=True) for _ in range(c)],
            segment=np.concatenate([np.arange(c) for c in counts]),
            start_s=np.concatenate([p[3].start_s for p in parts]),
            duration_s=np.repeat([p[3].duration_s for p in parts], counts),
            features=extract(audio, cfg),
            cfg=cfg,
        )
        shard = write_shard(output, table)
    good = iter(parts)
    for i, success in enumerate(ok):
        if success:
            segs = next(good)[3]
            rows["segments"][i], rows["duration_s"][i], rows["shard"][i] = len(segs), segs.duration_s, shard
    out = {
        key: np.asarray(values, dtype=np.int64 if key == "segments" else np.float64 if key == "duration_s" else object)
        for key, values in rows.items()
    }
    out["node_id"] = np.full(len(ok), _node_id(), dtype=object)
    return out


def _node_id() -> str:
    """The Ray node running this batch ("" outside Ray): the summary says where work ran."""
    import sys

    if "ray" not in sys.modules:
        return ""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


@dataclass
class ExtractSummary:
    """What one extract run did."""

    output: str
    tracks_found: int = 0
    already_done: int = 0
    extracted: int = 0
    segments: int = 0
    audio_s: float = 0.0
    wall_s: float = 0.0
    ignored_files: int = 0
    skipped: Counter = field(default_factory=Counter)
    errors_path: str = ""
    total_tracks: int = 0
    total_segments: int = 0
    nodes: Counter = field(default_factory=Counter)

    @property
    def x_realtime(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    def format(self) -> str:
        skipped = sum(self.skipped.values())
        lines = [
            f"extract: {self.extracted} tracks → {self.segments} segments in {self.wall_s:.1f} s "
            f"({self.audio_s / 3600:.2f} h of audio, {self.x_realtime:.0f}× realtime)",
            f"  found {self.tracks_found} audio files; {self.already_done} already extracted; "
            f"{skipped} skipped; {self.ignored_files} non-audio files ignored",
        ]
        if skipped:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in self.skipped.most_common())
            lines.append(f"  skipped by reason: {reasons} (details: {self.errors_path})")
        if self.nodes:
            lines.append(f"  ran on {len(self.nodes)} node(s): " + ", ".join(f"{n[:8]} {c} tracks" for n, c in self.nodes.most_common()))
        lines.append(
            f"  output: {self.output} now holds {self.total_tracks} tracks, {self.total_segments} segments"
        )
        return "\n".join(lines)


def _tracks_per_shard(n_todo: int, cpus: float, requested: int | None) -> int:
    if requested is not None:
        return requested
    # ≥ 4 batches per CPU for load balance, ≤ 32 tracks (~25 MB) per shard.
    return int(min(32, max(1, math.ceil(n_todo / max(1.0, 4 * cpus)))))


def run_extract(
    input_root: str,
    output: str,
    *,
    cfg: FeatureConfig,
    address: str | None = None,
    num_cpus: int | None = None,
    tracks_per_shard: int | None = None,
) -> ExtractSummary:
    """Extract every new audio file under ``input_root`` into shards under ``output``.

    Raises
    ------
    ParameterError
        Missing input, output that is a file.
    ConfigMismatchError
        ``output`` holds shards extracted with other settings.
    """
    started = time.perf_counter()
    listing = list_tracks(input_root)
    store = ShardStore(output, cfg)
    done = store.done_track_ids()
    todo = [t for t in listing.tracks if t.track_id not in done]
    summary = ExtractSummary(
        output=output,
        tracks_found=len(listing.tracks),
        already_done=len(listing.tracks) - len(todo),
        ignored_files=len(listing.ignored),
    )
    errors: list[dict[str, str]] = []
    if todo:
        import ray

        from genre.runtime import init_ray

        init_ray(address=address, num_cpus=num_cpus)
        per_shard = _tracks_per_shard(len(todo), ray.cluster_resources().get("CPU", 1.0), tracks_per_shard)
        items = [{"path": t.path, "track_id": t.track_id, "genre": t.genre} for t in todo]
        ds = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / per_shard)).map_batches(
            extract_batch,
            fn_kwargs={"cfg": cfg, "output": output},
            batch_size=per_shard,
            batch_format="numpy",
            num_cpus=1,
        )
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for i in range(len(batch["track_id"])):
                summary.nodes[str(batch["node_id"][i])] += 1
                if batch["reason"][i]:
                    summary.skipped[batch["reason"][i]] += 1
                    errors.append({k: str(batch[k][i]) for k in ("path", "track_id", "reason", "message")})
                else:
                    summary.extracted += 1
                    summary.segments += int(batch["segments"][i])
                    summary.audio_s += float(batch["duration_s"][i])
    summary.errors_path = store.write_errors(errors)
    manifest = store.write_manifest()
    summary.total_tracks, summary.total_segments = manifest["tracks"], manifest["segments"]
    summary.wall_s = time.perf_counter() - started
    return summary
