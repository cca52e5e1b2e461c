"""Bulk labelling: a music collection → a results table (one row per file), on Ray Data.

Pipeline, streaming so memory stays flat however large the collection::

    list files ─▶ decode + segment + features (CPU tasks, one STFT per batch)
               ─▶ predictor actor pool (model loaded once per actor; GPU when present)
               ─▶ aggregate segments per track (mean | max | vote) ─▶ Parquet parts

The feature settings come from the model card (:mod:`genre.card`), never from flags.
A model on pretrained features (a head on ``musicnn_msd_pool``, say) gets them computed
here too: the decode tasks make musicnn's 16 kHz log-mel patches, and each predictor
actor loads the extractors the card's feature config names, once, beside the model
(:mod:`genre.embeddings`).
The driver resolves the model once and ships its bytes to the actors through Ray's
object store, so worker nodes need no access to the tracking server. Results are
written by the driver in atomic parts (:mod:`genre.results`), holding the output
folder's lock; a re-run reads them back and labels only the files that are missing
(or failed, with ``retry_errors``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genre import backend
from genre.audio import MAX_DURATION_S
from genre.calibration import DEFAULT_MAX_SET
from genre.card import (
    ZERO_SHOT,
    LabelPlan,
    ModelCard,
    ResolvedModel,
    card_for,
    resolve,
    zero_shot_model,
)
from genre.config import AGGREGATES, FRONTENDS
from genre.conformal import check_coverage
from genre.corpus import list_inputs, list_tracks
from genre.embeddings import check_extractors
from genre.errors import AudioFileError, ConfigMismatchError, ParameterError
from genre.featurize import featurize, featurize_batch
from genre.predictor import Predictor, compiled_predict
from genre.results import ResultStore, read_results, results_table
from genre.review_page import write_page
from genre.runtime import bounded_retries, check_address, cluster_gpus, init_ray
from genre.store import AttemptJournal, FolderLock
from genre.zeroshot import fit_zero_shot_calibration, load_mapping

__all__ = [
    "AGGREGATES",
    "LabelModel",
    "LabelSettings",
    "model_from_network",
    "resolve_model",
    "list_inputs",
    "featurize_batch",
    "Predictor",
    "compiled_predict",
    "LabelSummary",
    "run_label",
    "label_file",
    "calibrate_zero_shot",
    "open_model",
    "format_file_label",
    "read_results",
]

#: A model ready to label with: its card and Keras bytes (see :mod:`genre.card`).
LabelModel = ResolvedModel
#: Look up and check a registered model (``models:/genre@champion``).
resolve_model = resolve
#: Segments per predict step by default: big batches keep a GPU busy, and on a CPU a
#: batch beyond a few hundred segments gains nothing.
CPU_BATCH, GPU_BATCH = 256, 1024
#: Ray Data retries a batch whose worker died this often (see genre.extraction).
_TASK_RETRIES = 3


def model_from_network(
    network, data, *, name: str = "local/0", aggregate: str = "mean"
) -> LabelModel:
    """A model trained in this process (``genre.training.fit``), without the registry.

    For smoke tests and benchmarks; production models come from :func:`resolve_model`.
    """
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.keras"
        network.save(path)
        blob = path.read_bytes()
    return LabelModel(
        uri=name, name=name, card=card_for(data, aggregate=aggregate), keras_bytes=blob
    )


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
    batch_size : int or None
        Segments per compiled predict step (default 256 on CPUs, 1024 on GPU actors).
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
    report : bool
        Write the review page ``_report.html`` (:mod:`genre.review_page`) beside the
        results at the end of the run.
    address, num_cpus
        Ray cluster address; CPUs of a local runtime.
    flush_rows, flush_s
        Write finished rows at least this often (a killed run loses no more).
    min_confidence : float or None
        ``--min-confidence``: also flag tracks below this calibrated confidence (``None``:
        not at all for a model with genre sets; the card's threshold for one without).
    coverage : float or None
        ``--coverage`` of the genre sets, in (0, 1) (``None``: the card's, 0.9 by default).
    max_set : int
        ``--max-set``: a track whose set holds more genres needs review (``ambiguous``).
    review_domain_shift : bool
        ``--review-domain-shift``: also flag tracks whose ``domain_shift`` is above 1.
    tags : int or None
        ``--tags``: top musicnn tags kept per track (``None``: see :class:`LabelPlan`).
    frontend : str
        ``--frontend``: where log-mel is computed (:data:`genre.config.FRONTENDS`);
        ``auto``: in the predictor's compiled step when the predictors have a GPU, in
        the decode tasks (numpy) otherwise, where it measures faster.
    """

    aggregate: str | None = None
    max_segments: int = 10
    top_k: int = 3
    batch_size: int | None = None  # None: 256 on CPUs, 1024 on GPUs
    tracks_per_task: int = 16
    gpus_per_worker: float = 0.0
    predictors: int | None = None
    max_duration_s: float = MAX_DURATION_S
    retry_errors: bool = False
    new_model_ok: bool = False
    csv: bool = False
    report: bool = True
    address: str | None = None
    num_cpus: int | None = None
    flush_rows: int = 512
    flush_s: float = 5.0
    min_confidence: float | None = None
    coverage: float | None = None
    max_set: int = DEFAULT_MAX_SET
    review_domain_shift: bool = False
    tags: int | None = None
    frontend: str = "auto"

    def __post_init__(self) -> None:
        if self.coverage is not None:
            check_coverage(self.coverage, "--coverage")
        if self.tags is not None and (
            isinstance(self.tags, bool) or not isinstance(self.tags, int) or self.tags < 0
        ):
            raise ParameterError(f"--tags={self.tags} must be 0 (off) or a positive integer")
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            raise ParameterError(f"--min-confidence={self.min_confidence} must be in [0, 1]")
        if self.frontend not in FRONTENDS:
            raise ParameterError(
                f"--frontend {self.frontend!r}: choose one of {', '.join(FRONTENDS)}"
            )
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
            ("--max-set", self.max_set),
        ):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value <= 0
            ):
                raise ParameterError(f"{flag}={value} must be a positive integer")
        if self.gpus_per_worker < 0:
            raise ParameterError(f"--gpus-per-worker={self.gpus_per_worker} must be ≥ 0")
        if not self.max_duration_s > 0 or not self.flush_s > 0 or self.flush_rows <= 0:
            raise ParameterError("--max-duration and --flush-seconds must be positive")

    def frontend_for(self, *, gpu: bool) -> str:
        """``host`` or ``device``: :attr:`frontend`, ``auto`` decided by whether the
        predictors have a GPU."""
        if self.frontend == "auto":
            return "device" if gpu else "host"
        return self.frontend

    def plan(self, card: ModelCard, *, gpu: bool = False) -> LabelPlan:
        """What a run of ``card`` with these settings computes (``gpu``: its predictors
        have one)."""
        return LabelPlan.from_card(
            card,
            aggregate=self.aggregate,
            top_k=self.top_k,
            max_segments=self.max_segments,
            max_duration_s=self.max_duration_s,
            min_confidence=self.min_confidence,
            coverage=self.coverage,
            max_set=self.max_set,
            review_domain_shift=self.review_domain_shift,
            tags=self.tags,
            frontend=self.frontend_for(gpu=gpu),
        )


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
    report: str = ""  # the review page, when written
    nodes: Counter = field(default_factory=Counter)
    crashes_forgotten: int = 0
    review: Counter = field(default_factory=Counter)
    tags: Counter = field(default_factory=Counter)  # tracks with each tag among their top tags
    confidence: str = ""  # how confidence was made (calibrated or raw)
    warnings: Counter = field(default_factory=Counter)  # labelled from part of the file, by kind
    sets: str = ""  # how genre sets were made and what is flagged (empty: no calibration)
    set_sizes: Counter = field(default_factory=Counter)  # tracks by the size of their genre set
    flags_note: str = ""  # why the review flags are weaker for this model (empty: they are not)

    def format(self) -> str:
        done = self.labelled + sum(self.failed.values())
        rate = done / self.wall_s if self.wall_s > 0 else 0.0
        lines = [
            f"label: {done} files in {self.wall_s:.1f} s ({rate:.1f} tracks/s) with {self.model}: "
            f"{self.labelled} labelled, {sum(self.failed.values())} failed; "
            f"{self.already_done} of {self.found} already done",
        ]
        if self.superseded or self.retried:
            lines.append(
                f"  moved {self.superseded} parts of other models to _superseded/; "
                f"{self.retried} failed rows retried"
            )
        if self.crashes_forgotten:
            lines.append(
                f"  forgot {self.crashes_forgotten} recorded worker crash(es): "
                "those files were tried again"
            )
        if self.failed:
            lines.append(
                "  failed by reason: "
                + ", ".join(f"{r}: {n}" for r, n in self.failed.most_common())
            )
        if self.warnings:
            lines.append(
                "  labelled with a warning (less decoded than the header said; see the "
                "warning column): " + ", ".join(f"{k}: {n}" for k, n in self.warnings.most_common())
            )
        if self.genres:
            lines.append("  genres: " + ", ".join(f"{g} {n}" for g, n in self.genres.most_common()))
        if self.tags:
            lines.append(
                "  most common tags: " + ", ".join(f"{t} {n}" for t, n in self.tags.most_common(8))
            )
        if self.labelled and self.confidence:
            lines.append(f"  confidence: {self.confidence}")
        if self.labelled and self.sets:
            lines.append(f"  genre sets: {self.sets}")
        if self.set_sizes:
            lines.append("  " + _set_sizes_line(self.set_sizes))
        if self.labelled:
            flagged = sum(self.review.values())
            reasons = ", ".join(f"{r} {n}" for r, n in self.review.most_common())
            lines.append(
                f"  needs review: {flagged} of {self.labelled} ({flagged / self.labelled:.0%})"
                + (f": {reasons}" if reasons else "")
            )
            if self.flags_note:
                lines.append(f"  note: {self.flags_note}")
        if self.least_confident:
            lines.append("  least confident:")
            lines += [f"    {c:.2f}  {g:<10} {p}" for p, g, c in self.least_confident]
        if self.nodes:
            lines.append(
                f"  predicted on {len(self.nodes)} node(s): "
                + ", ".join(f"{n[:8]} {c} files" for n, c in self.nodes.most_common())
            )
        lines.append(f"  results: {self.output}" + (f" (CSV: {self.csv})" if self.csv else ""))
        if self.report:
            lines.append(f"  review page: {self.report} (open it in a browser)")
        return "\n".join(lines)


def _set_sizes_line(sizes: Counter) -> str:
    """``set sizes: 1 genre 95, 2 genres 3, empty 10 (mean 1.05)``."""
    n = sum(sizes.values())
    mean = sum(size * count for size, count in sizes.items()) / n
    parts = [
        f"{size} genre{'s' if size > 1 else ''} {sizes[size]}" for size in sorted(sizes) if size
    ]
    if sizes.get(0):
        parts.append(f"empty {sizes[0]}")
    return f"set sizes: {', '.join(parts)} (mean {mean:.2f})"


def run_label(
    source: str, output: str, *, model: LabelModel, settings: LabelSettings | None = None
) -> LabelSummary:
    """Label every file of ``source`` that ``output`` does not hold yet, then write the
    review page ``output/_report.html`` (unless ``settings.report`` is off).

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
        Bad input, output that is a file or locked by a live run, pretrained weights the
        model's features need that are not installed.
    ConfigMismatchError
        ``output`` holds labels of another model (without ``new_model_ok``), or the
        model's features come from other pretrained weights.
    """
    settings = settings or LabelSettings()
    plan = settings.plan(model.card)
    check_extractors(model.card.label_config)
    # Ray retries an address nobody listens on forever: fail before OUTPUT or its lock exist.
    check_address(settings.address)
    started = time.perf_counter()
    items, _ = list_inputs(source)
    with FolderLock(output, command="jobs.label"):
        results = ResultStore(output)
        summary = LabelSummary(
            output=output,
            model=model.name,
            found=len(items),
            confidence=_confidence_note(model.card),
            sets=_sets_note(plan),
            flags_note=_flags_note(model.card),
        )
        done = _prepare_output(results, summary, model=model, settings=settings)
        todo = [it for it in items if it["path"] not in done]
        summary.already_done = len(items) - len(todo)
        if todo:
            _label_on_ray(todo, results, summary, model=model, plan=plan, settings=settings)
        if settings.csv and results.parts():
            summary.csv = results.write_csv()
        if settings.report and results.parts():
            summary.report = write_page(output, window_s=plan.card.label_config.segment_seconds)
    summary.wall_s = time.perf_counter() - started
    return summary


def _confidence_note(card: ModelCard) -> str:
    """One line on what ``confidence`` means for this model."""
    cal, blend = card.calibration, card.blend
    mixed = (
        f"; blended with zero-shot {blend.mapping.name} at weight {blend.weight:.2f}"
        if blend is not None and blend.weight
        else ""
    )
    if cal is None:
        hint = " (--calibrate-on FOLDER fits one)" if card.zero_shot else ""
        return "raw, not calibrated" + hint
    ood = (cal.ood or {}).get("method", "none")
    return (
        f"calibrated (temperature {cal.temperature:.2f} on {cal.n_val_tracks} tracks); "
        f"out-of-taxonomy score: {ood}{mixed}"
    )


def _flags_note(card: ModelCard) -> str:
    """What a trained model reading no musicnn features lacks in its review flags (``""``
    for any other model). README, "What the flags are worth, measured", has the figures."""
    if card.zero_shot or card.calibration is None or card.musicnn_models:
        return ""
    return (
        "this model reads no musicnn features, so its flags rest on its own probabilities "
        "(weaker: on the synthetic evaluation a log-mel CNN flagged 67% of out-of-taxonomy "
        "tracks, a head on musicnn 89%) and domain_shift is not computed; extract with "
        "--features mfcc,chroma,mel,musicnn_msd,musicnn_mtt and tune again for stronger flags"
    )


def _sets_note(plan: LabelPlan) -> str:
    """One line on the run's genre sets and what it flags for review (``""``: no calibration)."""
    cal, conformal = plan.card.calibration, plan.card.conformal
    if cal is None:
        return ""
    if conformal is None:
        return (
            "none (the model's card predates them): review below its confidence threshold "
            "or above its out-of-taxonomy threshold"
        )
    coverage = conformal.coverage if plan.coverage is None else plan.coverage
    flags = [f"empty (none-fits) or more than {plan.max_set} genres (ambiguous)"]
    if plan.review_domain_shift:
        flags.append("when domain_shift is above 1 (domain-shift)")
    if plan.min_confidence is not None:
        flags.append(f"when confidence is below {plan.min_confidence:.2f} (low-confidence)")
    note = (
        f"{conformal.method} at coverage {coverage:.2f}, from {conformal.n} "
        f"{conformal.fitted_on or 'held-out tracks'}; review when a set is " + ", or ".join(flags)
    )
    if math.isinf(conformal.threshold_at(coverage)):
        note += (
            f"; {conformal.n} tracks are too few for coverage {coverage:.2f} (it needs "
            f"{conformal.min_tracks(coverage)}): every set holds every genre"
        )
    return note


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
                    f"output {results.root!r} holds labels from {', '.join(sorted(models))}, "
                    f"not {model.name}: "
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
    plan: LabelPlan,
    settings: LabelSettings,
) -> None:
    """Stream ``todo`` through decode tasks and predictor actors; write parts as rows arrive."""
    init_ray(address=settings.address, num_cpus=settings.num_cpus)
    table = {
        "labels": list(plan.labels),
        "model": model.name,
        "aggregate": plan.aggregate,
        "tags": plan.tags > 0,
    }
    buffer: list[dict[str, Any]] = []
    scored: list[tuple[str, str, float]] = []
    last_flush = time.monotonic()
    ds = _pipeline(todo, results.root, model=model, plan=plan, settings=settings)
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for i in range(len(batch["path"])):
            row = {k: v[i] for k, v in batch.items()}
            buffer.append(row)
            _count(summary, row, scored)
        # Flush by size and by time: a killed run loses at most a few seconds of work.
        if len(buffer) >= settings.flush_rows or (
            buffer and time.monotonic() - last_flush > settings.flush_s
        ):
            results.write(results_table(buffer, **table))
            buffer, last_flush = [], time.monotonic()
    if buffer:
        results.write(results_table(buffer, **table))
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
        if isinstance(row.get("warning_kind"), str) and row["warning_kind"]:
            summary.warnings[row["warning_kind"]] += 1
        for tag in row.get("tags") if isinstance(row.get("tags"), (list, np.ndarray)) else []:
            summary.tags[tag["tag"]] += 1
        if row.get("needs_review"):
            summary.review[str(row["review_reason"])] += 1
        if isinstance(row.get("genres"), (list, np.ndarray)):
            summary.set_sizes[len(row["genres"])] += 1
        scored.append((row["path"], row["genre"], float(row["confidence"])))


def _pipeline(
    todo: list[dict[str, str]],
    output: str,
    *,
    model: LabelModel,
    plan: LabelPlan,
    settings: LabelSettings,
):
    """The Ray Data plan: decode + features (CPU tasks) → predictor actors."""
    import ray

    gpus = settings.gpus_per_worker if cluster_gpus() > 0 else 0.0
    plan = dataclasses.replace(plan, frontend=settings.frontend_for(gpu=gpus > 0))
    cpus = ray.cluster_resources().get("CPU", 1.0)
    if settings.predictors:
        pool = ray.data.ActorPoolStrategy(size=settings.predictors)
    elif gpus:
        pool = ray.data.ActorPoolStrategy(size=max(1, int(cluster_gpus() / gpus)))
    else:  # CPU only: one predictor per 8 CPUs at most, grown by Ray Data when batches queue up
        pool = ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, int(cpus // 8)))
    per_task = max(1, min(settings.tracks_per_task, -(-len(todo) // int(max(1, 2 * cpus)))))
    ds = ray.data.from_items(todo, override_num_blocks=max(1, -(-len(todo) // per_task)))
    with bounded_retries():  # a task that kills its worker is tried three times, no more
        ds = ds.map_batches(
            featurize,
            batch_size=per_task,
            batch_format="numpy",
            num_cpus=1,
            max_retries=_TASK_RETRIES,
            fn_kwargs={"plan": plan, "journal": output},
        )
    return ds.map_batches(
        Predictor,
        batch_size=per_task,
        batch_format="numpy",
        compute=pool,
        num_gpus=gpus,
        # No CPU reservation: a predictor is busy a fraction of the time, and
        # reserving even half a CPU would leave a 2-CPU machine one decoding task.
        num_cpus=0,
        fn_constructor_args=(plan,),
        fn_constructor_kwargs={
            "model_bytes": (ray.put(model.keras_bytes),),
            "batch_size": settings.batch_size or (GPU_BATCH if gpus else CPU_BATCH),
        },
    )


def label_file(
    path: str, *, model: LabelModel, settings: LabelSettings | None = None
) -> dict[str, Any]:
    """Label one file in-process (no Ray): the genres and (calibrated) probabilities, best
    first, and whether it needs review.

    The same two steps as the pipeline's: :func:`genre.featurize.featurize`, then a
    :class:`genre.predictor.Predictor`, with the plan ``settings`` make of the model's card
    (default: five genres, no tags; the Ray and output settings are not used).

    Raises
    ------
    AudioFileError
        The file cannot be decoded.
    ParameterError, ConfigMismatchError
        Pretrained weights the model's features need are missing or not the same.
    """
    settings = settings or LabelSettings(top_k=5, tags=0)
    check_extractors(model.card.label_config)
    gpu = False
    if settings.frontend == "auto":  # a GPU this process sees: the front end runs on it
        backend.configure()
        gpu = backend.gpu_count() > 0
    plan = settings.plan(model.card, gpu=gpu)
    batch = featurize(
        {"path": np.array([path], object), "track_id": np.array([path], object)}, plan=plan
    )
    if batch["reason"][0]:
        raise AudioFileError(batch["reason"][0], batch["error"][0])
    row = {k: v[0] for k, v in Predictor(plan, model_bytes=model.keras_bytes)(batch).items()}
    return {
        "path": path,
        "n_segments": int(row["n_segments"]),
        "duration_s": float(row["duration_s"]),
        "warning": row["warning"] or None,
        "top": [
            (str(g), float(p)) for g, p in zip(row["top_genres"], row["top_probs"], strict=True)
        ],
        "genres": None if row["genres"] is None else list(row["genres"]),
        "needs_review": bool(row["needs_review"]),
        "review_reason": row["review_reason"],
        "ood_score": float(row["ood_score"]),
        "domain_shift": float(row["domain_shift"]),
        "tags": row.get("tags") or [],
        "model": model.name,
        "aggregate": plan.aggregate,
    }


def calibrate_zero_shot(
    model: LabelModel, folder: str, *, settings: LabelSettings | None = None
) -> LabelModel:
    """The zero-shot ``model`` with a calibration fitted on a small labelled folder.

    ``folder`` holds ``<genre>/<file>`` for genres of the mapping (at least five tracks
    in all); they are labelled zero-shot (:func:`run_label`) and the calibration is
    fitted on them (:func:`genre.zeroshot.fit_zero_shot_calibration`). The returned
    model's name gains ``-cal<hash>``: labels with and without a calibration do not mix
    in one output folder.

    Raises
    ------
    ParameterError
        No such folder, fewer than five labelled tracks, a genre the mapping does not
        name, or fewer than five of the tracks could be labelled.
    """
    card, source = model.card, f"--calibrate-on {folder}"
    tracks = [t for t in list_tracks(folder).tracks if t.genre is not None]
    unknown = sorted({t.genre for t in tracks} - set(card.labels))
    if unknown:
        raise ParameterError(
            f"{source}: genre folder(s) {', '.join(unknown)} are not genres of "
            f"the mapping ({', '.join(card.labels)})"
        )
    if len(tracks) < 5:
        raise ParameterError(
            f"{source}: found {len(tracks)} labelled tracks (<folder>/<genre>/<file>); "
            "need at least 5"
        )
    settings = dataclasses.replace(
        settings or LabelSettings(),
        tags=0,
        csv=False,
        report=False,
        retry_errors=False,
        new_model_ok=False,
        min_confidence=None,
        coverage=None,  # the model has no sets before its calibration
    )
    genre_of = {t.path: t.genre for t in tracks}
    with tempfile.TemporaryDirectory(prefix="genre-calibrate-") as d:
        listing = Path(d) / "calibration.txt"
        listing.write_text("".join(f"{t.path}\n" for t in tracks))
        run_label(str(listing), f"{d}/labels", model=model, settings=settings)
        rows = read_results(f"{d}/labels")
    rows = rows[rows["error"].isna()]
    if len(rows) < 5:
        raise ParameterError(
            f"{source}: only {len(rows)} of {len(tracks)} tracks could be labelled"
        )
    fitted, left_out = fit_zero_shot_calibration(
        rows[[f"p_{g}" for g in card.labels]].to_numpy(np.float64),
        rows["path"].map(genre_of).to_numpy(),
        labels=card.labels,
        uncovered=card.zero_shot.uncovered if card.zero_shot else (),
        source=source,
    )
    digest = hashlib.sha256(json.dumps(fitted.to_dict(), sort_keys=True).encode()).hexdigest()
    training = {
        **card.training,
        "calibrated_on": str(folder),
        "calibration_tracks": len(rows) - left_out,
        "calibration_left_out": left_out,
    }
    card = dataclasses.replace(card, calibration=fitted, training=training)
    return LabelModel(
        uri=model.uri, name=f"{model.name}-cal{digest[:6]}", card=card, keras_bytes=b""
    )


def open_model(
    uri: str,
    *,
    tracking_uri: str,
    mapping: str | None = None,
    calibrate_on: str | None = None,
    settings: LabelSettings | None = None,
) -> tuple[LabelModel, str]:
    """The model to label with, and a line to tell the user about it (or ``""``).

    ``uri`` is a registered model (:func:`resolve_model`) or ``zero-shot``: musicnn's tags
    mapped to genres by ``mapping`` (a TOML file; default the shipped ``gtzan10``), with a
    calibration fitted on the labelled folder ``calibrate_on`` when given
    (:func:`calibrate_zero_shot`).

    Raises
    ------
    ParameterError
        ``mapping`` or ``calibrate_on`` without ``zero-shot``, no such folder, or any
        reason of :func:`resolve_model`.
    """
    if uri != ZERO_SHOT:
        for flag, value in (("--mapping", mapping), ("--calibrate-on", calibrate_on)):
            if value:
                raise ParameterError(f"{flag} goes with --model zero-shot")
        return resolve_model(uri, tracking_uri=tracking_uri), ""
    if calibrate_on and not Path(calibrate_on).is_dir():
        raise ParameterError(f"--calibrate-on {calibrate_on!r} is not a folder")
    model = zero_shot_model(load_mapping(mapping))
    check_extractors(model.card.feature_config)
    if not calibrate_on:
        return model, ""
    model = calibrate_zero_shot(model, calibrate_on, settings=settings)
    cal, training = model.card.calibration, model.card.training
    left_out = training["calibration_left_out"]
    note = (
        f"zero-shot calibrated on {training['calibration_tracks']} tracks of {calibrate_on}: "
        f"temperature {cal.temperature:.2f}"
        + (
            f", genre sets ({cal.conformal.method}) at coverage {cal.conformal.coverage:.2f}"
            if cal.conformal is not None
            else f", review below {cal.min_confidence:.2f}"
        )
    )
    if left_out:
        note += (
            f" ({left_out} tracks of {', '.join(training['uncovered_genres'])} left out: "
            "no tag of the mapping covers them)"
        )
    return model, note


def format_file_label(result: dict[str, Any]) -> str:
    """What the label job prints for one file labelled by :func:`label_file`."""
    lines = [
        f"{result['path']}  ({result['duration_s']:.1f} s, "
        f"{result['n_segments']} segments, {result['model']}, {result['aggregate']})"
    ]
    lines += [
        f"  {genre:<10} {prob:6.1%}  {'█' * int(round(prob * 40))}" for genre, prob in result["top"]
    ]
    if result["genres"] is not None:
        lines.append(f"  genre set: {', '.join(result['genres']) or '(empty: none fits)'}")
    if result["domain_shift"] == result["domain_shift"]:  # not NaN
        lines.append(f"  domain shift: {result['domain_shift']:.2f} (1: validation's 95th pct.)")
    if result["needs_review"]:
        lines.append(
            f"  needs review: {result['review_reason']} (ood score {result['ood_score']:.2f})"
        )
    if result["warning"]:
        lines.append(f"  warning: {result['warning']}")
    if len(result["tags"]):
        tags = ", ".join(f"{t['tag']} {t['probability']:.2f}" for t in result["tags"])
        lines.append(f"  tags: {tags}")
    return "\n".join(lines)
