"""Bulk labelling: a music collection → a results table (one row per file), on Ray Data.

Pipeline, streaming so memory stays flat however large the collection::

    list files ─▶ decode + segment + features (CPU tasks, one STFT per batch)
               ─▶ predictor actor pool (model loaded once per actor; GPU when present)
               ─▶ aggregate segments per track (mean | max | vote) ─▶ Parquet parts

The feature settings come from the model's own metadata, never from flags. The
driver resolves the model once and ships its bytes to the actors through Ray's
object store, so worker nodes need no access to the tracking server. Results are
written by the driver in atomic parts; a re-run reads them back and labels only
the files that are missing (or failed, with ``retry_errors``).
"""

from __future__ import annotations

import datetime as _dt
import glob
import json
import os
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from genre.audio import AUDIO_EXTENSIONS, load_segments
from genre.config import FeatureConfig
from genre.corpus import list_tracks
from genre.errors import AudioFileError, ConfigMismatchError, ParameterError
from genre.features import extract
from genre.report import segment_to_track
from genre.training import stack_features

__all__ = [
    "AGGREGATES",
    "LabelModel",
    "resolve_model",
    "list_inputs",
    "featurize_batch",
    "Predictor",
    "LabelSummary",
    "run_label",
    "label_file",
    "read_results",
]

AGGREGATES = ("mean", "max", "vote")
_PART = "part-"
_TMP = ".tmp-"


@dataclass(frozen=True)
class LabelModel:
    """A resolved model: its bytes and everything needed to feed it."""

    uri: str
    name: str  # e.g. "genre/3"
    keras_bytes: bytes
    labels: tuple[str, ...]
    features: tuple[str, ...]
    feature_config: FeatureConfig
    aggregate: str

    @classmethod
    def from_network(cls, network, data, *, name: str = "local/0", aggregate: str = "mean") -> LabelModel:
        """A model trained in this process (``genre.training.fit``), without the registry.

        For smoke tests and benchmarks; production models come from :func:`resolve_model`.
        """
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "model.keras"
            network.save(path)
            blob = path.read_bytes()
        return cls(uri=name, name=name, keras_bytes=blob, labels=tuple(data.labels), features=tuple(data.features),
                   feature_config=data.feature_config, aggregate=aggregate)


def _model_tag(uri: str, client) -> str:
    """``models:/genre@champion`` → ``genre/3``; other URIs stay as they are."""
    if not uri.startswith("models:/"):
        return uri
    ref = uri[len("models:/") :]
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return f"{name}/{client.get_model_version_by_alias(name, alias).version}"
    name, _, version = ref.partition("/")
    if version in ("", "latest"):
        versions = client.search_model_versions(f"name='{name}'")
        version = str(max(int(v.version) for v in versions))
    return f"{name}/{version}"


def resolve_model(uri: str, *, tracking_uri: str) -> LabelModel:
    """Look up ``uri`` (``models:/name@alias``, ``models:/name/3``, ``runs:/…``) and check it.

    Raises
    ------
    ParameterError
        Unknown model or unreachable tracking server.
    ConfigMismatchError
        Not a genre model, or its input does not match its own feature config.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    from genre.tuning import MODEL_METADATA_KEY, check_tracking_uri

    check_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    try:
        tag = _model_tag(uri, client)
        info = mlflow.models.get_model_info(uri)
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=tracking_uri)
    except (MlflowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ParameterError(f"model {uri!r} not found at {tracking_uri}: {first}") from exc
    meta = (info.metadata or {}).get(MODEL_METADATA_KEY)
    if not meta or "feature_config" not in meta:
        raise ConfigMismatchError(f"model {uri!r} carries no genre feature config: it was not made by jobs.tune")
    cfg = FeatureConfig.from_dict(meta["feature_config"])
    features = tuple(meta["features"])
    keras_files = sorted(Path(local).rglob("*.keras"))
    if not keras_files:
        raise ConfigMismatchError(f"model {uri!r} has no Keras model file")
    expected = (cfg.frames, sum(cfg.bins(f) for f in features))
    inputs = info.signature.inputs.inputs if info.signature is not None else []
    shape = tuple(inputs[0].shape[1:]) if inputs and hasattr(inputs[0], "shape") else None
    if shape is not None and shape != expected:
        raise ConfigMismatchError(
            f"model {uri!r} takes input {shape} but its feature config {cfg.hash()} gives {expected}: refusing to feed it"
        )
    aggregate = meta.get("aggregate", "mean")
    return LabelModel(
        uri=uri, name=tag, keras_bytes=keras_files[0].read_bytes(), labels=tuple(meta["labels"]),
        features=features, feature_config=cfg, aggregate=aggregate,
    )


def _load_keras(model_bytes: bytes):
    import warnings

    import keras

    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        # compile=False: no optimizer to restore, and Keras says so at length.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        path = Path(d) / "model.keras"
        path.write_bytes(model_bytes)
        return keras.saving.load_model(str(path), compile=False)


def list_inputs(source: str) -> tuple[list[dict[str, str]], str]:
    """Expand INPUT into ``[{path, track_id}]``; return them and the kind of input.

    INPUT may be a folder (searched recursively), a glob, or a ``.txt``/``.csv``/
    ``.parquet`` file listing paths (column ``path``, or the first column).
    """
    def item(path: str, track_id: str) -> dict[str, str]:
        return {"path": path, "track_id": track_id}

    if os.path.isdir(source) or "://" in source:
        listing = list_tracks(source)
        return [item(t.path, t.track_id) for t in listing.tracks], "folder"
    if any(ch in source for ch in "*?["):
        paths = sorted(p for p in glob.glob(source, recursive=True) if os.path.isfile(p) or os.path.islink(p))
        if not paths:
            raise ParameterError(f"input glob {source!r} matches no file")
        return [item(os.path.abspath(p), p) for p in paths], "glob"
    if not os.path.exists(source):
        raise ParameterError(f"input {source!r} does not exist")
    ext = os.path.splitext(source)[1].lower()
    if ext in (".txt", ".lst", ".m3u"):
        lines = [line.strip() for line in Path(source).read_text().splitlines()]
        paths = [line for line in lines if line and not line.startswith("#")]
    elif ext == ".csv":
        import pandas as pd

        frame = pd.read_csv(source)
        paths = frame["path" if "path" in frame.columns else frame.columns[0]].astype(str).tolist()
    elif ext == ".parquet":
        table = pq.read_table(source)
        paths = [str(p) for p in table.column("path" if "path" in table.column_names else 0).to_pylist()]
    elif ext in AUDIO_EXTENSIONS:
        return [item(os.path.abspath(source), os.path.basename(source))], "file"
    else:
        raise ParameterError(f"input {source!r} is not a folder, glob, audio file or .txt/.csv/.parquet list")
    base = os.path.dirname(os.path.abspath(source))
    resolved = [p if os.path.isabs(p) or "://" in p else os.path.join(base, p) for p in paths]
    return [item(p, p) for p in dict.fromkeys(resolved)], "list"


def featurize_batch(
    batch: dict[str, np.ndarray], *, cfg: FeatureConfig, features: tuple[str, ...], max_segments: int
) -> dict[str, np.ndarray]:
    """Decode up to ``max_segments`` spread segments per file and compute the model's features.

    Returns one row per file: ``path``, ``track_id``, ``n_segments``, ``duration_s``,
    ``reason``/``error`` (``""`` on success) and ``x``: an object array holding each
    file's ``(n_segments, frames, bins)`` float32 features (empty on failure).
    """
    rows: dict[str, list] = {k: [] for k in ("path", "track_id", "n_segments", "duration_s", "reason", "error", "x")}
    segs, owners = [], []
    for i, (path, track_id) in enumerate(zip(batch["path"], batch["track_id"], strict=True)):
        reason = error = ""
        n, duration = 0, 0.0
        try:
            s = load_segments(str(path), sample_rate=cfg.sample_rate, segment_seconds=cfg.segment_seconds, max_segments=max_segments)
            segs.append(s.audio)
            owners.append(i)
            n, duration = len(s), s.duration_s
        except AudioFileError as exc:
            reason, error = exc.reason, str(exc)
        except Exception as exc:  # one odd file must not abort the whole collection
            reason, error = "internal", f"{path}: {type(exc).__name__}: {exc}"
        for key, value in zip(rows, (str(path), str(track_id), n, duration, reason, error, None), strict=True):
            rows[key].append(value)
    empty = np.zeros((0, cfg.frames, sum(cfg.bins(f) for f in features)), np.float32)
    rows["x"] = [empty] * len(rows["path"])
    if segs:
        stacked = stack_features(extract(np.concatenate(segs), cfg.with_features(features)), features)
        bounds = np.cumsum([0] + [len(s) for s in segs])
        for j, i in enumerate(owners):
            rows["x"][i] = stacked[bounds[j] : bounds[j + 1]]
    out = {k: np.asarray(v, dtype=object) for k, v in rows.items() if k != "x"}
    out["n_segments"] = np.asarray(rows["n_segments"], dtype=np.int32)
    out["duration_s"] = np.asarray(rows["duration_s"], dtype=np.float32)
    x = np.empty(len(rows["x"]), dtype=object)
    x[:] = rows["x"]
    out["x"] = x
    return out


class Predictor:
    """Ray Data actor: loads the model once, predicts segments, aggregates per track."""

    def __init__(self, *, model_bytes: bytes | tuple, labels: tuple[str, ...], aggregate: str, top_k: int, batch_size: int):
        from genre.models import configure_tensorflow

        if isinstance(model_bytes, tuple):  # (ObjectRef,): the driver put the bytes in the object store once
            import ray

            model_bytes = ray.get(model_bytes[0])
        configure_tensorflow()
        self.model = _load_keras(model_bytes)
        self.node_id = _node_id()
        self.labels, self.aggregate, self.top_k, self.batch_size = list(labels), aggregate, top_k, batch_size

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = [np.asarray(self.model(x[i : i + self.batch_size], training=False)) for i in range(0, len(x), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        xs = [np.asarray(x, dtype=np.float32) for x in batch["x"]]
        n = len(xs)
        probs = np.full((n, len(self.labels)), np.nan, np.float32)
        ok = [i for i in range(n) if not batch["reason"][i] and len(xs[i])]
        if ok:
            seg_probs = self.predict(np.concatenate([xs[i] for i in ok]))
            owner = np.repeat(np.arange(len(ok)), [len(xs[i]) for i in ok])
            order, track_probs = segment_to_track(owner, seg_probs, aggregate=self.aggregate)
            probs[np.asarray(ok)[order]] = track_probs
        out = _result_columns(batch, probs, self.labels, self.top_k)
        out["node_id"] = np.full(n, self.node_id, dtype=object)
        return out


def _node_id() -> str:
    import sys

    if "ray" not in sys.modules:
        return ""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


def _result_columns(batch: dict[str, np.ndarray], probs: np.ndarray, labels: list[str], top_k: int) -> dict[str, np.ndarray]:
    n = len(probs)
    failed = np.isnan(probs).any(axis=1)
    top = np.argsort(-np.nan_to_num(probs, nan=-1.0), axis=1)[:, :top_k]
    genre = np.array([None if failed[i] else labels[top[i, 0]] for i in range(n)], dtype=object)
    top_genres = np.empty(n, dtype=object)
    top_probs = np.empty(n, dtype=object)
    for i in range(n):
        top_genres[i] = [] if failed[i] else [labels[j] for j in top[i]]
        top_probs[i] = np.array([], np.float32) if failed[i] else probs[i, top[i]].astype(np.float32)
    out = {
        "path": np.asarray(batch["path"], dtype=object),
        "track_id": np.asarray(batch["track_id"], dtype=object),
        "genre": genre,
        "confidence": np.where(failed, np.nan, np.nanmax(np.nan_to_num(probs, nan=-1.0), axis=1)).astype(np.float32),
        "top_genres": top_genres,
        "top_probs": top_probs,
        "n_segments": np.asarray(batch["n_segments"], dtype=np.int32),
        "duration_s": np.asarray(batch["duration_s"], dtype=np.float32),
        "reason": np.asarray(batch["reason"], dtype=object),
        "error": np.asarray(batch["error"], dtype=object),
    }
    for j, label in enumerate(labels):
        out[f"p_{label}"] = probs[:, j]
    return out


def _results_schema(labels: list[str]) -> pa.Schema:
    fields = [
        pa.field("path", pa.string(), nullable=False),
        pa.field("track_id", pa.string(), nullable=False),
        pa.field("genre", pa.string()),
        pa.field("confidence", pa.float32()),
        pa.field("top_k", pa.list_(pa.struct([("genre", pa.string()), ("probability", pa.float32())]))),
        *[pa.field(f"p_{label}", pa.float32()) for label in labels],
        pa.field("n_segments", pa.int32()),
        pa.field("duration_s", pa.float32()),
        pa.field("model", pa.string(), nullable=False),
        pa.field("aggregate", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("error_reason", pa.string()),
        pa.field("labeled_at", pa.timestamp("s", tz="UTC"), nullable=False),
    ]
    return pa.schema(fields, metadata={"genre.format": "genre.results/1"})


def _to_table(rows: list[dict[str, Any]], labels: list[str], model: str, aggregate: str) -> pa.Table:
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    cols: dict[str, list] = {f.name: [] for f in _results_schema(labels)}
    for r in rows:
        bad = bool(r["reason"])
        cols["path"].append(r["path"])
        cols["track_id"].append(r["track_id"])
        cols["genre"].append(None if bad else r["genre"])
        cols["confidence"].append(None if bad else float(r["confidence"]))
        cols["top_k"].append(None if bad else [{"genre": g, "probability": float(p)} for g, p in zip(r["top_genres"], r["top_probs"], strict=True)])
        for label in labels:
            cols[f"p_{label}"].append(None if bad else float(r[f"p_{label}"]))
        cols["n_segments"].append(int(r["n_segments"]))
        cols["duration_s"].append(float(r["duration_s"]) if r["duration_s"] else None)
        cols["model"].append(model)
        cols["aggregate"].append(aggregate)
        cols["error"].append(r["error"] or None)
        cols["error_reason"].append(r["reason"] or None)
        cols["labeled_at"].append(now)
    return pa.Table.from_pydict(cols, schema=_results_schema(labels))


def _filesystem(root: str):
    from pyarrow import fs as pafs

    if "://" in str(root):
        return pafs.FileSystem.from_uri(str(root))
    return pafs.LocalFileSystem(), os.path.abspath(str(root))


class _ResultStore:
    """The OUTPUT folder (local or object store): Parquet parts written by the driver only.

    Locally a part is written under a temporary name and renamed into place; an
    object store publishes an object only once its upload completes. Either way a
    killed run leaves whole parts or none.
    """

    def __init__(self, root: str):
        from pyarrow import fs as pafs

        self.root = str(root)
        self.fs, self.base = _filesystem(self.root)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        if self.fs.get_file_info(self.base).type == pafs.FileType.File:
            raise ParameterError(f"output {root!r} is a file, not a folder")
        self.fs.create_dir(self.base, recursive=True)
        for entry in self._entries():
            if entry.base_name.startswith(_TMP):
                self.fs.delete_file(entry.path)

    def _entries(self):
        from pyarrow import fs as pafs

        return self.fs.get_file_info(pafs.FileSelector(self.base, recursive=False))

    def parts(self) -> list[str]:
        return sorted(e.path for e in self._entries() if e.base_name.startswith(_PART) and e.base_name.endswith(".parquet"))

    def existing(self) -> pa.Table | None:
        parts = self.parts()
        if not parts:
            return None
        return pq.read_table(parts, columns=["path", "model", "error"], filesystem=self.fs)

    def _put(self, table: pa.Table, path: str) -> None:
        if self.local:
            tmp = f"{self.base}/{_TMP}{uuid.uuid4().hex}.parquet"
            pq.write_table(table, tmp, compression="zstd", filesystem=self.fs)
            os.replace(tmp, path)
        else:
            pq.write_table(table, path, compression="zstd", filesystem=self.fs)

    def write(self, table: pa.Table) -> None:
        name = f"{_PART}{_dt.datetime.now(_dt.timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}.parquet"
        self._put(table, f"{self.base}/{name}")

    def drop_errors(self) -> int:
        """Rewrite parts without their error rows (so those files are labelled again)."""
        dropped = 0
        for part in self.parts():
            table = pq.read_table(part, filesystem=self.fs)
            keep = pc.is_null(table.column("error"))
            if pc.all(keep).as_py():
                continue
            dropped += len(table) - pc.sum(keep.cast(pa.int32())).as_py()
            kept = table.filter(keep)
            if len(kept):
                self._put(kept, part)
            else:
                self.fs.delete_file(part)
        return dropped

    def supersede(self, model: str) -> int:
        """Move parts of other models aside (``_superseded/``), keeping them."""
        moved = 0
        for part in self.parts():
            models = set(pq.read_table(part, columns=["model"], filesystem=self.fs).column("model").to_pylist())
            if models != {model}:
                self.fs.create_dir(f"{self.base}/_superseded", recursive=True)
                self.fs.move(part, f"{self.base}/_superseded/{part.rsplit('/', 1)[-1]}")
                moved += 1
        return moved

    def write_csv(self, name: str) -> str:
        frame = read_results(self.root)
        frame["top_k"] = frame["top_k"].map(
            lambda v: json.dumps([{"genre": d["genre"], "probability": round(float(d["probability"]), 4)} for d in v])
            if v is not None else ""
        )
        with self.fs.open_output_stream(f"{self.base}/{name}") as f:
            f.write(frame.to_csv(index=False).encode())
        return f"{self.root.rstrip('/')}/{name}"


def read_results(root: str) -> pd.DataFrame:  # noqa: F821
    """The results table under ``root`` (local or object store) as a pandas DataFrame; no Ray needed."""
    fs, base = _filesystem(root)
    from pyarrow import fs as pafs

    if fs.get_file_info(base).type != pafs.FileType.Directory:
        raise ParameterError(f"no results under {root!r}")
    parts = sorted(e.path for e in fs.get_file_info(pafs.FileSelector(base)) if e.base_name.startswith(_PART)
                   and e.base_name.endswith(".parquet"))
    if not parts:
        raise ParameterError(f"no results under {root!r}")
    return pq.read_table(parts, filesystem=fs).to_pandas()


@dataclass
class LabelSummary:
    output: str
    model: str
    found: int = 0
    already_done: int = 0
    labelled: int = 0
    failed: Counter = field(default_factory=Counter)
    genres: Counter = field(default_factory=Counter)
    least_confident: list[tuple[str, str, float]] = field(default_factory=list)
    wall_s: float = 0.0
    segments: int = 0
    superseded: int = 0
    retried: int = 0
    csv: str = ""
    nodes: Counter = field(default_factory=Counter)

    def format(self) -> str:
        done = self.labelled + sum(self.failed.values())
        rate = done / self.wall_s if self.wall_s > 0 else 0.0
        lines = [
            f"label: {done} files in {self.wall_s:.1f} s ({rate:.1f} tracks/s) with {self.model}: "
            f"{self.labelled} labelled, {sum(self.failed.values())} failed; {self.already_done} of {self.found} already done",
        ]
        if self.superseded or self.retried:
            lines.append(f"  moved {self.superseded} parts of other models to _superseded/; {self.retried} failed rows retried")
        if self.failed:
            lines.append("  failed by reason: " + ", ".join(f"{r}: {n}" for r, n in self.failed.most_common()))
        if self.genres:
            lines.append("  genres: " + ", ".join(f"{g} {n}" for g, n in self.genres.most_common()))
        if self.least_confident:
            lines.append("  least confident:")
            lines += [f"    {c:.2f}  {g:<10} {p}" for p, g, c in self.least_confident]
        if self.nodes:
            lines.append(f"  predicted on {len(self.nodes)} node(s): " + ", ".join(f"{n[:8]} {c} files" for n, c in self.nodes.most_common()))
        lines.append(f"  results: {self.output}" + (f" (CSV: {self.csv})" if self.csv else ""))
        return "\n".join(lines)


def run_label(
    source: str,
    output: str,
    *,
    model: LabelModel,
    aggregate: str | None = None,
    max_segments: int = 10,
    top_k: int = 3,
    batch_size: int = 256,
    tracks_per_task: int = 16,
    gpus_per_worker: float = 0.0,
    predictors: int | None = None,
    retry_errors: bool = False,
    new_model_ok: bool = False,
    csv: bool = False,
    address: str | None = None,
    num_cpus: int | None = None,
    flush_rows: int = 512,
    flush_s: float = 5.0,
) -> LabelSummary:
    """Label every file of ``source`` that ``output`` does not hold yet."""
    import ray

    from genre.runtime import cluster_gpus, init_ray

    aggregate = aggregate or model.aggregate
    if aggregate not in AGGREGATES:
        raise ParameterError(f"--aggregate {aggregate!r}: choose one of {', '.join(AGGREGATES)}")
    if max_segments <= 0 or top_k <= 0 or batch_size <= 0:
        raise ParameterError("--segments, --top-k and --batch-size must be positive integers")
    started = time.perf_counter()
    items, _ = list_inputs(source)
    store = _ResultStore(output)
    summary = LabelSummary(output=output, model=model.name, found=len(items))
    existing = store.existing()
    if existing is not None:
        models = set(existing.column("model").to_pylist())
        if models - {model.name}:
            if not new_model_ok:
                raise ConfigMismatchError(
                    f"output {output!r} holds labels from {', '.join(sorted(models))}, not {model.name}: "
                    "pass --new-model-ok to label everything again with the new model"
                )
            summary.superseded = store.supersede(model.name)
        if retry_errors:
            summary.retried = store.drop_errors()
        existing = store.existing()
    done = set(existing.column("path").to_pylist()) if existing is not None else set()
    todo = [it for it in items if it["path"] not in done]
    summary.already_done = len(items) - len(todo)
    labels = list(model.labels)
    if todo:
        init_ray(address=address, num_cpus=num_cpus)
        gpus = gpus_per_worker if cluster_gpus() > 0 else 0.0
        cpus = ray.cluster_resources().get("CPU", 1.0)
        if predictors:
            pool = ray.data.ActorPoolStrategy(size=predictors)
        elif gpus:
            pool = ray.data.ActorPoolStrategy(size=max(1, int(cluster_gpus() / gpus)))
        else:  # CPU only: one predictor per 8 CPUs at most, grown by Ray Data when batches queue up
            pool = ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, int(cpus // 8)))
        per_task = max(1, min(tracks_per_task, -(-len(todo) // int(max(1, 2 * cpus)))))
        ds = (
            ray.data.from_items(todo, override_num_blocks=max(1, -(-len(todo) // per_task)))
            .map_batches(
                featurize_batch, batch_size=per_task, batch_format="numpy", num_cpus=1,
                fn_kwargs={"cfg": model.feature_config, "features": model.features, "max_segments": max_segments},
            )
            .map_batches(
                Predictor, batch_size=per_task, batch_format="numpy",
                compute=pool, num_gpus=gpus,
                # No CPU reservation: a predictor is busy a fraction of the time, and
                # reserving even half a CPU would leave a 2-CPU machine one decoding task.
                num_cpus=0,
                fn_constructor_kwargs={"model_bytes": (ray.put(model.keras_bytes),), "labels": model.labels,
                                       "aggregate": aggregate, "top_k": min(top_k, len(labels)), "batch_size": batch_size},
            )
        )
        buffer: list[dict[str, Any]] = []
        scored: list[tuple[str, str, float]] = []
        last_flush = time.monotonic()
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for i in range(len(batch["path"])):
                row = {k: v[i] for k, v in batch.items()}
                buffer.append(row)
                summary.nodes[str(row["node_id"])] += 1
                if row["reason"]:
                    summary.failed[row["reason"]] += 1
                else:
                    summary.labelled += 1
                    summary.segments += int(row["n_segments"])
                    summary.genres[row["genre"]] += 1
                    scored.append((row["path"], row["genre"], float(row["confidence"])))
            # Flush by size and by time: a killed run loses at most a few seconds of work.
            if len(buffer) >= flush_rows or (buffer and time.monotonic() - last_flush > flush_s):
                store.write(_to_table(buffer, labels, model.name, aggregate))
                buffer, last_flush = [], time.monotonic()
        if buffer:
            store.write(_to_table(buffer, labels, model.name, aggregate))
        summary.least_confident = sorted(scored, key=lambda r: r[2])[:10]
    if csv and store.parts():
        summary.csv = store.write_csv("_results.csv")
    summary.wall_s = time.perf_counter() - started
    return summary


def label_file(path: str, *, model: LabelModel, aggregate: str | None = None, max_segments: int = 10, top_k: int = 5) -> dict[str, Any]:
    """Label one file in-process (no Ray): the genres and probabilities, best first.

    Raises
    ------
    AudioFileError
        The file cannot be decoded.
    """
    from genre.models import configure_tensorflow

    aggregate = aggregate or model.aggregate
    if aggregate not in AGGREGATES:
        raise ParameterError(f"--aggregate {aggregate!r}: choose one of {', '.join(AGGREGATES)}")
    out = featurize_batch(
        {"path": np.array([path], object), "track_id": np.array([path], object)},
        cfg=model.feature_config, features=model.features, max_segments=max_segments,
    )
    if out["reason"][0]:
        raise AudioFileError(out["reason"][0], out["error"][0])
    configure_tensorflow()
    predictor = Predictor(model_bytes=model.keras_bytes, labels=model.labels, aggregate=aggregate, top_k=top_k, batch_size=256)
    seg_probs = predictor.predict(out["x"][0])
    _, probs = segment_to_track(np.zeros(len(seg_probs), int), seg_probs, aggregate=aggregate)
    order = np.argsort(-probs[0])[:top_k]
    return {
        "path": path, "n_segments": int(out["n_segments"][0]), "duration_s": float(out["duration_s"][0]),
        "top": [(model.labels[j], float(probs[0, j])) for j in order], "model": model.name, "aggregate": aggregate,
    }

