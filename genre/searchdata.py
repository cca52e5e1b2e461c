"""A search's data on Ray Data: the statistics pass over the shards, and the trials' streams.

A search over a collection larger than one machine's memory never holds it: the driver
reads the shards' id columns alone (:func:`genre.shards.track_index`, a few bytes per
segment), splits the tracks as :func:`genre.training.prepare` would, and makes **one
streaming pass** over the training segments with Ray Data (:func:`statistics`): per-batch
float64 moments merged into the normalisation (:class:`genre.training.Moments`), every
feature value checked finite. What it finds (:class:`genre.training.SearchStats`) is stored
in the search's folder (:func:`save_stats`) and every trial reads it instead of computing
it again; a resumed search reads it back, so its splits stay the ones it started with.

A split is read as ``read_parquet`` over the shard files with the split's tracks chosen
by a filter on ``track_id`` pushed down to the scan, so only that split's row groups are
decoded. A track held by two shards is read from the one the index chose
(:attr:`genre.shards.TrackIndex.source`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
from typing import Any

import numpy as np

from genre import store
from genre.errors import ParameterError
from genre.shards import TrackIndex, feature_array
from genre.training import Moments, SearchStats, nonfinite_error

__all__ = [
    "STATS_FOLDER",
    "ShardStream",
    "load_stats",
    "save_stats",
    "split_dataset",
    "statistics",
]

#: Where a search keeps its statistics, one file per feature set (``STORAGE/NAME/…``).
STATS_FOLDER = "genre_stats"
#: Track ids named when features are not finite (the message names five).
_BAD_SHOWN = 5
#: Bytes of segments a trial's local shuffle buffer holds (at least two batches).
SHUFFLE_BUFFER_BYTES = 128 * 1024**2
#: Ray Data's largest block. Its default (128 MB) is more than a small object store holds
#: whole (Ray's least is 75 MB): every block would be spilled to disk and read back.
BLOCK_BYTES = 16 * 1024**2


def _small_blocks() -> None:
    """Ray Data's blocks, and the Parquet bytes one read task takes on, at most
    :data:`BLOCK_BYTES` in this process (and the tasks it starts): a read task writes all
    it read into the object store, so a 128 MB read unit (Ray Data's default) overflows a
    small store and is spilled to disk whatever the backpressure."""
    from ray.data import DataContext

    DataContext.get_current().target_max_block_size = BLOCK_BYTES
    os.environ.setdefault("RAY_DATA_PARQUET_BIN_PACKING_BYTES", str(BLOCK_BYTES))


@functools.cache
def _lean_arrow() -> None:
    """Arrow's allocations in this process from jemalloc, which hands freed pages back at
    once (set once per process, not at every reading): a trial's batches (the shuffle
    buffer, the numpy copies) are made and freed at every step, and Arrow's default pool
    kept what they freed. Measured over three epochs of a stream with a 16 MiB buffer:
    178 MiB held with the default pool (mimalloc), 210 MiB with jemalloc's default decay,
    76 MiB with this one."""
    import pyarrow as pa

    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # a pyarrow built without it: keep its default
        return
    pa.set_memory_pool(pool)
    pa.jemalloc_set_decay_ms(0)


def split_dataset(
    index: TrackIndex,
    tracks: set[str],
    *,
    columns: list[str],
    shuffle_seed: int | None = None,
    cpus: float | None = None,
):
    """A Ray Dataset of the segments of ``tracks`` (index track ids), ``columns`` of them.

    ``track_id`` comes out as the index files it (an ``--other`` folder's under
    :data:`genre.shards.OTHER_MOUNT`). The files of a folder are read as one dataset with
    the split's ids as a filter pushed down to the scan; a file that holds a copy of a
    track read from another shard (:attr:`~genre.shards.TrackIndex.shadowed`) is read
    alone, with the tracks read from it only.

    ``shuffle_seed``: the files are read in a seeded random order (a trial's epoch; the
    rows are mixed further by ``iter_batches``' local buffer). ``cpus``: what each of its
    tasks asks Ray for (``None``: Ray Data's default; a trial passes 0, see
    :class:`ShardStream`).
    """
    import ray
    from ray.data.expressions import col

    wanted = np.array([t in tracks for t in index.track_id], dtype=bool)
    reads: dict[tuple[str, int], dict[str, list]] = {}
    for k, (file, prefix) in enumerate(zip(index.files, index.prefixes, strict=True)):
        # Every file of one folder in one read, unless it holds copies it must not give.
        key = (prefix, k if k in index.shadowed else -1)
        reads.setdefault(key, {"files": [], "ids": []})["files"].append(file)
    for source, track in zip(index.source[wanted], index.track_id[wanted], strict=True):
        prefix = index.prefixes[source]
        key = (prefix, source if source in index.shadowed else -1)
        reads[key]["ids"].append(track[len(prefix) :])
    tasks = {} if cpus is None else {"num_cpus": cpus}
    row_bytes = sum(4 * int(np.prod(index.cfg.shape(c))) for c in columns if c != "track_id")
    parts = []
    for (prefix, _), read in reads.items():
        if not read["ids"]:
            continue
        with _first_parquet_reader():
            ds = ray.data.read_parquet(
                read["files"],
                filesystem=index.filesystem,
                shuffle=None
                if shuffle_seed is None
                else ray.data.FileShuffleConfig(seed=shuffle_seed),
                **tasks,
                **_reads_at_once(index, read["files"], row_bytes=row_bytes, cpus=cpus),
            )
        ids = col("track_id").is_in(sorted(read["ids"]))
        ds = ds.select_columns(columns).filter(expr=ids, **tasks)
        if prefix:
            ds = ds.map_batches(
                _filed_under, fn_kwargs={"prefix": prefix}, batch_format="pyarrow", **tasks
            )
        parts.append(ds)
    if not parts:
        raise ParameterError("none of the split's tracks is in the shards")
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


@contextlib.contextmanager
def _first_parquet_reader():
    """Ray Data's first Parquet reader (``use_datasource_v2 = False``) for the reads made
    here. Its default reader reads every file's footer in a pool of new actors at every
    read, a worker process each (32 unless ``RAY_DATA_PARQUET_FOOTER_NUM_ACTORS`` says
    otherwise), and a streamed trial reads every epoch. Measured alone over
    ``tests/test_tune_stream.py``: the footer actors, the listing tasks and the workers left
    idle took 57 s of CPU and the test 205 s; with this reader its footer-fetch tasks took
    11–23 s and the test 157–200 s (three runs).
    """
    from ray.data import DataContext

    context = DataContext.get_current()
    saved = context.use_datasource_v2
    context.use_datasource_v2 = False
    try:
        yield
    finally:
        context.use_datasource_v2 = saved


def _reads_at_once(index: TrackIndex, files: list[str], *, row_bytes: int, cpus: float | None):
    """Reads that ask for no CPU are not held back by the CPUs: two at a time (a trial's),
    fewer when the files make fewer read units (Ray Data warns of a cap it cannot reach)."""
    if cpus is None:
        return {}
    sources = [k for k, f in enumerate(index.files) if f in set(files)]
    rows = int(index.segments[np.isin(index.source, sources)].sum())
    return {"concurrency": int(max(1, min(2, -(-rows * row_bytes // BLOCK_BYTES))))}


def _filed_under(batch, *, prefix: str):
    """``batch`` with its track ids filed under ``prefix`` (an ``--other`` folder's)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = pc.binary_join_element_wise(pa.scalar(prefix), batch.column("track_id"), "")
    return batch.set_column(batch.schema.get_field_index("track_id"), "track_id", ids)


def _stacked(batch, features: tuple[str, ...], shapes: dict[str, tuple[int, ...]]) -> np.ndarray:
    """The ``features`` of a pyarrow batch stacked along the last axis, float32
    ``(rows, frames, bins)`` or ``(rows, dims)``, as :func:`genre.training.stack_features`."""
    arrays = [feature_array(batch.column(n), shapes[n]) for n in features]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=-1)


def _moments(batch, *, features: tuple[str, ...], shapes: dict[str, tuple[int, ...]]):
    """One batch's moments and its non-finite segments, as a one-row batch."""
    x = _stacked(batch, features, shapes)
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    tracks = batch.column("track_id").to_numpy(zero_copy_only=False)[bad]
    m = Moments.of(x[~bad])
    bins = x.shape[-1]
    return {
        "n": np.array([m.n], np.int64),
        "mean": (m.mean if m.n else np.zeros(bins)).reshape(1, bins),
        "m2": (m.m2 if m.n else np.zeros(bins)).reshape(1, bins),
        "bad": np.array([int(bad.sum())], np.int64),
        "bad_tracks": np.array([json.dumps(list(dict.fromkeys(tracks.tolist()))[:_BAD_SHOWN])]),
    }


def statistics(index: TrackIndex, planned: SearchStats) -> SearchStats:
    """``planned`` (the split, counts and shape :func:`genre.training.plan_splits` gave for
    ``index``) with the normalisation, from one streaming pass over its training segments.

    The training segments are checked finite on the way: the normalisation reads them, and
    one NaN there spreads to every weight of every trial.

    Raises
    ------
    ParameterError
        Training segments that are not finite.
    """
    features = planned.features
    train = {t for t, s in planned.assignment.items() if s == "train"}
    shapes = {n: index.cfg.shape(n) for n in features}
    _small_blocks()
    ds = split_dataset(index, train, columns=["track_id", *features])
    rows = ds.map_batches(
        _moments, fn_kwargs={"features": features, "shapes": shapes}, batch_format="pyarrow"
    ).take_all()
    total, bad, bad_tracks = Moments(), 0, []
    for row in rows:
        total = total.merge(
            Moments(n=int(row["n"]), mean=np.asarray(row["mean"]), m2=np.asarray(row["m2"]))
        )
        bad += int(row["bad"])
        bad_tracks += json.loads(str(row["bad_tracks"]))
    if bad:
        raise nonfinite_error(bad_tracks, bad)
    mean, variance = total.normalisation()
    return dataclasses.replace(planned, mean=mean, variance=variance)


def _stats_name(features: tuple[str, ...]) -> str:
    return "+".join(features) + ".json"


def save_stats(search_path: str, stats: SearchStats) -> str:
    """Write ``stats`` into the search's folder (atomically); return the file's path."""
    fs, base = store.filesystem(search_path)
    folder = f"{base}/{STATS_FOLDER}"
    fs.create_dir(folder, recursive=True)
    store.write_bytes(fs, folder, _stats_name(stats.features), stats.to_json().encode())
    return f"{search_path.rstrip('/')}/{STATS_FOLDER}/{_stats_name(stats.features)}"


def load_stats(search_path: str, features: tuple[str, ...]) -> SearchStats | None:
    """The statistics a search stored for ``features``, or ``None`` when it stored none."""
    from pyarrow import fs as pafs

    fs, base = store.filesystem(search_path)
    path = f"{base}/{STATS_FOLDER}/{_stats_name(features)}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return SearchStats.from_json(f.read().decode())


class ShardStream:
    """A search's splits for one feature set, read from the shards with Ray Data: the
    ``source`` of a :class:`genre.training.StreamedData` (see there for what it yields).

    A trial holds its shuffle buffer and a few prefetched batches, never a split. Ray Data
    schedules its tasks outside the trial's placement group, on CPUs the trials leave
    free (:func:`genre.tuning.streamed_trials_at_once` leaves one); its reads and filters
    ask for no CPU, so the trials' reads share that one CPU without queueing behind each
    other (decoding Parquet is light beside the training it feeds).

    Parameters
    ----------
    index : TrackIndex
    stats : SearchStats
        The search's statistics for the feature set (its splits and genres).
    buffer_bytes : int
        Size of the local shuffle buffer of a training epoch.
    """

    def __init__(
        self, index: TrackIndex, stats: SearchStats, *, buffer_bytes: int = SHUFFLE_BUFFER_BYTES
    ):
        self.index, self.stats, self.buffer_bytes = index, stats, buffer_bytes
        self._datasets: dict[tuple[str, bool, bool], Any] = {}
        classes = {g: k for k, g in enumerate(stats.labels)}
        self.label = {
            t: classes[g]
            for t, g in zip(index.track_id, index.genre, strict=True)
            if g is not None and t in stats.assignment
        }

    def with_stats(self, stats: SearchStats) -> ShardStream:
        """The same shards split as ``stats`` say (a refit's pooled view and its folds)."""
        return ShardStream(self.index, stats, buffer_bytes=self.buffer_bytes)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_datasets": {}}  # datasets are planned where they are read

    def _dataset(self, split: str, *, other: bool, seed: int | None):
        """The split's dataset, planned once per process and read again each epoch (Ray
        Data reshuffles the files' order at every reading when given a seed)."""
        key = (split, other, seed is not None)
        if key not in self._datasets:
            tracks = {t for t, s in self.stats.assignment.items() if s == split}
            if other:
                tracks |= {t for t, s in self.stats.other_assignment.items() if s == split}
            columns = ["track_id", *self.stats.features]
            self._datasets[key] = split_dataset(
                self.index, tracks, columns=columns, shuffle_seed=seed, cpus=0
            )
        return self._datasets[key]

    def __call__(self, split: str, *, batch_size: int, seed: int | None, other: bool):
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False  # a trial's log, not a terminal
        _small_blocks()
        _lean_arrow()
        features = self.stats.features
        shapes = {n: self.index.cfg.shape(n) for n in features}
        ds = self._dataset(split, other=other, seed=seed)
        segment_bytes = 4 * int(np.prod(self.stats.input_shape))
        buffer = max(2 * batch_size, self.buffer_bytes // segment_bytes)
        for batch in ds.iter_batches(
            batch_size=batch_size,
            batch_format="pyarrow",
            prefetch_batches=2,
            local_shuffle_buffer_size=None if seed is None else buffer,
            local_shuffle_seed=seed,
        ):
            x = _stacked(batch, features, shapes)
            track = batch.column("track_id").to_numpy(zero_copy_only=False)
            bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
            if bad.any():
                raise nonfinite_error(track[bad].tolist(), int(bad.sum()))
            yield x, np.array([self.label.get(t, -1) for t in track], np.int32), track
