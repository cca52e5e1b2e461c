"""The extract pipeline: an audio tree → segment shards, in parallel on Ray Data.

:func:`extract_batch` is the whole per-batch computation and runs without Ray, in two
steps: :func:`prepare_batch` decodes the tracks once, cuts segments and computes what
needs no model (one STFT for the batch; musicnn's 16 kHz log-mel patches when the
config names pretrained extractors), then :func:`write_batch` adds the pretrained
columns and writes one shard. :func:`run_extract` lists the files, skips what is done,
and maps them over the rest with Ray Data: one stage of CPU tasks for hand-crafted
features alone; with pretrained extractors, CPU tasks for :func:`prepare_batch` and an
actor pool (:class:`ShardWriter`: the models loaded once per actor, compiled batch
inference, on GPUs when the cluster has them) for :func:`write_batch`. Files that
cannot be decoded become error rows, never exceptions, because Ray Data aborts the
whole job on the first exception raised in a batch function.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from genre import backend
from genre.audio import MAX_DURATION_S
from genre.config import FEATURES, FeatureConfig
from genre.corpus import Listing, Track, list_tracks
from genre.embeddings import Embedder, check_extractors
from genre.errors import ParameterError
from genre.featurize import decode_file, segment_features
from genre.runtime import bounded_retries, check_address, cluster_gpus, init_ray, node_id
from genre.shards import ShardStore, segments_table, write_shard
from genre.store import AttemptJournal, FolderLock

__all__ = [
    "MAX_SHARD_SEGMENTS",
    "extract_batch",
    "prepare_batch",
    "write_batch",
    "ShardWriter",
    "ExtractSummary",
    "check_extract_arguments",
    "run_extract",
]

_RESULT_KEYS = (
    "track_id",
    "path",
    "segments",
    "duration_s",
    "shard",
    "reason",
    "message",
    "warning",
    "warning_message",
    "node_id",
)
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
    embedder: Embedder | None = None,
) -> dict[str, np.ndarray]:
    """Extract a batch of tracks into shards under ``output``: :func:`prepare_batch`
    then :func:`write_batch` for each of its groups, in one process.

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
    embedder : Embedder or None
        The pretrained extractors of ``cfg`` (loaded here when ``cfg`` needs them and
        none is given).

    Returns
    -------
    dict
        One entry per input track, in input order: ``track_id``, ``path``, ``segments``
        (int), ``duration_s``, ``shard`` (file name, ``""`` on failure), ``reason`` and
        ``message`` (``""`` on success), ``node_id``.
    """
    if cfg.extractors and embedder is None:
        embedder = Embedder(cfg.extractors)
    parts = [
        write_batch(group, cfg=cfg, output=output, embedder=embedder)
        for group in prepare_batch(
            batch,
            cfg=cfg,
            output=output,
            max_duration_s=max_duration_s,
            max_shard_segments=max_shard_segments,
        )
    ]
    if not parts:
        return {key: np.zeros(0, dtype=object) for key in _RESULT_KEYS}
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def prepare_batch(
    batch: dict[str, np.ndarray],
    *,
    cfg: FeatureConfig,
    output: str,
    max_duration_s: float = MAX_DURATION_S,
    max_shard_segments: int = MAX_SHARD_SEGMENTS,
) -> Iterator[dict[str, np.ndarray]]:
    """Decode tracks and compute what needs no model: hand-crafted features, musicnn patches.

    The first stage of extraction (CPU tasks). Each group it yields holds about
    ``max_shard_segments`` segments at most and becomes one shard; the audio itself
    never leaves this function.

    Yields
    ------
    dict
        One row per track, contiguous and in input order (failed tracks included):
        ``track_id``, ``path``, ``genre``, ``duration_s``, ``reason``, ``message``
        (``""`` on success), ``start_s`` (an object column of ``(segments,)`` arrays), one
        object column per hand-crafted feature of ``cfg`` (``(segments, frames, bins)``
        each) and, when ``cfg`` names extractors, ``patches`` (``(segments, 187, 96)``).
    """
    journal = AttemptJournal(output)
    rows: list[dict] = []
    pending = 0
    n = len(batch["path"])
    for i in range(n):
        row = {
            "track_id": str(batch["track_id"][i]),
            "path": str(batch["path"][i]),
            "genre": batch["genre"][i],
        }
        row.update(_decode(row, journal, cfg=cfg, max_duration_s=max_duration_s))
        rows.append(row)
        pending += len(row["audio"])
        if i == n - 1 or pending >= max_shard_segments:
            yield _featurize(rows, cfg)
            rows, pending = [], 0


def _decode(
    row: dict, journal: AttemptJournal, *, cfg: FeatureConfig, max_duration_s: float
) -> dict:
    """One track's segments (or its reason and message), decoded inside the crash journal."""
    path = row["path"]
    failed = {"audio": np.zeros((0, cfg.segment_samples), np.float32), "duration_s": 0.0}
    failed.update(start_s=np.zeros(0, np.float32), warning="", warning_message="")
    segs, reason, message = decode_file(
        path, cfg=cfg, journal=journal, key=row["track_id"], max_duration_s=max_duration_s
    )
    if segs is None:
        return {**failed, "reason": reason, "message": message}
    return {
        "audio": segs.audio,
        "start_s": segs.start_s,
        "duration_s": segs.duration_s,
        "reason": "",
        "message": "",
        # Less decoded than the header said: extracted from what decoded, listed in
        # _errors.parquet as a warning.
        "warning": segs.warning.kind if segs.warning else "",
        "warning_message": segs.warning.message if segs.warning else "",
    }


def _featurize(rows: list[dict], cfg: FeatureConfig) -> dict[str, np.ndarray]:
    """Stage-one columns of ``rows``: one STFT for all their segments, then split per track."""
    audio = np.concatenate([row.pop("audio") for row in rows])
    values = segment_features(audio, cfg=cfg, with_patches=bool(cfg.extractors))
    bounds = np.cumsum([0] + [len(row["start_s"]) for row in rows])
    out = {key: _objects([row[key] for row in rows]) for key in rows[0]}
    out["duration_s"] = np.asarray([row["duration_s"] for row in rows], dtype=np.float64)
    for name, array in values.items():
        out[name] = _objects([array[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
    return out


def _objects(values: list) -> np.ndarray:
    """An object array holding ``values`` as they are (arrays stay arrays)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def write_batch(
    batch: dict[str, np.ndarray],
    *,
    cfg: FeatureConfig,
    output: str,
    embedder: Embedder | None = None,
) -> dict[str, np.ndarray]:
    """Compute the pretrained columns of a :func:`prepare_batch` group and write its shard.

    The second stage of extraction: in a Ray Data actor that holds ``embedder`` when
    ``cfg`` names extractors, else right after the first stage in the same task. The
    shard is written atomically (:func:`genre.shards.write_shard`); failed tracks pass
    through as result rows.

    Returns
    -------
    dict
        As :func:`extract_batch`, one entry per row of ``batch``.
    """
    n = len(batch["path"])
    ok = [i for i in range(n) if not batch["reason"][i]]
    counts = [len(batch["start_s"][i]) for i in ok]
    shard = ""
    if ok:
        features = {
            name: np.concatenate([batch[name][i] for i in ok])
            for name in cfg.features
            if name in FEATURES
        }
        if cfg.extractors:
            features.update(embedder(np.concatenate([batch["patches"][i] for i in ok])))
        table = segments_table(
            track_id=np.repeat([str(batch["track_id"][i]) for i in ok], counts),
            path=np.repeat([str(batch["path"][i]) for i in ok], counts),
            genre=[batch["genre"][i] for i, c in zip(ok, counts, strict=True) for _ in range(c)],
            segment=np.concatenate([np.arange(c) for c in counts]),
            start_s=np.concatenate([batch["start_s"][i] for i in ok]),
            duration_s=np.repeat([float(batch["duration_s"][i]) for i in ok], counts),
            features=features,
            cfg=cfg,
        )
        shard = write_shard(output, table)
    segments = np.zeros(n, dtype=np.int64)
    segments[ok] = counts
    return {
        "track_id": np.asarray([str(t) for t in batch["track_id"]], dtype=object),
        "path": np.asarray([str(p) for p in batch["path"]], dtype=object),
        "segments": segments,
        "duration_s": np.asarray(batch["duration_s"], dtype=np.float64),
        "shard": np.asarray([shard if i in ok else "" for i in range(n)], dtype=object),
        "reason": np.asarray([str(r) for r in batch["reason"]], dtype=object),
        "message": np.asarray([str(m) for m in batch["message"]], dtype=object),
        "warning": np.asarray([str(w) for w in batch["warning"]], dtype=object),
        "warning_message": np.asarray([str(w) for w in batch["warning_message"]], dtype=object),
        "node_id": np.full(n, node_id(), dtype=object),
    }


class ShardWriter:
    """Ray Data actor, the second stage when ``cfg`` names pretrained extractors: it
    loads them once (:class:`genre.embeddings.Embedder`) and runs :func:`write_batch`.

    Parameters
    ----------
    cfg : FeatureConfig
    output : str
    threads : int or None
        The backend's intra-op threads (the actor's CPU share; ``None`` on a GPU). The
        patches per compiled call follow the GPUs the backend sees (:class:`Embedder`).
    """

    def __init__(self, *, cfg: FeatureConfig, output: str, threads: int | None):
        backend.configure(threads=threads)
        self.cfg, self.output = cfg, output
        self.embedder = Embedder(cfg.extractors)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``batch``: one row whose ``group`` holds a :func:`prepare_batch` group."""
        (group,) = batch["group"]
        return write_batch(group, cfg=self.cfg, output=self.output, embedder=self.embedder)


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
    warnings: Counter = field(default_factory=Counter)  # extracted from part of the file
    errors_path: str = ""
    total_tracks: int = 0
    total_segments: int = 0
    nodes: Counter = field(default_factory=Counter)
    crashes_forgotten: int = 0

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
        if self.crashes_forgotten:
            lines.append(
                f"  --retry-errors: tried again {self.crashes_forgotten} file(s) "
                "that had crashed a worker"
            )
        if skipped:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in self.skipped.most_common())
            lines.append(f"  skipped by reason: {reasons} (details: {self.errors_path})")
        if self.skipped["crashed"]:
            # Without this a crashed file stays skipped on every run: the journal keeps it.
            lines.append(
                "  crashed files are skipped on every later run: "
                "re-run with --retry-errors to try them again"
            )
        if self.warnings:
            kinds = ", ".join(f"{kind}: {n}" for kind, n in self.warnings.most_common())
            lines.append(
                f"  extracted with a warning (less decoded than the header said): {kinds} "
                f"(details: {self.errors_path})"
            )
        if self.nodes:
            lines.append(
                f"  ran on {len(self.nodes)} node(s): "
                + ", ".join(f"{n[:8]} {c} tracks" for n, c in self.nodes.most_common())
            )
        lines.append(
            f"  output: {self.output} now holds {self.total_tracks} tracks, "
            f"{self.total_segments} segments"
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
    gpus_per_worker: float = 0.0,
) -> None:
    """Refuse bad extract settings before anything is created or started.

    Raises
    ------
    ParameterError
        A count that is not a positive integer, a duration that is not positive, a
        negative GPU share.
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
    if not gpus_per_worker >= 0:
        raise ParameterError(f"--gpus-per-worker={gpus_per_worker} must be ≥ 0")


def run_extract(
    input_root: str,
    output: str,
    *,
    cfg: FeatureConfig,
    address: str | None = None,
    num_cpus: int | None = None,
    tracks_per_shard: int | None = None,
    max_duration_s: float = MAX_DURATION_S,
    gpus_per_worker: float = 0.0,
    retry_errors: bool = False,
) -> ExtractSummary:
    """Extract every new audio file under ``input_root`` into shards under ``output``.

    Files that failed before are tried again on every run, except those that killed
    their worker twice (``crashed``, see :class:`genre.store.AttemptJournal`): the
    crash journal skips them until ``retry_errors`` clears it.

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
    gpus_per_worker : float
        GPUs per pretrained-extractor actor, used only when the cluster has GPUs
        (0: CPU actors, one per CPU at most).
    retry_errors : bool
        Forget the recorded crashes, so ``crashed`` files are decoded again.

    Returns
    -------
    ExtractSummary

    Raises
    ------
    ParameterError
        Bad settings, missing input, output that is a file or locked by a live run,
        pretrained weights that are not installed, a cluster address nobody answers on
        (within :data:`genre.runtime.JOIN_TIMEOUT_S`).
    ConfigMismatchError
        ``output`` holds shards extracted with other settings.
    """
    options = {
        "num_cpus": num_cpus,
        "tracks_per_shard": tracks_per_shard,
        "max_duration_s": max_duration_s,
        "gpus_per_worker": gpus_per_worker,
    }
    check_extract_arguments(**options)
    check_extractors(cfg)
    # Ray retries an address nobody listens on forever: fail before OUTPUT or its lock exist.
    check_address(address)
    started = time.perf_counter()
    listing = list_tracks(input_root)
    with FolderLock(output, command="jobs.extract"):
        store = ShardStore(output, cfg)
        todo, summary = _new_work(store, listing, output=output, retry_errors=retry_errors)
        # Named pipes, devices, sockets: skipped unopened by the listing, counted already.
        errors = list(listing.skipped)
        if todo:
            errors += _extract_on_ray(
                todo, summary, cfg=cfg, output=output, address=address, **options
            )
        summary.errors_path = store.write_errors(errors)
        manifest = store.write_manifest()
    summary.total_tracks, summary.total_segments = manifest["tracks"], manifest["segments"]
    summary.wall_s = time.perf_counter() - started
    return summary


def _new_work(
    store: ShardStore, listing: Listing, *, output: str, retry_errors: bool
) -> tuple[list[Track], ExtractSummary]:
    """The listed tracks not in the shards yet, and the summary that starts counting them.
    Runs under the output's lock, so no other run is decoding these files now."""
    # Another collection's tracks with the same relative paths are refused, not skipped.
    done = store.done_track_ids(tracks=listing.tracks)
    todo = [t for t in listing.tracks if t.track_id not in done]
    summary = ExtractSummary(
        output=output,
        tracks_found=len(listing.tracks),
        already_done=len(listing.tracks) - len(todo),
        ignored_files=len(listing.ignored),
        crashes_forgotten=AttemptJournal(output).clear() if retry_errors else 0,
    )
    for row in listing.skipped:
        summary.skipped[row["reason"]] += 1
    return todo, summary


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
    gpus_per_worker: float,
) -> list[dict[str, str]]:
    """Run the extraction plan over ``todo`` on Ray Data; count into ``summary``; return
    the skips."""
    import ray

    init_ray(address=address, num_cpus=num_cpus)
    cpus = ray.cluster_resources().get("CPU", 1.0)
    per_shard = _tracks_per_shard(len(todo), cpus, tracks_per_shard)
    items = [{"path": t.path, "track_id": t.track_id, "genre": t.genre} for t in todo]
    ds = ray.data.from_items(items, override_num_blocks=math.ceil(len(items) / per_shard))
    kwargs = {"cfg": cfg, "output": output, "max_duration_s": max_duration_s}
    # Ray Data retries a dead worker's task forever by default; the crash journal
    # needs three runs of a batch to skip its culprit, so allow exactly that.
    tasks = {"batch_size": per_shard, "batch_format": "numpy", "max_retries": TASK_RETRIES}
    with bounded_retries():
        if not cfg.extractors:
            ds = ds.map_batches(extract_batch, fn_kwargs=kwargs, num_cpus=1, **tasks)
        else:
            ds = ds.map_batches(_prepared_groups, fn_kwargs=kwargs, num_cpus=1, **tasks)
            ds = _embedding_stage(ds, cfg=cfg, output=output, cpus=cpus, gpus=gpus_per_worker)
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
            if batch["warning"][i]:
                summary.warnings[batch["warning"][i]] += 1
                errors.append(
                    {
                        "path": str(batch["path"][i]),
                        "track_id": str(batch["track_id"][i]),
                        "reason": str(batch["warning"][i]),
                        "message": str(batch["warning_message"][i]),
                        "severity": "warning",
                    }
                )
    return errors


def _prepared_groups(batch: dict[str, np.ndarray], **kwargs) -> Iterator[dict[str, np.ndarray]]:
    """:func:`prepare_batch` for Ray Data: each group as one row (``group``: its columns),
    so the next stage takes exactly one future shard at a time, whatever its tracks.

    (Ray Data keeps the group as a pickled object; its workers' logs say so once a task.
    A row per track instead would let Ray Data regroup rows by count, and a batch of a few
    hour-long tracks would hold gigabytes.)"""
    for group in prepare_batch(batch, **kwargs):
        yield {"group": _objects([group])}


def _embedding_stage(ds, *, cfg: FeatureConfig, output: str, cpus: float, gpus: float):
    """:class:`ShardWriter` actors after the decode tasks: one per GPU share when the
    cluster has GPUs, else CPU actors of one thread each, one per CPU at most."""
    import ray

    gpus = gpus if cluster_gpus() > 0 else 0.0
    if gpus:
        pool = ray.data.ActorPoolStrategy(size=max(1, int(cluster_gpus() / gpus)))
        threads = None
    else:
        pool = ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, int(cpus)))
        threads = 1
    return ds.map_batches(
        ShardWriter,
        fn_constructor_kwargs={"cfg": cfg, "output": output, "threads": threads},
        batch_size=1,  # one group of the first stage: one shard
        batch_format="numpy",
        compute=pool,
        num_cpus=1,
        num_gpus=gpus,
        max_task_retries=TASK_RETRIES,  # a deprecated remote arg: see runtime.bounded_retries
    )
