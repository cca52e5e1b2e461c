"""Corrected labels: the review page's ``corrections.csv`` taken back as training labels.

A labelling run's review page (:mod:`genre.review_page`) lets a person pick the genre
they hear for a flagged track and download the picks as ``corrections.csv``: a header
``path,genre`` and one row per corrected track, ``path`` as the results table has it.
``jobs.tune SHARDS --labels corrections.csv`` (the flag may be repeated) reads them with
:func:`read_corrections` and puts them over the shards' folder labels with
:func:`apply_corrections`, before the search splits the tracks.

What a row does, decided here once:

- **Matching a row to a track.** The results' ``path`` is the path label was given (an
  absolute path, or a URI), the shards' is the path extract read; the two agree when both
  jobs read the same collection, and differ when it moved or was mounted elsewhere in
  between. A row matches, in order: a shard path equal to it; a shard path equal to its
  absolute, normalised spelling (local paths); the track whose id (its path relative to
  the collection's root, ``blues/blues.00012.wav``) is the longest tail of it. A row that
  matches no track (a file of another collection, one never extracted) is a counted skip
  with an example in the summary, not an error: the rest of the file still counts.
- **Genres.** A correction names one of the genres the shards' folders name (the page's
  picker offers exactly the model's genres, which came from there): any other name is most
  likely a typo, and the job refuses it with one line rather than train an eleventh class
  on one track. When the shards name no genre at all (an unlabelled collection labelled
  by corrections alone) the corrections define the genres. There is no "none of these":
  the page cannot write it; audio that is none of the genres goes under ``_other/`` or in
  ``--other`` shards.
- **Relabel or add.** A correction replaces a track's folder genre (relabelled), or labels
  a track the shards left unlabelled (added): a file outside any genre folder, or an
  ``_other/`` track, which then trains as that genre instead of as outlier exposure. One
  that repeats the folder's genre is counted as confirmed.
- **Several files.** Read in the order given; a later row wins over an earlier one for
  the same track, within a file and across files, so a newer review's file goes last.

The tracks keep their splits whatever their new labels (:func:`genre.training.prepare`
splits by the shards' own labels when corrections are applied), so a corrected test
track is never trained on. The model card records each file's SHA-256 and what it did
(:class:`LabelCorrections`), and the search's name includes the files' hashes
(:meth:`genre.config.SearchSettings.search_name`): a re-run with other corrections is
another search, never a resume of trials trained on other labels.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from genre.corpus import check_genre_names
from genre.errors import ParameterError
from genre.shards import SegmentSet
from genre.store import is_uri

__all__ = [
    "COLUMNS",
    "Correction",
    "CorrectionsFile",
    "LabelCorrections",
    "read_corrections",
    "apply_corrections",
]

#: The columns a corrections file must have (others are ignored).
COLUMNS = ("path", "genre")
#: Unmatched rows named in the summary, as examples.
_EXAMPLES = 3


@dataclass(frozen=True)
class Correction:
    """One row: the genre a person gave the file at ``path``; ``source`` (``FILE:LINE``)
    names the row in messages, ``file`` is its file's place among the ``--labels``."""

    path: str
    genre: str
    source: str
    file: int = 0


@dataclass(frozen=True)
class CorrectionsFile:
    """One ``--labels`` file as the card records it.

    Attributes
    ----------
    path : str
        As given on the command line.
    sha256 : str
        Of its bytes: what the search trained on, whatever happens to the file later.
    rows : int
        Corrections in it.
    applied : int
        Tracks whose training label it gave (rows that matched a track and that no later
        row overrode); 0 until :func:`apply_corrections`.
    """

    path: str
    sha256: str
    rows: int
    applied: int = 0


@dataclass(frozen=True)
class LabelCorrections:
    """What the ``--labels`` files did to a search's labels (the card's ``corrections``).

    Attributes
    ----------
    files : tuple of CorrectionsFile
        In the order given (later files win).
    relabelled, added, confirmed : int
        Tracks whose folder genre a correction changed; tracks without one that a
        correction labelled; tracks whose correction repeats their folder genre.
    unmatched : int
        Rows that matched no track of the shards (skipped).
    unmatched_examples : tuple of str
        A few of their paths.
    """

    files: tuple[CorrectionsFile, ...]
    relabelled: int = 0
    added: int = 0
    confirmed: int = 0
    unmatched: int = 0
    unmatched_examples: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        files = tuple(CorrectionsFile(**f) if isinstance(f, Mapping) else f for f in self.files)
        object.__setattr__(self, "files", files)
        object.__setattr__(self, "unmatched_examples", tuple(self.unmatched_examples))

    @property
    def labels(self) -> int:
        """Tracks whose training label came from a correction."""
        return self.relabelled + self.added + self.confirmed

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LabelCorrections:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def format(self) -> str:
        """The tune summary's line: ``labels: N from corrections (files …): …``."""
        names = ", ".join(
            f"{os.path.basename(f.path)} sha256 {f.sha256[:12]}… ({f.applied} of {f.rows} rows)"
            for f in self.files
        )
        line = (
            f"labels: {self.labels} from corrections (files {names}): {self.relabelled} "
            f"relabelled, {self.added} added to unlabelled tracks, {self.confirmed} as "
            "the folder said"
        )
        if self.unmatched:
            line += (
                f"; {self.unmatched} row(s) matched no track in the shards and were skipped "
                f"(e.g. {', '.join(self.unmatched_examples)})"
            )
        return line


def read_corrections(
    paths: Iterable[str],
) -> tuple[list[Correction], tuple[CorrectionsFile, ...]]:
    """Read ``--labels`` files: every row in order (later ones win), and each file's record.

    Parameters
    ----------
    paths : iterable of str
        Local CSV files with a header holding ``path`` and ``genre`` (UTF-8, a BOM
        allowed: spreadsheets write one); blank lines are skipped.

    Returns
    -------
    rows : list of Correction
    files : tuple of CorrectionsFile

    Raises
    ------
    ParameterError
        A file missing or unreadable, not UTF-8 text, not CSV, without the ``path`` and
        ``genre`` columns, or with a row whose path or genre is empty.
    """
    rows: list[Correction] = []
    files = []
    for index, path in enumerate(paths):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ParameterError(f"--labels {path!r} cannot be read ({exc.strerror})") from None
        try:
            found = _parse(data.decode("utf-8-sig"), source=path, file=index)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ParameterError(
                f"--labels {path!r} is not a CSV file of UTF-8 text ({exc})"
            ) from None
        rows += found
        files.append(
            CorrectionsFile(path=path, sha256=hashlib.sha256(data).hexdigest(), rows=len(found))
        )
    return rows, tuple(files)


def _parse(text: str, *, source: str, file: int) -> list[Correction]:
    """The rows of one file's text (``source`` names it in messages)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = next(reader, None)
    names = [h.strip() for h in header or []]
    if any(c not in names for c in COLUMNS):
        raise ParameterError(
            f"--labels {source!r}: its header is {','.join(names) or '(none)'}, need "
            f"{','.join(COLUMNS)} (the review page's corrections.csv)"
        )
    at = {c: names.index(c) for c in COLUMNS}
    rows = []
    for record in reader:
        if not any(cell.strip() for cell in record):
            continue
        where = f"{source}:{reader.line_num}"
        # The path as written (a file name may end in a space), the genre trimmed.
        cells = {c: record[i] if i < len(record) else "" for c, i in at.items()}
        cells["genre"] = cells["genre"].strip()
        if not cells["path"].strip() or not cells["genre"]:
            raise ParameterError(
                f"--labels {where}: a row needs a path and a genre, got {record!r}"
            )
        rows.append(Correction(path=cells["path"], genre=cells["genre"], source=where, file=file))
    return rows


def apply_corrections(
    segments: SegmentSet, rows: list[Correction], files: tuple[CorrectionsFile, ...]
) -> tuple[SegmentSet, LabelCorrections]:
    """``segments`` with the corrections' genres over the shards' (see the module's notes).

    Returns
    -------
    segments : SegmentSet
        The same segments and features (shared, not copied), ``genre`` corrected and
        ``shard_genre`` holding the shards' own labels, which the split reads.
    corrections : LabelCorrections
        What the files did, for the summary and the model card.

    Raises
    ------
    ParameterError
        A correction names a genre the shards' folders do not (one line naming the row and
        the genres), or, for shards without genres, genres that differ only in case.
    """
    before = segments.folder_genre
    known = sorted({str(g) for g in before if g is not None})
    _check_genres(rows, known)
    match = _matcher(segments)
    chosen: dict[str, tuple[str, int]] = {}  # track id → (genre, the row's file)
    unmatched = []
    for row in rows:
        track = match(row.path)
        if track is None:
            unmatched.append(row.path)
        else:
            chosen[track] = (row.genre, row.file)
    folder = dict(zip(segments.track_id.tolist(), before.tolist(), strict=True))
    changes = [(folder[t], g) for t, (g, _) in chosen.items()]  # (folder genre, corrected)
    rows_of = zip(segments.track_id, before, strict=True)
    genre = np.array([chosen[t][0] if t in chosen else g for t, g in rows_of], dtype=object)
    applied = [sum(file == i for _, file in chosen.values()) for i in range(len(files))]
    report = LabelCorrections(
        files=tuple(dataclasses.replace(f, applied=n) for f, n in zip(files, applied, strict=True)),
        relabelled=sum(w is not None and w != g for w, g in changes),
        added=sum(w is None for w, _ in changes),
        confirmed=sum(w == g for w, g in changes),
        unmatched=len(unmatched),
        unmatched_examples=tuple(unmatched[:_EXAMPLES]),
    )
    return dataclasses.replace(segments, genre=genre, shard_genre=before), report


def _check_genres(rows: list[Correction], known: list[str]) -> None:
    if not known:  # the corrections are the only labels: they name the genres
        check_genre_names((r.genre for r in rows), source="--labels")
        return
    for row in rows:
        if row.genre not in known:
            raise ParameterError(
                f"--labels {row.source}: genre {row.genre!r} is not one of the shards' "
                f"genres ({', '.join(known)}): a typo? Corrections name the collection's genres"
            )


def _matcher(segments: SegmentSet):
    """``path → track id`` (or ``None``) for the tracks of ``segments``, as the module's
    notes say: the exact path, its absolute spelling, then the longest tail that is a
    track id."""
    ids, first = np.unique(segments.track_id.astype(str), return_index=True)
    paths = segments.path[first].tolist()
    exact = dict(zip(paths, ids.tolist(), strict=True))
    local = {os.path.normpath(p): t for p, t in exact.items() if not is_uri(p)}
    known = set(ids.tolist())

    def match(path: str) -> str | None:
        if path in exact:
            return exact[path]
        if not is_uri(path) and os.path.normpath(os.path.abspath(path)) in local:
            return local[os.path.normpath(os.path.abspath(path))]
        parts = urllib.parse.unquote(path).replace("\\", "/").split("/")
        for k in range(len(parts)):
            tail = "/".join(parts[k:])
            if tail in known:
                return tail
        return None

    return match
