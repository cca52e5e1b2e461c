"""Finding audio files, naming tracks, labels from folders, and leakage-free splits.

A corpus is any tree of audio files. A file at ``<root>/<genre>/<file>`` (exactly
one folder deep) is labelled with its folder name, unless that name starts with
``_``: such folders hold audio that belongs to no genre (``_other/``, the styles
outside the taxonomy that :func:`genre.synth.write_other` writes), listed but
unlabelled; a search trains on ``_other/`` as outlier exposure (:func:`is_other`,
:func:`genre.training.prepare`). Files anywhere else are unlabelled too (``genre`` is ``None``). A
track's id is its path relative to the root in POSIX form
(``blues/blues.00003.wav``): stable across machines and re-runs. Genre names become
column names (``p_<genre>``), so two that differ only in case are refused. Entries
that are not regular files (named pipes, devices, sockets) are skipped with a reason
before anything opens them: reading a pipe waits for a writer forever.

Splits are always by track, never by segment, so segments of one recording never
sit on both sides of a train/test boundary.
"""

from __future__ import annotations

import glob
import hashlib
import os
import stat
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit

import numpy as np

from genre.audio import AUDIO_EXTENSIONS
from genre.config import OTHER_FOLDER
from genre.errors import ParameterError, first_line
from genre.store import is_uri

__all__ = [
    "Track",
    "Listing",
    "SPLITS",
    "check_genre_names",
    "is_other",
    "list_tracks",
    "list_inputs",
    "split_tracks",
    "hash_split",
    "gtzan_filtered_split",
    "gtzan_coverage",
    "is_gtzan",
]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Track:
    """One audio file of a corpus."""

    path: str
    track_id: str
    genre: str | None


@dataclass(frozen=True)
class Listing:
    """What :func:`list_tracks` found.

    Attributes
    ----------
    tracks : list of Track
        The audio files.
    ignored : list of str
        Files whose extension is not audio.
    skipped : list of dict
        Entries with an audio extension that are not regular files (named pipes,
        devices, sockets), never opened: ``path``, ``track_id``, ``reason``
        (``unreadable``, as the decoder says of them) and ``message``, as the rows of
        an extract's errors.
    """

    tracks: list[Track]
    ignored: list[str]
    skipped: list[dict[str, str]] = field(default_factory=list)


def is_other(track_id: str) -> bool:
    """Whether a track is out-of-taxonomy audio: its id starts with ``_other/`` (the corpus's
    :data:`genre.config.OTHER_FOLDER`, or a ``--other`` folder's tracks, which
    :func:`genre.shards.with_other` files under it)."""
    return str(track_id).startswith(f"{OTHER_FOLDER}/")


def _is_hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in relative.split("/"))


_SPECIAL = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _special_kind(path: str) -> str | None:
    """What a local entry is when it is not a regular file ("a named pipe"); ``None``
    for a regular file, or one ``stat`` cannot see (a broken link surfaces later as an
    error row, with its own reason)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return next((kind for test, kind in _SPECIAL if test(mode)), None)


def check_genre_names(names: Iterable[str], *, source: str) -> None:
    """Refuse genre names that cannot each be a column of their own.

    A genre becomes the column ``p_<genre>``: an empty name gives ``p_``, and names that
    differ only in case (``Rock``, ``rock``) give columns that DuckDB, and any
    case-insensitive file system, take for one.

    Raises
    ------
    ParameterError
        Naming ``source`` and the offending names.
    """
    seen: dict[str, str] = {}
    for name in names:
        if not str(name).strip():
            raise ParameterError(f"{source}: a genre is named {name!r}: name every genre")
        other = seen.setdefault(str(name).casefold(), str(name))
        if other != name:
            raise ParameterError(
                f"{source}: genres {other!r} and {name!r} differ only in case "
                "(DuckDB reads their columns as one): rename one of them"
            )


def _walk(filesystem, base: str):
    """Relative POSIX paths of every file below ``base``.

    Locally ``os.walk`` also yields broken links and unreadable files, which must
    surface as error rows rather than vanish from the listing.
    """
    from pyarrow import fs as pafs

    if isinstance(filesystem, pafs.LocalFileSystem):
        for folder, dirs, files in os.walk(base):
            dirs.sort()
            rel = os.path.relpath(folder, base)
            for name in files:
                yield name if rel == "." else f"{rel.replace(os.sep, '/')}/{name}"
        return
    for entry in filesystem.get_file_info(pafs.FileSelector(base, recursive=True)):
        if entry.type == pafs.FileType.File:
            yield entry.path[len(base) :].lstrip("/")


def list_tracks(root: str, *, check_genres: bool = True) -> Listing:
    """List every audio file under ``root`` (local path or ``s3://``/``gs://`` URI).

    Parameters
    ----------
    root : str
        Folder to search recursively.
    check_genres : bool
        Refuse genre folders whose names differ only in case (``Rock/``, ``rock/``);
        ``False`` where the folder names are not used as labels (labelling a tree).

    Returns
    -------
    Listing
        ``tracks`` sorted by ``track_id``, each labelled with its folder's name when it
        sits exactly one folder deep in a folder whose name does not start with ``_``
        (``_other/x.wav`` and ``a/b/x.wav`` are unlabelled: ``genre=None``);
        ``ignored``: files whose extension is not audio (cover art, playlists, …);
        ``skipped``: entries with an audio extension that are not regular files.
        Hidden files and folders are skipped silently.

    Raises
    ------
    ParameterError
        ``root`` does not exist or is not a folder; genre folders differ only in case.
    """
    from pyarrow import fs as pafs

    # A URI's options (``?endpoint_override=…&scheme=http``) name the store: every path
    # listed keeps them, so a worker reading one file reaches the same store.
    options = ""
    if is_uri(root):
        filesystem, base = pafs.FileSystem.from_uri(root)
        query = urlsplit(root).query
        options = f"?{query}" if query else ""
        bare = root[: len(root) - len(options)]
        prefix = (
            bare[: len(bare) - len(base)] if bare.endswith(base) else root.split("://")[0] + "://"
        )
    else:
        filesystem, base, prefix = pafs.LocalFileSystem(), os.path.abspath(root), ""
    info = filesystem.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise ParameterError(f"input {root!r} does not exist")
    if info.type != pafs.FileType.Directory:
        raise ParameterError(f"input {root!r} is not a folder")
    base = base.rstrip("/")
    tracks, ignored, skipped = [], [], []
    for relative in _walk(filesystem, base):
        if _is_hidden(relative):
            continue
        # A URI stays a valid URI: spaces and non-ASCII names are percent-encoded.
        full = f"{prefix}{quote(f'{base}/{relative}')}{options}" if prefix else f"{base}/{relative}"
        if os.path.splitext(relative)[1].lower() not in AUDIO_EXTENSIONS:
            ignored.append(full)
            continue
        kind = None if prefix else _special_kind(full)
        if kind is not None:
            message = f"{full}: {kind}, not a file: skipped unopened"
            skipped.append(
                {"path": full, "track_id": relative, "reason": "unreadable", "message": message}
            )
            continue
        parts = PurePosixPath(relative).parts
        labelled = len(parts) == 2 and not parts[0].startswith("_")
        tracks.append(Track(path=full, track_id=relative, genre=parts[0] if labelled else None))
    tracks.sort(key=lambda t: t.track_id)
    if check_genres:
        check_genre_names((t.genre for t in tracks if t.genre is not None), source=root)
    skipped.sort(key=lambda row: row["track_id"])
    return Listing(tracks=tracks, ignored=sorted(ignored), skipped=skipped)


def _stable_unit(text: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_tracks(
    track_ids: list[str] | np.ndarray,
    genres: list[str | None] | np.ndarray,
    *,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> dict[str, str]:
    """Assign each track to ``train``, ``val`` or ``test``, stratified by genre.

    Deterministic from ``seed`` and the set of track ids (not their order). Within
    each genre the tracks are shuffled and cut by ``fractions``, rounding so that
    every split of a genre with at least three tracks gets at least one.

    Parameters
    ----------
    track_ids : sequence of str
        One entry per track (duplicates are collapsed).
    genres : sequence of str
        The genre of each entry of ``track_ids``.
    fractions : (train, val, test), each ≥ 0, summing to 1
    seed : int

    Returns
    -------
    dict
        ``track_id → split name``.
    """
    _check_fractions(fractions)
    if len(track_ids) != len(genres):
        raise ParameterError(
            f"{len(track_ids)} track ids but {len(genres)} genres: one genre per track"
        )
    by_genre: dict[str, set[str]] = defaultdict(set)
    for track_id, genre in zip(track_ids, genres, strict=True):
        if genre is None:
            raise ParameterError(f"track {track_id!r} has no genre: splits need labelled tracks")
        by_genre[str(genre)].add(str(track_id))
    assignment: dict[str, str] = {}
    for genre in sorted(by_genre):
        ids = sorted(by_genre[genre], key=lambda t: _stable_unit(t, seed))
        n = len(ids)
        n_val = int(round(fractions[1] * n))
        n_test = int(round(fractions[2] * n))
        if n >= 3:
            n_val = max(n_val, 1) if fractions[1] > 0 else 0
            n_test = max(n_test, 1) if fractions[2] > 0 else 0
        n_train = max(n - n_val - n_test, 0)
        for i, track_id in enumerate(ids):
            assignment[track_id] = (
                "train" if i < n_train else "val" if i < n_train + n_val else "test"
            )
    return assignment


def hash_split(
    track_ids: list[str] | np.ndarray,
    *,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
) -> dict[str, str]:
    """Assign each track to ``train``, ``val`` or ``test`` by its own hash alone.

    For tracks labelled after a split was drawn (:mod:`genre.corrections`): unlike
    :func:`split_tracks`, whose cuts depend on every track of a genre, a track's split
    here depends on its id and ``seed`` only, so labelling more tracks never moves one
    already placed. Not stratified: the fractions hold on average, not per genre.

    Returns
    -------
    dict
        ``track_id → split name``.
    """
    _check_fractions(fractions)
    train, val = fractions[0], fractions[0] + fractions[1]
    assignment = {}
    for track_id in map(str, track_ids):
        u = _stable_unit(track_id, seed)
        assignment[track_id] = "train" if u < train else "val" if u < val else "test"
    return assignment


def _check_fractions(fractions: tuple[float, float, float]) -> None:
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ParameterError(
            f"fractions={tuple(fractions)} must be three non-negative numbers summing to 1"
        )


def _gtzan_key(track_id: str) -> str | None:
    """``blues/blues.00003.au`` (any folder, any extension) → ``blues.00003``."""
    stem = PurePosixPath(track_id).name
    parts = stem.split(".")
    if len(parts) >= 2 and parts[1].isdigit() and len(parts[1]) == 5:
        return f"{parts[0]}.{parts[1]}"
    return None


def is_gtzan(track_ids: list[str] | np.ndarray) -> bool:
    """Whether every track id has a GTZAN file name (``<genre>.000NN.<ext>``)."""
    return len(track_ids) > 0 and all(_gtzan_key(str(t)) is not None for t in track_ids)


def _gtzan_lists() -> dict[str, str]:
    """GTZAN name (``blues.00012``) → split of the shipped artist-filtered lists."""
    names = {
        "train": "train_filtered.txt",
        "val": "valid_filtered.txt",
        "test": "test_filtered.txt",
    }
    lookup: dict[str, str] = {}
    package = resources.files("genre") / "data" / "gtzan_splits"
    for split, filename in names.items():
        for line in (package / filename).read_text().splitlines():
            key = _gtzan_key(line.strip())
            if key:
                lookup[key] = split
    return lookup


def gtzan_coverage(track_ids: list[str] | np.ndarray) -> float:
    """Share of the 930 tracks of the artist-filtered split present in ``track_ids``.

    A full GTZAN gives 1.0; a handful of clips, or a corpus that only borrows
    GTZAN-style names (the synthetic demo corpus does), gives a small share.
    """
    lookup = _gtzan_lists()
    present = {_gtzan_key(str(t)) for t in track_ids} & set(lookup)
    return len(present) / len(lookup)


def gtzan_filtered_split(track_ids: list[str] | np.ndarray) -> dict[str, str]:
    """The published artist-filtered GTZAN split (Kereliuk, Sturm & Larsen 2015).

    Tracks are matched by GTZAN name (``blues.00012``) whatever their folder or
    extension. Tracks the split leaves out (duplicates, distortions) are not in
    the returned mapping.

    Returns
    -------
    dict
        ``track_id → "train" | "val" | "test"``.

    Raises
    ------
    ParameterError
        No track has a name the lists know.
    """
    lookup = _gtzan_lists()
    assignment = {}
    for track_id in track_ids:
        key = _gtzan_key(str(track_id))
        if key in lookup:
            assignment[str(track_id)] = lookup[key]
    if not assignment:
        raise ParameterError(
            "no track matches the GTZAN artist-filtered split (names like blues.00012.wav)"
        )
    return assignment


def list_inputs(source: str) -> tuple[list[dict[str, str]], str]:
    """Expand INPUT into ``[{path, track_id}]``; return them and the kind of input.

    INPUT may be a folder (searched recursively), a glob, or a ``.txt``/``.csv``/
    ``.parquet`` file listing paths (column ``path``, or the first column). A list's
    relative paths are relative to the list's folder; paths that name one file
    (``x``, ``./x``, ``d/../x``, a link to ``x``) give one item, under the first
    spelling. A folder's entries that are not regular files are kept, for the decoder
    to turn into error rows without opening them.

    Raises
    ------
    ParameterError
        INPUT does not exist, or is a list that cannot be read or names no file.
    """

    def item(path: str, track_id: str) -> dict[str, str]:
        return {"path": path, "track_id": track_id}

    if os.path.isdir(source) or is_uri(source):
        listing = list_tracks(source, check_genres=False)
        found = [item(t.path, t.track_id) for t in listing.tracks]
        found += [item(row["path"], row["track_id"]) for row in listing.skipped]
        return sorted(found, key=lambda it: it["track_id"]), "folder"
    if any(ch in source for ch in "*?["):
        paths = sorted(
            p for p in glob.glob(source, recursive=True) if os.path.isfile(p) or os.path.islink(p)
        )
        if not paths:
            raise ParameterError(f"input glob {source!r} matches no file")
        return [item(os.path.abspath(p), p) for p in paths], "glob"
    if not os.path.exists(source):
        raise ParameterError(f"input {source!r} does not exist")
    ext = os.path.splitext(source)[1].lower()
    if ext in AUDIO_EXTENSIONS:
        return [item(os.path.abspath(source), os.path.basename(source))], "file"
    paths = _read_list(source, ext=ext)
    base = os.path.dirname(os.path.abspath(source))
    items, seen = [], set()
    for path in paths:
        full = path if os.path.isabs(path) or is_uri(path) else os.path.join(base, path)
        # One file, one item: the same file named twice would be labelled twice.
        key = full if is_uri(full) else os.path.realpath(full)
        if key not in seen:
            seen.add(key)
            items.append(item(full, full))
    return items, "list"


def _read_list(source: str, *, ext: str) -> list[str]:
    """The paths a ``.txt``/``.csv``/``.parquet`` list names (blank lines, ``#``
    comments and empty cells left out).

    Raises
    ------
    ParameterError
        Another extension, a file that does not parse as its extension says, a path
        holding a NUL byte, or no path at all.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if ext not in (".txt", ".lst", ".m3u", ".csv", ".parquet"):
        raise ParameterError(
            f"input {source!r} is not a folder, glob, audio file or .txt/.csv/.parquet list"
        )
    try:
        if ext == ".csv":
            import pandas as pd

            frame = pd.read_csv(source, dtype=str, keep_default_na=False)
            column = frame["path" if "path" in frame.columns else frame.columns[0]]
            paths = [p.strip() for p in column.tolist()]
        elif ext == ".parquet":
            table = pq.read_table(source)
            column = table.column("path" if "path" in table.column_names else 0)
            paths = [str(p).strip() for p in column.to_pylist() if p is not None]
        else:
            lines = [line.strip() for line in Path(source).read_text().splitlines()]
            paths = [line for line in lines if not line.startswith("#")]
    except UnicodeDecodeError as exc:
        raise ParameterError(
            f"input list {source!r} is not UTF-8 text ({exc.reason} at byte {exc.start}): "
            "give one path per line"
        ) from exc
    except (ValueError, IndexError, KeyError, OSError, pa.ArrowException) as exc:
        # pandas' EmptyDataError and ParserError are ValueErrors; ArrowInvalid too.
        raise ParameterError(
            f"input list {source!r} cannot be read as {ext} ({first_line(exc)})"
        ) from exc
    paths = [p for p in paths if p]
    bad = next((p for p in paths if "\x00" in p), None)
    if bad is not None:
        raise ParameterError(
            f"input list {source!r} holds a path with a NUL byte ({bad[:40]!r}…): "
            "is it a list of paths?"
        )
    if not paths:
        raise ParameterError(f"input list {source!r} names no file: give one path per line")
    return paths
