"""The results table: one row per labelled file, as Parquet parts in an output folder.

Columns: ``path``, ``track_id``, ``genre`` (top-1), ``confidence`` (calibrated when the
model card holds a calibration), ``genres`` (the conformal genre set, best first: every
genre the track may be at the run's coverage; null when the model has no sets),
``needs_review`` and ``review_reason`` (``none-fits``, ``ambiguous``, ``domain-shift``,
``low-confidence``, ``out-of-taxonomy`` or null: see :data:`genre.calibration.REVIEW_REASONS`),
``ood_score`` (higher: less like any genre the model knows), ``domain_shift`` (how unlike
the training collection: 1 is the validation tracks' 95th percentile; null without
embedding statistics), ``top_k`` (a list of ``{genre, probability}``), one
``p_<genre>`` column per label, ``tags`` (a list of ``{tag, probability}``: the top musicnn
tags, when the model computes musicnn features), ``n_segments``, ``duration_s``,
``warning`` (null unless less of the file decoded than its header promised: what decoded
was labelled, e.g. ``decoded 220.0 of 248.5 s (…)``), ``model`` (name/version),
``aggregate``, ``error`` and ``error_reason`` (null unless the file could not be
labelled), ``labeled_at``.

Only the label job's driver writes, one part at a time, atomically, holding the
folder's lock (:mod:`genre.store`); :func:`read_results` returns one row per path
whatever the folder holds (the latest), so pandas users and a re-run see the same
table. A part that cannot be read (truncated when a disk filled) is skipped with a
warning naming it: its files count as not labelled, so a re-run labels them again.
Plain pyarrow, pandas and DuckDB read the folder; nothing here needs Ray.
"""

from __future__ import annotations

import datetime as _dt
import json
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import fs as pafs

from genre import store
from genre.corpus import check_genre_names
from genre.errors import ParameterError

__all__ = ["FORMAT", "CSV_NAME", "results_schema", "results_table", "ResultStore", "read_results"]

FORMAT = "genre.results/1"
CSV_NAME = "_results.csv"
_SUPERSEDED = "_superseded"
#: How a warning about an unreadable part ends: what the user does about it.
_REDO = "its files count as not labelled: delete it, then re-run label to redo them"


_TAGS_TYPE = pa.list_(pa.struct([("tag", pa.string()), ("probability", pa.float32())]))


def results_schema(labels: list[str], *, tags: bool = False) -> pa.Schema:
    """Arrow schema of the results table for ``labels`` (with a ``tags`` column or without).

    Raises
    ------
    ParameterError
        A label is empty, or two differ only in case: their ``p_<label>`` columns
        would not be two columns to DuckDB.
    """
    check_genre_names(labels, source="model labels")
    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("genre", pa.string()),
        pa.field("confidence", pa.float32()),
        pa.field("genres", pa.list_(pa.string())),
        pa.field("needs_review", pa.bool_()),
        pa.field("review_reason", pa.string()),
        pa.field("ood_score", pa.float32()),
        pa.field("domain_shift", pa.float32()),
        pa.field(
            "top_k", pa.list_(pa.struct([("genre", pa.string()), ("probability", pa.float32())]))
        ),
        *[pa.field(f"p_{label}", pa.float32()) for label in labels],
        *([pa.field("tags", _TAGS_TYPE)] if tags else []),
        pa.field("n_segments", pa.int32()),
        pa.field("duration_s", pa.float32()),
        pa.field("warning", pa.string()),
        pa.field("model", pa.string(), nullable=False),
        pa.field("aggregate", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("error_reason", pa.string()),
        pa.field("labeled_at", pa.timestamp("s", tz="UTC"), nullable=False),
    ]
    return pa.schema(fields, metadata={"genre.format": FORMAT})


def results_table(
    rows: list[dict[str, Any]], *, labels: list[str], model: str, aggregate: str, tags: bool = False
) -> pa.Table:
    """Rows from the predictor (``path``, ``track_id``, ``genre``, ``confidence``,
    ``genres``, ``top_genres``, ``top_probs``, ``p_<label>``, ``n_segments``, ``duration_s``,
    ``reason``, ``error``) as a results table."""
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    schema = results_schema(labels, tags=tags)
    cols: dict[str, list] = {f.name: [] for f in schema}
    for r in rows:
        bad = bool(r["reason"])
        cols["path"].append(r["path"])
        cols["track_id"].append(r["track_id"])
        cols["genre"].append(None if bad else r["genre"])
        cols["confidence"].append(None if bad else float(r["confidence"]))
        cols["genres"].append(None if bad else _genre_set(r.get("genres")))
        cols["needs_review"].append(None if bad else bool(r.get("needs_review", False)))
        reason = r.get("review_reason")  # an all-None column comes back from Ray Data as NaN
        cols["review_reason"].append(
            reason if not bad and isinstance(reason, str) and reason else None
        )
        cols["ood_score"].append(None if bad else _number(r.get("ood_score")))
        cols["domain_shift"].append(None if bad else _number(r.get("domain_shift")))
        cols["top_k"].append(
            None
            if bad
            else [
                {"genre": g, "probability": float(p)}
                for g, p in zip(r["top_genres"], r["top_probs"], strict=True)
            ]
        )
        for label in labels:
            cols[f"p_{label}"].append(None if bad else float(r[f"p_{label}"]))
        if tags:
            found = r.get("tags")
            cols["tags"].append(
                [{"tag": t["tag"], "probability": float(t["probability"])} for t in found]
                if not bad and isinstance(found, (list, np.ndarray))
                else None
            )
        cols["n_segments"].append(int(r["n_segments"]))
        cols["duration_s"].append(float(r["duration_s"]) if r["duration_s"] else None)
        warning = r.get("warning")  # "" or NaN (from Ray Data) when none
        cols["warning"].append(
            warning if not bad and isinstance(warning, str) and warning else None
        )
        cols["model"].append(model)
        cols["aggregate"].append(aggregate)
        cols["error"].append(r["error"] or None)
        cols["error_reason"].append(r["reason"] or None)
        cols["labeled_at"].append(now)
    return pa.Table.from_pydict(cols, schema=schema)


def _genre_set(value) -> list[str] | None:
    """A row's genre set as a list; None when the model gives none (Ray Data hands an
    all-None column back as NaN, and lists as arrays)."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(g) for g in value]
    return None


def _number(value) -> float | None:
    """A score as a float; None for a missing or NaN one."""
    return None if value is None or value != value else float(value)


class ResultStore:
    """The OUTPUT folder of the label job (local or object store).

    Open it only while holding the folder's :class:`genre.store.FolderLock`: opening
    removes temporaries a killed run left behind.
    """

    def __init__(self, root: str):
        self.root = str(root)
        self.fs, self.base = store.filesystem(self.root)
        if self.fs.get_file_info(self.base).type == pafs.FileType.File:
            raise ParameterError(f"output {root!r} is a file, not a folder")
        self.fs.create_dir(self.base, recursive=True)
        store.check_kind(
            self.fs,
            self.base,
            root=self.root,
            expected=FORMAT,
            role="output",
            hint="choose another output folder for label",
        )
        store.remove_temporaries(self.fs, self.base)

    def parts(self) -> list[str]:
        return store.list_parts(self.fs, self.base)

    def existing(self) -> pa.Table | None:
        """``path``, ``model``, ``error`` of every row present (``None`` when empty)."""
        table, _ = store.read_parts(
            self.fs, self.parts(), columns=["path", "model", "error"], redo=_REDO
        )
        return table

    def write(self, table: pa.Table) -> None:
        stamp = f"{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%S}"
        name = f"{store.PART_PREFIX}{stamp}-{uuid.uuid4().hex[:8]}.parquet"
        store.write_table(self.fs, self.base, name, table)

    def drop_errors(self) -> int:
        """Rewrite parts without their error rows (so those files are labelled again)."""
        dropped = 0
        for part in self.parts():
            table, _ = store.read_parts(self.fs, [part], redo=_REDO)
            if table is None:
                continue
            keep = pc.is_null(table.column("error"))
            if pc.all(keep).as_py():
                continue
            dropped += len(table) - pc.sum(keep.cast(pa.int32())).as_py()
            kept = table.filter(keep)
            if len(kept):
                store.write_table(self.fs, self.base, part.rsplit("/", 1)[-1], kept)
            else:
                self.fs.delete_file(part)
        return dropped

    def supersede(self, model: str) -> int:
        """Move parts of other models aside (``_superseded/``), keeping them."""
        moved = 0
        for part in self.parts():
            table, _ = store.read_parts(self.fs, [part], columns=["model"], redo=_REDO)
            if table is None:
                continue  # which model wrote it is unknown: left for the user to delete
            if set(table.column("model").to_pylist()) != {model}:
                self.fs.create_dir(f"{self.base}/{_SUPERSEDED}", recursive=True)
                self.fs.move(part, f"{self.base}/{_SUPERSEDED}/{part.rsplit('/', 1)[-1]}")
                moved += 1
        return moved

    def write_csv(self, name: str = CSV_NAME) -> str:
        """The table as CSV (``top_k`` and ``genres`` as JSON), beside the parts; return its
        location."""
        frame = read_results(self.root)
        frame["top_k"] = frame["top_k"].map(_top_k_json)
        if "genres" in frame:  # parts written before genre sets have no such column
            frame["genres"] = frame["genres"].map(_genres_json)
        if "tags" in frame:
            frame["tags"] = frame["tags"].map(_tags_json)
        store.write_bytes(self.fs, self.base, name, frame.to_csv(index=False).encode())
        return store.join(self.root, name)


def _top_k_json(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return json.dumps(
        [{"genre": d["genre"], "probability": round(float(d["probability"]), 4)} for d in value]
    )


def _genres_json(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return json.dumps([str(g) for g in value])


def _tags_json(value) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    return json.dumps(
        [{"tag": d["tag"], "probability": round(float(d["probability"]), 4)} for d in value]
    )


def read_results(root: str):
    """The results table under ``root`` (local or object store) as a pandas DataFrame.

    One row per ``path``: when parts hold the same path twice (two runs' parts copied
    into one folder, say), the latest ``labeled_at`` wins, with a warning, and
    ``frame.attrs["duplicates"]`` says how many rows were dropped. No Ray needed.

    A part that cannot be read is skipped with a warning naming it.

    Raises
    ------
    ParameterError
        No (readable) results under ``root``, or a folder of shards rather than labels.
    """
    fs, base = store.filesystem(root)
    store.check_kind(
        fs, base, root=root, expected=FORMAT, role="results", hint="give a label job's output"
    )
    table, _ = store.read_parts(fs, store.list_parts(fs, base), redo=_REDO)
    if table is None:
        raise ParameterError(f"no results under {root!r}")
    table, dropped = store.drop_duplicates(
        table,
        keys=["path"],
        what="results",
        where=repr(root),
        keep_last_by="labeled_at",
    )
    frame = table.to_pandas()
    frame.attrs["duplicates"] = dropped
    return frame
