"""Bulk labelling: a music collection → a results table (one row per file), on Ray Data.

Pipeline, streaming so memory stays flat however large the collection::

    list files ─▶ decode + segment + features (CPU tasks, one STFT per batch)
               ─▶ predictor actor pool (model loaded once per actor; GPU when present)
               ─▶ aggregate segments per track (mean | max | vote) ─▶ Parquet parts

The feature settings come from the model card (:mod:`genre.card`), never from flags.
The driver resolves the model once and ships its bytes to the actors through Ray's
object store, so worker nodes need no access to the tracking server. Results are
written by the driver in atomic parts (:mod:`genre.results`), holding the output
folder's lock; a re-run reads them back and labels only the files that are missing
(or failed, with ``retry_errors``).
"""

from __future__ import annotations

import glob
import os
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from genre.audio import AUDIO_EXTENSIONS, MAX_DURATION_S, load_segments
from genre.card import ResolvedModel, resolve
from genre.config import AGGREGATES, FeatureConfig
from genre.corpus import list_tracks
from genre.errors import AudioFileError, ConfigMismatchError, ParameterError
from genre.features import extract
from genre.report import segment_to_track
from genre.results import ResultStore, read_results, results_table
from genre.store import AttemptJournal, FolderLock, is_uri
from genre.training import stack_features

__all__ = [
    "AGGREGATES",
    "LabelModel",
    "LabelSettings",
    "model_from_network",
    "resolve_model",
    "list_inputs",
    "featurize_batch",
    "Predictor",
    "LabelSummary",
    "run_label",
    "label_file",
    "read_results",
]

#: A model ready to label with: its card and Keras bytes (see :mod:`genre.card`).
LabelModel = ResolvedModel
#: Look up and check a registered model (``models:/genre@champion``).
resolve_model = resolve
#: Ray Data retries a batch whose worker died this often (see genre.extraction).
_TASK_RETRIES = 3


def model_from_network(
    network, data, *, name: str = "local/0", aggregate: str = "mean"
) -> LabelModel:
    """A model trained in this process (``genre.training.fit``), without the registry.

    For smoke tests and benchmarks; production models come from :func:`resolve_model`.
    """
    from genre.training import card_for

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.keras"
        network.save(path)
        blob = path.read_bytes()
    return LabelModel(
        uri=name, name=name, card=card_for(data, aggregate=aggregate), keras_bytes=blob
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

    if os.path.isdir(source) or is_uri(source):
        listing = list_tracks(source)
        return [item(t.path, t.track_id) for t in listing.tracks], "folder"
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
    if ext in (".txt", ".lst", ".m3u"):
        lines = [line.strip() for line in Path(source).read_text().splitlines()]
        paths = [line for line in lines if line and not line.startswith("#")]
    elif ext == ".csv":
        import pandas as pd

        frame = pd.read_csv(source)
        paths = frame["path" if "path" in frame.columns else frame.columns[0]].astype(str).tolist()
    elif ext == ".parquet":
        table = pq.read_table(source)
        paths = [
            str(p) for p in table.column("path" if "path" in table.column_names else 0).to_pylist()
        ]
    elif ext in AUDIO_EXTENSIONS:
        return [item(os.path.abspath(source), os.path.basename(source))], "file"
    else:
        raise ParameterError(
            f"input {source!r} is not a folder, glob, audio file or .txt/.csv/.parquet list"
        )
    base = os.path.dirname(os.path.abspath(source))
    resolved = [p if os.path.isabs(p) or is_uri(p) else os.path.join(base, p) for p in paths]
    return [item(p, p) for p in dict.fromkeys(resolved)], "list"


def featurize_batch(
    batch: dict[str, np.ndarray],
    *,
    cfg: FeatureConfig,
    features: tuple[str, ...],
    max_segments: int,
    max_duration_s: float = MAX_DURATION_S,
    journal: str | None = None,
) -> dict[str, np.ndarray]:
    """Decode up to ``max_segments`` spread segments per file and compute the model's features.

    With ``journal`` (the output folder) each file is decoded inside its crash journal
    (:class:`genre.store.AttemptJournal`): a file that kills its worker twice becomes a
    ``crashed`` error row and the rest of the batch is labelled.

    Returns one row per file: ``path``, ``track_id``, ``n_segments``, ``duration_s``,
    ``reason``/``error`` (``""`` on success) and ``x``: an object array holding each
    file's ``(n_segments, frames, bins)`` float32 features (empty on failure).
    """
    attempts = AttemptJournal(journal) if journal else None
    rows: dict[str, list] = {
        k: [] for k in ("path", "track_id", "n_segments", "duration_s", "reason", "error", "x")
    }
    segs, owners = [], []
    for i, (path, track_id) in enumerate(zip(batch["path"], batch["track_id"], strict=True)):
        reason = error = ""
        n, duration = 0, 0.0

        def decode(path=str(path)):
            return load_segments(
                path,
                sample_rate=cfg.sample_rate,
                segment_seconds=cfg.segment_seconds,
                max_segments=max_segments,
                max_duration_s=max_duration_s,
            )

        try:
            s = attempts.decode(str(path), str(path), decode) if attempts else decode()
            segs.append(s.audio)
            owners.append(i)
            n, duration = len(s), s.duration_s
        except AudioFileError as exc:
            reason, error = exc.reason, str(exc)
        except Exception as exc:  # one odd file must not abort the whole collection
            reason, error = "internal", f"{path}: {type(exc).__name__}: {exc}"
        for key, value in zip(
            rows, (str(path), str(track_id), n, duration, reason, error, None), strict=True
        ):
            rows[key].append(value)
    empty = np.zeros((0, cfg.frames, sum(cfg.bins(f) for f in features)), np.float32)
    rows["x"] = [empty] * len(rows["path"])
    if segs:
        stacked = stack_features(
            extract(np.concatenate(segs), cfg.with_features(features)), features
        )
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

    def __init__(
        self,
        *,
        model_bytes: bytes | tuple,
        labels: tuple[str, ...],
        aggregate: str,
        top_k: int,
        batch_size: int,
    ):
        from genre.models import configure_tensorflow

        if isinstance(
            model_bytes, tuple
        ):  # (ObjectRef,): the driver put the bytes in the object store once
            import ray

            model_bytes = ray.get(model_bytes[0])
        configure_tensorflow()
        self.model = _load_keras(model_bytes)
        self.node_id = _node_id()
        self.labels, self.aggregate, self.top_k, self.batch_size = (
            list(labels),
            aggregate,
            top_k,
            batch_size,
        )

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = [
            np.asarray(self.model(x[i : i + self.batch_size], training=False))
            for i in range(0, len(x), self.batch_size)
        ]
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


def _result_columns(
    batch: dict[str, np.ndarray], probs: np.ndarray, labels: list[str], top_k: int
) -> dict[str, np.ndarray]:
    n = len(probs)
    failed = np.isnan(probs).any(axis=1)
    top = np.argsort(-np.nan_to_num(probs, nan=-1.0), axis=1)[:, :top_k]
    genre = np.array([None if failed[i] else labels[top[i, 0]] for i in range(n)], dtype=object)
    top_genres = np.empty(n, dtype=object)
    top_probs = np.empty(n, dtype=object)
    for i in range(n):
        top_genres[i] = [] if failed[i] else [labels[j] for j in top[i]]
        top_probs[i] = (
            np.array([], np.float32) if failed[i] else probs[i, top[i]].astype(np.float32)
        )
    out = {
        "path": np.asarray(batch["path"], dtype=object),
        "track_id": np.asarray(batch["track_id"], dtype=object),
        "genre": genre,
        "confidence": np.where(
            failed, np.nan, np.nanmax(np.nan_to_num(probs, nan=-1.0), axis=1)
        ).astype(np.float32),
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


@dataclass(frozen=True)
class LabelSettings:
    """How to label: everything :func:`run_label` needs besides the input, output and model.

    Attributes
    ----------
    aggregate : str or None
        Segment → track (``mean``, ``max``, ``vote``); ``None``: the card's.
    max_segments : int
        Segments per track, spread evenly over long tracks.
    top_k : int
        Genres kept per track in ``top_k``.
    batch_size : int
        Segments per model call.
    tracks_per_task : int
        Files per decode task (and per predictor batch).
    gpus_per_worker : float
        GPUs per predictor actor, used only when the cluster has GPUs.
    predictors : int or None
        Predictor actors (default: one per GPU share; on CPUs 1, growing to one per 8 CPUs).
    max_duration_s : float
        Longest file decoded; longer ones are ``too-long`` error rows.
    retry_errors, new_model_ok, csv : bool
        Label failed files again; replace another model's labels; write ``_results.csv``.
    address, num_cpus
        Ray cluster address; CPUs of a local runtime.
    flush_rows, flush_s
        Write finished rows at least this often (a killed run loses no more).
    """

    aggregate: str | None = None
    max_segments: int = 10
    top_k: int = 3
    batch_size: int = 256
    tracks_per_task: int = 16
    gpus_per_worker: float = 0.0
    predictors: int | None = None
    max_duration_s: float = MAX_DURATION_S
    retry_errors: bool = False
    new_model_ok: bool = False
    csv: bool = False
    address: str | None = None
    num_cpus: int | None = None
    flush_rows: int = 512
    flush_s: float = 5.0

    def __post_init__(self) -> None:
        if self.aggregate is not None and self.aggregate not in AGGREGATES:
            raise ParameterError(
                f"--aggregate {self.aggregate!r}: choose one of {', '.join(AGGREGATES)}"
            )
        for flag, value in (
            ("--segments", self.max_segments),
            ("--top-k", self.top_k),
            ("--batch-size", self.batch_size),
            ("tracks_per_task", self.tracks_per_task),
            ("--predictors", self.predictors),
            ("--num-cpus", self.num_cpus),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value <= 0
            ):
                raise ParameterError(f"{flag}={value} must be a positive integer")
        if self.gpus_per_worker < 0:
            raise ParameterError(f"--gpus-per-worker={self.gpus_per_worker} must be ≥ 0")
        if not self.max_duration_s > 0 or not self.flush_s > 0 or self.flush_rows <= 0:
            raise ParameterError("--max-duration and --flush-seconds must be positive")


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
    crashes_forgotten: int = 0

    def format(self) -> str:
        done = self.labelled + sum(self.failed.values())
        rate = done / self.wall_s if self.wall_s > 0 else 0.0
        lines = [
            f"label: {done} files in {self.wall_s:.1f} s ({rate:.1f} tracks/s) with {self.model}: "
            f"{self.labelled} labelled, {sum(self.failed.values())} failed; {self.already_done} of {self.found} already done",
        ]
        if self.superseded or self.retried:
            lines.append(
                f"  moved {self.superseded} parts of other models to _superseded/; {self.retried} failed rows retried"
            )
        if self.crashes_forgotten:
            lines.append(
                f"  forgot {self.crashes_forgotten} recorded worker crash(es): those files were tried again"
            )
        if self.failed:
            lines.append(
                "  failed by reason: "
                + ", ".join(f"{r}: {n}" for r, n in self.failed.most_common())
            )
        if self.genres:
            lines.append("  genres: " + ", ".join(f"{g} {n}" for g, n in self.genres.most_common()))
        if self.least_confident:
            lines.append("  least confident:")
            lines += [f"    {c:.2f}  {g:<10} {p}" for p, g, c in self.least_confident]
        if self.nodes:
            lines.append(
                f"  predicted on {len(self.nodes)} node(s): "
                + ", ".join(f"{n[:8]} {c} files" for n, c in self.nodes.most_common())
            )
        lines.append(f"  results: {self.output}" + (f" (CSV: {self.csv})" if self.csv else ""))
        return "\n".join(lines)


def run_label(
    source: str, output: str, *, model: LabelModel, settings: LabelSettings | None = None
) -> LabelSummary:
    """Label every file of ``source`` that ``output`` does not hold yet.

    Parameters
    ----------
    source : str
        A folder (searched recursively), a glob, a ``.txt``/``.csv``/``.parquet`` list
        of paths, or one audio file.
    output : str
        Results folder (local or URI); one writer at a time (``_lock``).
    model : LabelModel
        From :func:`resolve_model` (or :func:`model_from_network`).
    settings : LabelSettings or None
        Defaults when ``None``.

    Returns
    -------
    LabelSummary

    Raises
    ------
    ParameterError
        Bad input, output that is a file or locked by a live run.
    ConfigMismatchError
        ``output`` holds labels of another model (without ``new_model_ok``).
    """
    settings = settings or LabelSettings()
    started = time.perf_counter()
    items, _ = list_inputs(source)
    with FolderLock(output, command="jobs.label"):
        results = ResultStore(output)
        summary = LabelSummary(output=output, model=model.name, found=len(items))
        done = _prepare_output(results, summary, model=model, settings=settings)
        todo = [it for it in items if it["path"] not in done]
        summary.already_done = len(items) - len(todo)
        if todo:
            _label_on_ray(todo, results, summary, model=model, settings=settings)
        if settings.csv and results.parts():
            summary.csv = results.write_csv()
    summary.wall_s = time.perf_counter() - started
    return summary


def _prepare_output(
    results: ResultStore, summary: LabelSummary, *, model: LabelModel, settings: LabelSettings
) -> set[str]:
    """Refuse or supersede another model's labels, drop errors to retry; return the paths done."""
    existing = results.existing()
    if existing is not None:
        models = set(existing.column("model").to_pylist())
        if models - {model.name}:
            if not settings.new_model_ok:
                raise ConfigMismatchError(
                    f"output {results.root!r} holds labels from {', '.join(sorted(models))}, not {model.name}: "
                    "pass --new-model-ok to label everything again with the new model"
                )
            summary.superseded = results.supersede(model.name)
        if settings.retry_errors:
            summary.retried = results.drop_errors()
        existing = results.existing()
    if settings.retry_errors:
        summary.crashes_forgotten = AttemptJournal(results.root).clear()
    return set(existing.column("path").to_pylist()) if existing is not None else set()


def _label_on_ray(
    todo: list[dict[str, str]],
    results: ResultStore,
    summary: LabelSummary,
    *,
    model: LabelModel,
    settings: LabelSettings,
) -> None:
    """Stream ``todo`` through decode tasks and predictor actors; write parts as rows arrive."""
    from genre.runtime import init_ray

    init_ray(address=settings.address, num_cpus=settings.num_cpus)
    aggregate = settings.aggregate or model.card.aggregate
    labels = list(model.card.labels)
    buffer: list[dict[str, Any]] = []
    scored: list[tuple[str, str, float]] = []
    last_flush = time.monotonic()
    for batch in _pipeline(todo, results.root, model=model, settings=settings).iter_batches(
        batch_size=None, batch_format="numpy"
    ):
        for i in range(len(batch["path"])):
            row = {k: v[i] for k, v in batch.items()}
            buffer.append(row)
            _count(summary, row, scored)
        # Flush by size and by time: a killed run loses at most a few seconds of work.
        if len(buffer) >= settings.flush_rows or (
            buffer and time.monotonic() - last_flush > settings.flush_s
        ):
            results.write(
                results_table(buffer, labels=labels, model=model.name, aggregate=aggregate)
            )
            buffer, last_flush = [], time.monotonic()
    if buffer:
        results.write(results_table(buffer, labels=labels, model=model.name, aggregate=aggregate))
    summary.least_confident = sorted(scored, key=lambda r: r[2])[:10]


def _count(
    summary: LabelSummary, row: dict[str, Any], scored: list[tuple[str, str, float]]
) -> None:
    summary.nodes[str(row["node_id"])] += 1
    if row["reason"]:
        summary.failed[row["reason"]] += 1
    else:
        summary.labelled += 1
        summary.segments += int(row["n_segments"])
        summary.genres[row["genre"]] += 1
        scored.append((row["path"], row["genre"], float(row["confidence"])))


def _pipeline(
    todo: list[dict[str, str]], output: str, *, model: LabelModel, settings: LabelSettings
):
    """The Ray Data plan: decode + features (CPU tasks) → predictor actors."""
    import ray

    from genre.runtime import cluster_gpus

    card = model.card
    gpus = settings.gpus_per_worker if cluster_gpus() > 0 else 0.0
    cpus = ray.cluster_resources().get("CPU", 1.0)
    if settings.predictors:
        pool = ray.data.ActorPoolStrategy(size=settings.predictors)
    elif gpus:
        pool = ray.data.ActorPoolStrategy(size=max(1, int(cluster_gpus() / gpus)))
    else:  # CPU only: one predictor per 8 CPUs at most, grown by Ray Data when batches queue up
        pool = ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, int(cpus // 8)))
    per_task = max(1, min(settings.tracks_per_task, -(-len(todo) // int(max(1, 2 * cpus)))))
    return (
        ray.data.from_items(todo, override_num_blocks=max(1, -(-len(todo) // per_task)))
        .map_batches(
            featurize_batch,
            batch_size=per_task,
            batch_format="numpy",
            num_cpus=1,
            max_retries=_TASK_RETRIES,
            fn_kwargs={
                "cfg": card.feature_config,
                "features": card.features,
                "max_segments": settings.max_segments,
                "max_duration_s": settings.max_duration_s,
                "journal": output,
            },
        )
        .map_batches(
            Predictor,
            batch_size=per_task,
            batch_format="numpy",
            compute=pool,
            num_gpus=gpus,
            # No CPU reservation: a predictor is busy a fraction of the time, and
            # reserving even half a CPU would leave a 2-CPU machine one decoding task.
            num_cpus=0,
            fn_constructor_kwargs={
                "model_bytes": (ray.put(model.keras_bytes),),
                "labels": card.labels,
                "aggregate": settings.aggregate or card.aggregate,
                "top_k": min(settings.top_k, len(card.labels)),
                "batch_size": settings.batch_size,
            },
        )
    )


def label_file(
    path: str,
    *,
    model: LabelModel,
    aggregate: str | None = None,
    max_segments: int = 10,
    top_k: int = 5,
    max_duration_s: float = MAX_DURATION_S,
) -> dict[str, Any]:
    """Label one file in-process (no Ray): the genres and probabilities, best first.

    Raises
    ------
    AudioFileError
        The file cannot be decoded.
    """
    from genre.models import configure_tensorflow

    card = model.card
    aggregate = aggregate or card.aggregate
    if aggregate not in AGGREGATES:
        raise ParameterError(f"--aggregate {aggregate!r}: choose one of {', '.join(AGGREGATES)}")
    out = featurize_batch(
        {"path": np.array([path], object), "track_id": np.array([path], object)},
        cfg=card.feature_config,
        features=card.features,
        max_segments=max_segments,
        max_duration_s=max_duration_s,
    )
    if out["reason"][0]:
        raise AudioFileError(out["reason"][0], out["error"][0])
    configure_tensorflow()
    predictor = Predictor(
        model_bytes=model.keras_bytes,
        labels=card.labels,
        aggregate=aggregate,
        top_k=top_k,
        batch_size=256,
    )
    seg_probs = predictor.predict(out["x"][0])
    _, probs = segment_to_track(np.zeros(len(seg_probs), int), seg_probs, aggregate=aggregate)
    order = np.argsort(-probs[0])[:top_k]
    return {
        "path": path,
        "n_segments": int(out["n_segments"][0]),
        "duration_s": float(out["duration_s"][0]),
        "top": [(card.labels[j], float(probs[0, j])) for j in order],
        "model": model.name,
        "aggregate": aggregate,
    }
