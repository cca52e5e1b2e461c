"""Segment shards: the Parquet data set written by extract and read by tune.

Layout of an output folder::

    OUTPUT/
      part-<16 hex>.parquet   one per batch of tracks, one row per segment
      _manifest.json          feature config, its hash, the shard list and counts
      _errors.parquet         files the latest run could not extract, with reasons
      _lock                   present while a run writes (one writer at a time)
      _attempts/              files whose decoding killed a worker (the crash journal)

Each shard has the columns ``track_id``, ``path``, ``genre`` (null when
unlabelled), ``segment``, ``start_s``, ``duration_s`` and one column per feature:
a ``fixed_size_list<float32>[frames * bins]`` (or ``[dims]`` for a pretrained
embedding, pooled features or tag probabilities) whose shape is stored in the schema
metadata (``genre.shape.<feature>`` = ``[frames, bins]`` or ``[dims]``) beside the
feature config (``genre.feature_config``, JSON) and its hash
(``genre.feature_config_hash``); a tag column's vocabulary, in column order, is
``genre.tags.<feature>`` (a JSON list). Plain pyarrow, pandas and DuckDB read them;
nothing here needs Ray.

A shard is written to a temporary name and renamed into place, and its name is a
hash of the tracks it holds. The shard files are the truth: the manifest is rebuilt
from them, so a killed job leaves no half shard and a re-run skips exactly the
tracks already present. A shard that cannot be read (truncated when a disk filled,
half copied) is skipped with a warning naming it: its tracks count as not extracted,
so the next extract run redoes them, and tune trains on the rest.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from genre import store
from genre.config import OTHER_FOLDER, FeatureConfig
from genre.corpus import Track
from genre.errors import ConfigMismatchError, GenreError, ParameterError, first_line
from genre.pretrained import TAGS

__all__ = [
    "MANIFEST",
    "ERRORS",
    "SegmentSet",
    "OTHER_MOUNT",
    "with_other",
    "segment_schema",
    "segments_table",
    "write_shard",
    "ShardStore",
    "read_config",
    "common_config",
    "read_segments",
    "TrackIndex",
    "track_index",
    "feature_array",
]

MANIFEST = "_manifest.json"
ERRORS = "_errors.parquet"
_FORMAT = "genre.segments/1"
_KEYS = ["track_id", "segment"]
#: How a warning about an unreadable shard ends: what the user does about it.
_REDO = "its tracks count as not extracted: delete it, then re-run extract to redo them"


def segment_schema(cfg: FeatureConfig) -> pa.Schema:
    """Arrow schema of a segment shard for ``cfg`` (metadata included)."""
    fields = [
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("genre", pa.string()),
        pa.field("segment", pa.int32(), nullable=False),
        pa.field("start_s", pa.float32(), nullable=False),
        pa.field("duration_s", pa.float32(), nullable=False),
    ]
    metadata = {
        "genre.format": _FORMAT,
        "genre.feature_config": cfg.to_json(),
        "genre.feature_config_hash": cfg.hash(),
    }
    for name in cfg.features:
        shape = cfg.shape(name)
        fields.append(pa.field(name, pa.list_(pa.float32(), math.prod(shape)), nullable=False))
        metadata[f"genre.shape.{name}"] = json.dumps(list(shape))
        if name.endswith("_tags"):
            metadata[f"genre.tags.{name}"] = json.dumps(list(TAGS[name[: -len("_tags")]]))
    return pa.schema(fields, metadata=metadata)


def segments_table(
    *,
    track_id: np.ndarray,
    path: np.ndarray,
    genre: np.ndarray,
    segment: np.ndarray,
    start_s: np.ndarray,
    duration_s: np.ndarray,
    features: Mapping[str, np.ndarray],
    cfg: FeatureConfig,
) -> pa.Table:
    """Build a shard table from per-row arrays.

    ``features[name]`` has shape ``(rows, *cfg.shape(name))``: ``(rows, frames, bins)``,
    or ``(rows, dims)`` for a vector feature.
    """
    schema = segment_schema(cfg)
    columns: list[pa.Array] = [
        pa.array(track_id, pa.string()),
        pa.array(path, pa.string()),
        pa.array([None if g is None or g != g else g for g in genre], pa.string()),
        pa.array(segment, pa.int32()),
        pa.array(start_s, pa.float32()),
        pa.array(duration_s, pa.float32()),
    ]
    for name in cfg.features:
        values = np.ascontiguousarray(features[name], dtype=np.float32)
        if values.shape[1:] != cfg.shape(name):
            raise ParameterError(
                f"feature {name} has shape {values.shape[1:]}, config says {cfg.shape(name)}"
            )
        flat = pa.array(values.reshape(-1), pa.float32())
        columns.append(pa.FixedSizeListArray.from_arrays(flat, math.prod(values.shape[1:])))
    return pa.Table.from_arrays(columns, schema=schema)


def _shard_name(track_ids: Iterable[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(set(track_ids))).encode()).hexdigest()[:16]
    return f"{store.PART_PREFIX}{digest}.parquet"


def write_shard(root: str, table: pa.Table) -> str:
    """Write ``table`` under ``root`` atomically; return the shard's file name."""
    filesystem, base = store.filesystem(root)
    name = _shard_name(table.column("track_id").to_pylist())
    store.write_table(filesystem, base, name, table)
    return name


def read_config(root: str) -> FeatureConfig | None:
    """The feature config of the shards under ``root``, or ``None`` when there are none.

    Read from ``_manifest.json``; from the first readable shard when the manifest is
    missing or does not parse (with a warning: extract rebuilds it from the shards).

    Raises
    ------
    ParameterError
        ``root`` holds labels, or Parquet files genre did not write, not shards.
    """
    filesystem, base = store.filesystem(root)
    store.check_kind(
        filesystem,
        base,
        root=root,
        expected=_FORMAT,
        role="shards",
        hint="give the output folder of the extract job",
    )
    manifest = f"{base}/{MANIFEST}"
    if filesystem.get_file_info(manifest).type == pafs.FileType.File:
        try:
            with filesystem.open_input_stream(manifest) as f:
                return FeatureConfig.from_dict(json.loads(f.read())["feature_config"])
        except (OSError, ValueError, KeyError, TypeError, GenreError) as exc:
            # The manifest only repeats what every shard's metadata holds.
            warnings.warn(
                f"ignored {manifest}: not a shards manifest ({first_line(exc)}); "
                "re-run extract to rebuild it from the shards",
                stacklevel=2,
            )
    for shard in store.list_parts(filesystem, base):
        schema = store.read_part_schema(filesystem, shard, redo=None)
        if schema is not None:
            return FeatureConfig.from_json(schema.metadata[b"genre.feature_config"].decode())
    return None


class ShardStore:
    """An output folder of shards for one feature config.

    Opening a store creates the folder, refuses one that holds shards of another
    config, and removes temporary files a killed run left behind: open it only while
    holding the folder's :class:`genre.store.FolderLock`.

    Parameters
    ----------
    root : str
        Local folder or object-store URI.
    cfg : FeatureConfig

    Raises
    ------
    ParameterError
        ``root`` is an existing file, or holds labels (or Parquet files genre did not
        write) rather than shards.
    ConfigMismatchError
        ``root`` holds shards extracted with other settings.
    """

    def __init__(self, root: str, cfg: FeatureConfig):
        self.root = str(root)
        self.cfg = cfg
        self._fs, self._base = store.filesystem(self.root)
        info = self._fs.get_file_info(self._base)
        if info.type == pafs.FileType.File:
            raise ParameterError(f"output {self.root!r} is a file, not a folder")
        self._fs.create_dir(self._base, recursive=True)
        store.check_kind(
            self._fs,
            self._base,
            root=self.root,
            expected=_FORMAT,
            role="output",
            hint="choose another output folder for extract",
        )
        existing = read_config(self.root)
        if existing is not None and existing.hash() != cfg.hash():
            raise ConfigMismatchError(
                f"output {self.root!r} holds shards with feature config {existing.hash()} "
                f"(features={','.join(existing.features)}), this run asks for {cfg.hash()} "
                f"(features={','.join(cfg.features)}): choose a new output folder"
            )
        store.remove_temporaries(self._fs, self._base)

    def shard_files(self) -> list[str]:
        return store.list_parts(self._fs, self._base)

    def done_track_ids(self, *, tracks: Iterable[Track] | None = None) -> set[str]:
        """Track ids already present in a readable shard.

        A shard that cannot be read is skipped with a warning naming it: its tracks are
        not done, so this run extracts them again.

        Parameters
        ----------
        tracks : iterable of Track, optional
            The collection about to be extracted. A track id is a path relative to its
            collection's root, so another collection with the same layout would have its
            tracks skipped as done: such a collection is refused instead.

        Raises
        ------
        ParameterError
            A track of ``tracks`` has the id of a track of another collection (another
            file) already in the folder.
        """
        columns = ["track_id"] if tracks is None else ["track_id", "path"]
        table, _ = store.read_parts(self._fs, self.shard_files(), columns=columns, redo=_REDO)
        if table is None:
            return set()
        if tracks is not None:
            _check_one_collection(table, tracks, root=self.root)
        return set(table.column("track_id").unique().to_pylist())

    def write_manifest(self) -> dict[str, Any]:
        """Rebuild ``_manifest.json`` from the shards present; return it."""
        shards, seen = [], set()
        for path in self.shard_files():
            keys, _ = store.read_parts(self._fs, [path], columns=_KEYS, redo=_REDO)
            if keys is None:
                continue  # not counted: its tracks are not done
            ids = keys.column("track_id")
            pairs = set(zip(ids.to_pylist(), keys.column("segment").to_pylist(), strict=True))
            new = pairs - seen  # a segment counts once, whichever shards repeat it
            seen |= pairs
            shards.append(
                {"file": path.rsplit("/", 1)[-1], "tracks": len(ids.unique()), "segments": len(new)}
            )
        manifest = {
            "format": _FORMAT,
            "feature_config": self.cfg.to_dict(),
            "feature_config_hash": self.cfg.hash(),
            "shapes": {name: list(self.cfg.shape(name)) for name in self.cfg.features},
            "tracks": len({track for track, _ in seen}),
            "segments": len(seen),
            "shards": shards,
            "updated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        self._write_bytes(MANIFEST, json.dumps(manifest, indent=1).encode())
        return manifest

    def write_errors(self, rows: list[dict[str, str]]) -> str:
        """Replace ``_errors.parquet`` with this run's failures and warnings (``path,
        track_id, reason, message, severity``): ``severity`` is ``error`` for a skipped
        file, ``warning`` for one extracted from less than its header promised (``reason``
        is then the warning's kind)."""
        rows = [{"severity": "error", **r} for r in rows]
        table = pa.table(
            {
                key: pa.array([r[key] for r in rows], pa.string())
                for key in ("path", "track_id", "reason", "message", "severity")
            }
        )
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self._write_bytes(ERRORS, sink.getvalue().to_pybytes())
        return f"{self.root.rstrip('/')}/{ERRORS}"

    def _write_bytes(self, name: str, data: bytes) -> None:
        store.write_bytes(self._fs, self._base, name, data)


def _same_file(a: str, b: str) -> bool:
    """Whether two spellings of a path name one file (a collection reached through a
    symlink, say); URIs only when equal."""
    if a == b:
        return True
    return not store.is_uri(a) and os.path.realpath(a) == os.path.realpath(b)


def _check_one_collection(table: pa.Table, tracks: Iterable[Track], *, root: str) -> None:
    """Refuse ``tracks`` whose ids the shards in ``table`` (``track_id``, ``path``) hold
    for other files."""
    pairs = table.group_by(["track_id", "path"], use_threads=False).aggregate([])
    ids, paths = pairs.column("track_id").to_pylist(), pairs.column("path").to_pylist()
    held = dict(zip(ids, paths, strict=True))
    clashes = [
        (t.track_id, held[t.track_id], t.path)
        for t in tracks
        if t.track_id in held and not _same_file(held[t.track_id], t.path)
    ]
    if not clashes:
        return
    track_id, theirs, ours = clashes[0]
    collection = theirs[: -len(track_id) - 1] if theirs.endswith(f"/{track_id}") else theirs
    raise ParameterError(
        f"output {root!r} holds the collection {collection}, and {len(clashes)} track(s) "
        f"of this one have the same names (e.g. {track_id}: {ours}): "
        "extract this collection into another output folder"
    )


@dataclass(frozen=True)
class SegmentSet:
    """Segments read back from shards, as numpy arrays (one entry per segment).

    Attributes
    ----------
    track_id, path, genre : np.ndarray [shape=(n,), dtype=object]
    segment : np.ndarray [shape=(n,), dtype=int32]
    features : dict[str, np.ndarray]
        ``name → (n, frames, bins)`` float32, or ``(n, dims)`` for a vector feature.
    cfg : FeatureConfig
    duplicates : int
        Rows dropped on read because another shard held the same segment.
    shard_genre : np.ndarray [shape=(n,), dtype=object] or None
        The shards' own genres when ``genre`` holds corrected labels
        (:func:`genre.corrections.apply_corrections`): the split is drawn from these, so a
        correction moves no track between train, validation and test. ``None``: not
        corrected, ``genre`` is the shards'.
    """

    track_id: np.ndarray
    path: np.ndarray
    genre: np.ndarray
    segment: np.ndarray
    features: dict[str, np.ndarray]
    cfg: FeatureConfig
    duplicates: int = 0
    shard_genre: np.ndarray | None = None

    @property
    def folder_genre(self) -> np.ndarray:
        """The genres the shards hold, before any correction (``shard_genre`` or ``genre``)."""
        return self.genre if self.shard_genre is None else self.shard_genre

    def __len__(self) -> int:
        return len(self.track_id)


def feature_array(column: pa.ChunkedArray | pa.Array, shape: tuple[int, ...]) -> np.ndarray:
    """A fixed-size-list column as a ``(rows, *shape)`` float32 array (``shape`` is
    ``(frames, bins)``, or ``(dims,)`` for a vector feature)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.astype(np.float32, copy=False).reshape(len(column), *shape)


def _folder_files(root: str) -> tuple[FeatureConfig, list[str]]:
    """The feature config of the shards under ``root`` and its readable shard files, each
    checked to hold that config.

    Raises
    ------
    ParameterError
        No (readable) shards under ``root``, or a folder of labels rather than shards.
    ConfigMismatchError
        A shard was extracted with other settings than the folder's manifest says.
    """
    cfg = read_config(root)
    filesystem, base = store.filesystem(root)
    files = store.list_parts(filesystem, base)
    if not files:
        raise ParameterError(f"no segment shards under {root!r}: run the extract job first")
    schemas = {f: store.read_part_schema(filesystem, f, redo=_REDO) for f in files}
    files = [f for f, schema in schemas.items() if schema is not None]
    if cfg is None or not files:
        raise ParameterError(
            f"no readable shard under {root!r}: delete the damaged ones and re-run extract"
        )
    for file in files:
        metadata = schemas[file].metadata or {}
        found = metadata.get(b"genre.feature_config_hash", b"(none)").decode()
        if found != cfg.hash():
            raise ConfigMismatchError(
                f"shard {file.rsplit('/', 1)[-1]} under {root!r} has feature config {found}, "
                f"the folder's is {cfg.hash()}: keep shards of one extract config per folder"
            )
    return cfg, files


def common_config(roots: str | Sequence[str]) -> FeatureConfig | None:
    """The one feature config of the shards under ``roots`` (``None`` when none holds any).

    A collection extracted in parts (on several machines, into several folders) is one
    collection only when every part was extracted with the same settings: the segments
    of a 3 s and a 4 s extract, or of two sample rates, cannot train one model.

    Raises
    ------
    ParameterError
        A folder of labels rather than shards.
    ConfigMismatchError
        Two folders hold shards of different feature configs.
    """
    roots = (roots,) if isinstance(roots, str) else tuple(roots)
    found = [(root, read_config(root)) for root in roots]
    found = [(root, cfg) for root, cfg in found if cfg is not None]
    for root, cfg in found[1:]:
        first, theirs = found[0]
        if cfg.hash() != theirs.hash():
            raise ConfigMismatchError(
                f"shards under {root!r} have feature config {cfg.hash()} "
                f"(features={','.join(cfg.features)}), those under {first!r} "
                f"{theirs.hash()} (features={','.join(theirs.features)}): give folders "
                "extracted with the same settings"
            )
    return found[0][1] if found else None


def read_segments(
    root: str | Sequence[str], *, features: Iterable[str] | None = None
) -> SegmentSet:
    """Read every segment under ``root`` (only the ``features`` asked for), once each.

    ``root`` may be several folders of one feature config (a collection extracted in
    parts): their segments are read as one set. A segment (``track_id``, ``segment``)
    held by more than one shard, in one folder or across folders, is read once (from the
    first folder given, then the first shard in name order), with a warning;
    ``SegmentSet.duplicates`` says how many rows were dropped. A shard that cannot be
    read is skipped with a warning naming it.

    Raises
    ------
    ParameterError
        No (readable) shards under a folder, a folder of labels rather than shards, or
        a feature that was not extracted.
    ConfigMismatchError
        A shard was extracted with other settings than its folder's manifest says (for
        example shards of two extract runs copied into one folder), or two folders hold
        shards of different feature configs.
    """
    roots = (root,) if isinstance(root, str) else tuple(root)
    common_config(roots)  # one config across the folders, checked before any is read
    where = ", ".join(repr(r) for r in roots)
    names = None
    tables = []
    for folder in roots:
        cfg, files = _folder_files(folder)
        names = tuple(features) if features is not None else cfg.features
        missing = [n for n in names if n not in cfg.features]
        if missing:
            raise ParameterError(
                f"feature(s) {','.join(missing)} not in the shards under {folder!r} "
                f"(they hold {','.join(cfg.features)})"
            )
        filesystem, _ = store.filesystem(folder)
        table, _ = store.read_parts(
            filesystem, files, columns=["track_id", "path", "genre", "segment", *names], redo=_REDO
        )
        if table is None:
            raise ParameterError(f"no readable shard under {folder!r}: re-run the extract job")
        tables.append(table)
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    table, duplicates = store.drop_duplicates(table, keys=_KEYS, what="segments", where=where)
    table = table.sort_by([("track_id", "ascending"), ("segment", "ascending")])
    if len(table) == 0:
        raise ParameterError(f"the shards under {where} hold no segments")
    return SegmentSet(
        track_id=np.asarray(table.column("track_id").to_pylist(), dtype=object),
        path=np.asarray(table.column("path").to_pylist(), dtype=object),
        genre=np.asarray(table.column("genre").to_pylist(), dtype=object),
        segment=table.column("segment").to_numpy().astype(np.int32),
        features={n: feature_array(table.column(n), cfg.shape(n)) for n in names},
        cfg=cfg,
        duplicates=duplicates,
    )


@dataclass(frozen=True)
class TrackIndex:
    """Every track of one or more shard folders, without its features: what a search
    needs to split, count and stream a collection that does not fit in memory.

    Attributes
    ----------
    track_id, genre : np.ndarray [shape=(tracks,), dtype=object]
        Sorted by track id; ``genre`` is ``None`` for an unlabelled track. Tracks of
        an ``other`` folder are filed under :data:`OTHER_MOUNT` without a genre, as
        :func:`with_other` files them.
    segments : np.ndarray [shape=(tracks,), dtype=int64]
    source : np.ndarray [shape=(tracks,), dtype=int64]
        Index into ``files`` of the shard each track is read from.
    files : list of str
        The readable shard files, in the order the folders were given (each folder's
        in name order), as paths of ``filesystem``.
    prefixes : list of str
        Per file: what its track ids are filed under (``""``, or ``OTHER_MOUNT + "/"``).
    filesystem : pyarrow.fs.FileSystem
    cfg : FeatureConfig
    duplicates : int
        Segments ignored because an earlier shard held their track.
    shadowed : frozenset of int
        The files (indices into ``files``) that hold such ignored copies.
    """

    track_id: np.ndarray
    genre: np.ndarray
    segments: np.ndarray
    source: np.ndarray
    files: list[str]
    prefixes: list[str]
    filesystem: Any
    cfg: FeatureConfig
    duplicates: int = 0
    shadowed: frozenset[int] = frozenset()

    def __len__(self) -> int:
        return len(self.track_id)


def track_index(roots: str | Sequence[str], *, other: str | None = None) -> TrackIndex:
    """The tracks of ``roots`` (and of ``other``, as out-of-taxonomy audio), read from the
    shards' id columns only: a few bytes per segment, whatever the features weigh.

    A track is read from the first shard that holds it (folders in the order given, each
    folder's shards in name order), as :func:`read_segments` keeps the first copy of a
    segment: extract writes a track's segments into one shard, so the two agree.

    Raises
    ------
    ParameterError, ConfigMismatchError
        As :func:`read_segments`; ``other`` as :func:`with_other`.
    """
    roots = (roots,) if isinstance(roots, str) else tuple(roots)
    cfg = common_config(roots)
    if cfg is None:
        raise ParameterError(f"no segment shards under {roots[0]!r}: run the extract job first")
    groups = [(root, "") for root in roots]
    if other is not None:
        other_cfg = read_config(other)
        if other_cfg is None:
            raise ParameterError(
                f"--other {other!r} holds no segment shards: run the extract job on it"
            )
        missing = [n for n in cfg.features if n not in other_cfg.features]
        if missing:
            raise ParameterError(
                f"--other {other!r} lacks {','.join(missing)}: extract it with the same "
                f"--features as the training shards ({','.join(cfg.features)})"
            )
        if other_cfg.with_features(cfg.features) != cfg:
            raise ConfigMismatchError(
                f"--other {other!r} was extracted with other settings than the training "
                f"shards (feature config {other_cfg.with_features(cfg.features).hash()}, "
                f"theirs {cfg.hash()}): extract it with the same flags"
            )
        groups.append((other, f"{OTHER_MOUNT}/"))
    files: list[str] = []
    prefixes: list[str] = []
    seen: dict[str, tuple[str | None, int, int]] = {}
    duplicates, shadowed = 0, set()
    filesystem = None
    for root, prefix in groups:
        _, found = _folder_files(root)
        folder_fs = store.filesystem(root)[0]
        filesystem = filesystem or folder_fs
        if type(folder_fs) is not type(filesystem):
            raise ParameterError(
                f"shards folder {root!r} is on another filesystem than {roots[0]!r}: a "
                "search streams from one (copy the folders to one place)"
            )
        for file in found:
            columns = ["track_id", "genre"]
            table, _ = store.read_parts(folder_fs, [file], columns=columns, redo=_REDO)
            if table is None:
                continue
            files.append(file)
            prefixes.append(prefix)
            counted = table.group_by(["track_id", "genre"], use_threads=False).aggregate(
                [([], "count_all")]
            )
            for track, genre, n in zip(
                counted.column("track_id").to_pylist(),
                counted.column("genre").to_pylist(),
                counted.column("count_all").to_pylist(),
                strict=True,
            ):
                key = prefix + track
                if key in seen:
                    duplicates += n
                    shadowed.add(len(files) - 1)
                    continue
                seen[key] = (None if prefix else genre, int(n), len(files) - 1)
    if duplicates:
        warnings.warn(
            f"{duplicates} duplicate segments under {', '.join(repr(r) for r, _ in groups)} "
            "ignored (the same track_id, segment in more than one part)",
            stacklevel=2,
        )
    order = sorted(seen)
    return TrackIndex(
        track_id=np.array(order, dtype=object),
        genre=np.array([seen[t][0] for t in order], dtype=object),
        segments=np.array([seen[t][1] for t in order], dtype=np.int64),
        source=np.array([seen[t][2] for t in order], dtype=np.int64),
        files=files,
        prefixes=prefixes,
        filesystem=filesystem,
        cfg=cfg,
        duplicates=duplicates,
        shadowed=frozenset(shadowed),
    )


#: Where :func:`with_other` files a ``--other`` folder's tracks: under ``_other/``, so they
#: are out-of-taxonomy tracks like the corpus's own, and apart from them.
OTHER_MOUNT = f"{OTHER_FOLDER}/--other"


def with_other(segments: SegmentSet, root: str) -> SegmentSet:
    """``segments`` plus every segment of the shards under ``root`` as out-of-taxonomy audio.

    Each of ``root``'s tracks becomes ``_other/--other/<its track id>`` (:data:`OTHER_MOUNT`)
    with no genre, whatever folder it was extracted from: outlier exposure for a search
    (:func:`genre.training.prepare`). Its blend and out-of-taxonomy figures read the same
    columns as the corpus's, so ``root`` must hold them, extracted with the same settings.

    Raises
    ------
    ParameterError
        ``root`` holds no shards, or lacks a feature of ``segments``.
    ConfigMismatchError
        ``root`` was extracted with other settings (sample rate, segment length, …).
    """
    names = tuple(segments.features)
    cfg = read_config(root)
    if cfg is None:
        raise ParameterError(f"--other {root!r} holds no segment shards: run the extract job on it")
    missing = [n for n in names if n not in cfg.features]
    if missing:
        raise ParameterError(
            f"--other {root!r} lacks {','.join(missing)}: extract it with the same --features "
            f"as the training shards ({','.join(segments.cfg.features)})"
        )
    if cfg.with_features(names) != segments.cfg.with_features(names):
        raise ConfigMismatchError(
            f"--other {root!r} was extracted with other settings than the training shards "
            f"(feature config {cfg.with_features(names).hash()}, theirs "
            f"{segments.cfg.with_features(names).hash()}): extract it with the same flags"
        )
    other = read_segments(root, features=names)
    track_id = np.concatenate(
        [segments.track_id, np.array([f"{OTHER_MOUNT}/{t}" for t in other.track_id], object)]
    )
    segment = np.concatenate([segments.segment, other.segment])
    order = np.lexsort((segment, track_id.astype(str)))  # as read_segments: track, segment

    def unlabelled_added(genre: np.ndarray | None) -> np.ndarray | None:
        none = np.full(len(other), None, dtype=object)
        return None if genre is None else np.concatenate([genre, none])[order]

    return SegmentSet(
        track_id=track_id[order],
        path=np.concatenate([segments.path, other.path])[order],
        genre=unlabelled_added(segments.genre),
        segment=segment[order],
        features={
            n: np.concatenate([segments.features[n], other.features[n]])[order] for n in names
        },
        cfg=segments.cfg,
        duplicates=segments.duplicates + other.duplicates,
        shard_genre=unlabelled_added(segments.shard_genre),
    )
