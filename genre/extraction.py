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

from genre.audio import MAX_DURATION_S, Segments, load_segments
from genre.config import FeatureConfig
from genre.corpus import list_tracks
from genre.errors import AudioFileError, ParameterError
from genre.features import extract
from genre.shards import ShardStore, segments_table, write_shard
from genre.store import AttemptJournal, FolderLock

__all__ = [
    "MAX_SHARD_SEGMENTS",
    "extract_batch",
    "ExtractSummary",
    "check_extract_arguments",
    "run_extract",
]

_RESULT_KEYS = ("track_id", "path", "segments", "duration_s", "shard", "reason", "message")
#: Segments held in memory before a batch writes a shard (≈ 270 MB of 22.05 kHz audio).
MAX_SHARD_SEGMENTS = 1024
#: Ray retries a batch whose worker died this often; with the crash journal's two
#: attempts per file, the third run of a batch skips its culprit.
TASK_RETRIES = 3


def extract_batch(
    batch: dict[str, np.ndarray],
    *,
    cfg: FeatureConfig,
    output: str,
    max_duration_s: float = MAX_DURATION_S,
    max_shard_segments: int = MAX_SHARD_SEGMENTS,
) -> dict[str, np.ndarray]:
    """Extract a batch of tracks into shards under ``output``.

    Every file is decoded inside the folder's crash journal (see
    :class:`genre.store.AttemptJournal`), so a file that kills its worker is skipped as
    ``crashed`` when Ray retries the batch, and the batch's other files are written.

    Parameters
    ----------
    batch : dict
        ``path``, ``track_id``, ``genre`` arrays of equal length.
    cfg : FeatureConfig
    output : str
        Shard folder.
    max_duration_s : float
        Longest file decoded (``too-long`` beyond).
    max_shard_segments : int
        A shard is written as soon as the decoded segments reach this many, which bounds
        the memory of a batch of long tracks (1024 segments ≈ 270 MB of audio).

    Returns
    -------
    dict
        One entry per input track: ``track_id``, ``path``, ``segments`` (int),
        ``duration_s``, ``shard`` (file name, ``""`` on failure), ``reason`` and
        ``message`` (``""`` on success), ``node_id``.
    """
    journal = AttemptJournal(output)
    n = len(batch["path"])
    rows = {key: [] for key in _RESULT_KEYS}
    for key, default in (
        ("segments", 0),
        ("duration_s", 0.0),
        ("shard", ""),
        ("reason", ""),
        ("message", ""),
    ):
        rows[key] = [default] * n
    rows["track_id"] = [str(t) for t in batch["track_id"]]
    rows["path"] = [str(p) for p in batch["path"]]
    pending: list[tuple[int, str, Segments]] = []  # (row, genre, segments) not yet in a shard
    for i, genre in enumerate(batch["genre"]):
        path, track_id = rows["path"][i], rows["track_id"][i]
        try:
            segs = journal.decode(
                track_id,
                path,
                lambda path=path: load_segments(
                    path,
                    sample_rate=cfg.sample_rate,
                    segment_seconds=cfg.segment_seconds,
                    max_duration_s=max_duration_s,
                ),
            )
            pending.append((i, genre, segs))
        except AudioFileError as exc:
            rows["reason"][i], rows["message"][i] = exc.reason, str(exc)
        except Exception as exc:  # a decoder bug must not sink the other files of the job
            rows["reason"][i], rows["message"][i] = (
                "internal",
                f"{path}: {type(exc).__name__}: {exc}",
            )
        if pending and (i == n - 1 or sum(len(p[2]) for p in pending) >= max_shard_segments):
            _write_pending(pending, rows, cfg=cfg, output=output)
            pending = []
    if pending:
        _write_pending(pending, rows, cfg=cfg, output=output)
    out = {key: np.asarray(values, dtype=object) for key, values in rows.items()}
    out["segments"] = np.asarray(rows["segments"], dtype=np.int64)
    out["duration_s"] = np.asarray(rows["duration_s"], dtype=np.float64)
    out["node_id"] = np.full(n, _node_id(), dtype=object)
    return out


def _write_pending(
    pending: list[tuple[int, str, Segments]],
    rows: dict[str, list],
    *,
    cfg: FeatureConfig,
    output: str,
) -> None:
    """One shard for the decoded tracks of ``pending``; fill their result rows."""
    counts = [len(segs) for _, _, segs in pending]
    table = segments_table(
        track_id=np.repeat([rows["track_id"][i] for i, _, _ in pending], counts),
        path=np.repeat([rows["path"][i] for i, _, _ in pending], counts),
        genre=[genre for (_, genre, _), c in zip(pending, counts, strict=True) for _ in range(c)],
        segment=np.concatenate([np.arange(c) for c in counts]),
        start_s=np.concatenate([segs.start_s for _, _, segs in pending]),
        duration_s=np.repeat([segs.duration_s for _, _, segs in pending], counts),
        features=extract(np.concatenate([segs.audio for _, _, segs in pending]), cfg),
        cfg=cfg,
    )
    shard = write_shard(output, table)
    for i, _, segs in pending:
        rows["segments"][i], rows["duration_s"][i], rows["shard"][i] = (
            len(segs),
            segs.duration_s,
            shard,
        )


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
            lines.append(
                f"  ran on {len(self.nodes)} node(s): "
                + ", ".join(f"{n[:8]} {c} tracks" for n, c in self.nodes.most_common())
            )
        lines.append(
            f"  output: {self.output} now holds {self.total_tracks} tracks, {self.total_segments} segments"
        )
        return "\n".join(lines)


def _tracks_per_shard(n_todo: int, cpus: float, requested: int | None) -> int:
    if requested is not None:
        return requested
    # ≥ 4 batches per CPU for load balance, ≤ 32 tracks (~25 MB) per shard.
    return int(min(32, max(1, math.ceil(n_todo / max(1.0, 4 * cpus)))))


def check_extract_arguments(
    *,
    num_cpus: int | None = None,
    tracks_per_shard: int | None = None,
    max_duration_s: float = MAX_DURATION_S,
) -> None:
    """Refuse bad extract settings before anything is created or started.

    Raises
    ------
    ParameterError
        A count that is not a positive integer, a duration that is not positive.
    """
    for flag, value in (("--num-cpus", num_cpus), ("--tracks-per-shard", tracks_per_shard)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value <= 0
        ):
            raise ParameterError(f"{flag}={value} must be a positive integer")
    if not max_duration_s > 0:
        raise ParameterError(
            f"--max-duration={max_duration_s} must be a positive number of seconds"
        )


def run_extract(
    input_root: str,
    output: str,
    *,
    cfg: FeatureConfig,
    address: str | None = None,
    num_cpus: int | None = None,
    tracks_per_shard: int | None = None,
    max_duration_s: float = MAX_DURATION_S,
) -> ExtractSummary:
    """Extract every new audio file under ``input_root`` into shards under ``output``.

    Parameters
    ----------
    input_root : str
        Audio tree (local folder or URI).
    output : str
        Shard folder; one writer at a time (``_lock``).
    cfg : FeatureConfig
    address, num_cpus
        Ray cluster address; CPUs of a local runtime.
    tracks_per_shard : int or None
        Tracks per batch and shard (default: ≥ 4 batches per CPU, ≤ 32).
    max_duration_s : float
        Longest file decoded; longer ones are ``too-long`` skips.

    Returns
    -------
    ExtractSummary

    Raises
    ------
    ParameterError
        Bad settings, missing input, output that is a file or locked by a live run.
    ConfigMismatchError
        ``output`` holds shards extracted with other settings.
    """
    check_extract_arguments(
        num_cpus=num_cpus, tracks_per_shard=tracks_per_shard, max_duration_s=max_duration_s
    )
    started = time.perf_counter()
    listing = list_tracks(input_root)
    with FolderLock(output, command="jobs.extract"):
        store = ShardStore(output, cfg)
        done = store.done_track_ids()
        todo = [t for t in listing.tracks if t.track_id not in done]
        summary = ExtractSummary(
            output=output,
            tracks_found=len(listing.tracks),
            already_done=len(listing.tracks) - len(todo),
            ignored_files=len(listing.ignored),
        )
        errors = (
            _extract_on_ray(
                todo,
                summary,
                cfg=cfg,
                output=output,
                address=address,
                num_cpus=num_cpus,
                tracks_per_shard=tracks_per_shard,
                max_duration_s=max_duration_s,
            )
            if todo
            else []
        )
        summary.errors_path = store.write_errors(errors)
        manifest = store.write_manifest()
    summary.total_tracks, summary.total_segments = manifest["tracks"], manifest["segments"]
    summary.wall_s = time.perf_counter() - started
    return summary


def _extract_on_ray(
    todo: list,
    summary: ExtractSummary,
    *,
    cfg: FeatureConfig,
    output: str,
    address: str | None,
    num_cpus: int | None,
    tracks_per_shard: int | None,
    max_duration_s: float,
) -> list[dict[str, str]]:
    """Map :func:`extract_batch` over ``todo`` on Ray Data; count into ``summary``; return the skips."""
    import ray

    from genre.runtime import init_ray

    init_ray(address=address, num_cpus=num_cpus)
    per_shard = _tracks_per_shard(
        len(todo), ray.cluster_resources().get("CPU", 1.0), tracks_per_shard
    )
    items = [{"path": t.path, "track_id": t.track_id, "genre": t.genre} for t in todo]
    ds = ray.data.from_items(
        items, override_num_blocks=math.ceil(len(items) / per_shard)
    ).map_batches(
        extract_batch,
        fn_kwargs={"cfg": cfg, "output": output, "max_duration_s": max_duration_s},
        batch_size=per_shard,
        batch_format="numpy",
        num_cpus=1,
        # Ray Data retries a dead worker's task forever by default; the crash journal
        # needs three runs of a batch to skip its culprit, so allow exactly that.
        max_retries=TASK_RETRIES,
    )
    errors: list[dict[str, str]] = []
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for i in range(len(batch["track_id"])):
            summary.nodes[str(batch["node_id"][i])] += 1
            if batch["reason"][i]:
                summary.skipped[batch["reason"][i]] += 1
                errors.append(
                    {k: str(batch[k][i]) for k in ("path", "track_id", "reason", "message")}
                )
            else:
                summary.extracted += 1
                summary.segments += int(batch["segments"][i])
                summary.audio_s += float(batch["duration_s"][i])
    return errors
