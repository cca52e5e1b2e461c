"""The review page of a labelling run: ``OUTPUT/_report.html``, one self-contained file.

What a person opens after a run: the genre distribution, the confidence, out-of-taxonomy
and domain-shift histograms, the most common tags, and the review queue, every track
flagged ``needs_review`` with its top genres, its genre set, its reason, a player on its
first labelled window and a genre picker. "download corrections" saves the picks as
``corrections.csv`` (``path,genre``: one row per corrected track, the genre a person
heard), for the tune job to take back as labels.

The page holds no external reference (inline CSS, SVG and JavaScript; it opens offline
from a ``file://`` URL). Charts are drawn here from aggregates; the rows are only in
the review queue, embedded as compact JSON (genre and reason names by index, paths
after their common folder) and shown a page of :data:`PAGE_ROWS` at a time by the
script, so a run of 100 000 tracks gives a page of a few MB that opens at once.

The player's link is relative to the page's folder when both the page and the audio
are local (so the folder can be moved with its collection beside it, or served over
HTTP). Audio on ``s3://`` gets a presigned link (:func:`genre.store.presigned_urls`,
valid :data:`genre.store.PRESIGN_EXPIRES_S`, 7 days: the page says until when, and
``jobs.report`` writes it again with fresh links); other audio gets no player.

Nothing here needs Ray; :func:`write_page` reads the folder with
:func:`genre.results.read_results`.
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import os
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from genre import store
from genre.errors import ParameterError
from genre.results import ResultStore, read_results, results_schema

__all__ = [
    "PAGE_NAME",
    "PAGE_ROWS",
    "WINDOW_S",
    "RunOverview",
    "overview",
    "review_queue",
    "render_page",
    "write_page",
    "sample_results",
]

PAGE_NAME = "_report.html"
#: Rows of the review queue shown at a time.
PAGE_ROWS = 100
#: The first labelled window's length when the model's is not known: ``FeatureConfig``'s
#: default segment. The window always starts at 0 s (``genre.audio.spread_starts``).
WINDOW_S = 3.0
#: Bins of the histograms; tags shown.
_BINS, _TOP_TAGS = 20, 15


@dataclass
class RunOverview:
    """The aggregates the page's charts draw (no rows).

    Attributes
    ----------
    files, labelled, failed, flagged : int
        Rows, rows with a genre, error rows, rows that need review.
    labels : list of str
        The model's genres (the ``p_<genre>`` columns, in order).
    genres : list of (str, int)
        Labelled tracks per top-1 genre, most first (genres with none left out).
    reasons, errors : list of (str, int)
        Flagged tracks per review reason; failed files per error reason.
    confidence : (counts, edges)
        Histogram of ``confidence`` over [0, 1], :data:`_BINS` bins.
    ood, domain_shift : (counts, edges) or None
        Histograms of ``ood_score`` and ``domain_shift`` (``None``: no values).
    tags : list of (str, int)
        Tracks with each tag among their top tags, most first (at most 15).
    models : list of str
    labeled_at : str
        The latest ``labeled_at`` (ISO, UTC).
    """

    files: int
    labelled: int
    failed: int
    flagged: int
    labels: list[str]
    genres: list[tuple[str, int]]
    reasons: list[tuple[str, int]]
    errors: list[tuple[str, int]]
    confidence: tuple[np.ndarray, np.ndarray]
    ood: tuple[np.ndarray, np.ndarray] | None
    domain_shift: tuple[np.ndarray, np.ndarray] | None
    tags: list[tuple[str, int]] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    labeled_at: str = ""


def _histogram(
    values, *, value_range: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """``np.histogram`` of the finite ``values`` (``None`` when there are none)."""
    x = np.asarray(values, dtype=np.float64)
    x = x[np.isfinite(x)]
    if not len(x):
        return None
    if value_range is None:
        lo, hi = float(x.min()), float(x.max())
        value_range = (lo, hi if hi > lo else lo + 1.0)
    return np.histogram(x, bins=_BINS, range=value_range)


def _counts(values) -> list[tuple[str, int]]:
    """``(value, count)`` of the non-null ``values``, most first, ties by name."""
    counts = Counter(v for v in values if isinstance(v, str) and v)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


#: Columns that parts written by older versions lack (read as null).
_OPTIONAL = ("genres", "needs_review", "review_reason", "ood_score", "domain_shift")


def _complete(frame):
    """``frame`` with every optional column, null where its parts had none."""
    missing = [c for c in _OPTIONAL if c not in frame]
    return frame.assign(**dict.fromkeys(missing)) if missing else frame


def overview(frame) -> RunOverview:
    """The aggregates of a results table (a frame of :func:`genre.results.read_results`)."""
    frame = _complete(frame)
    labels = [c[2:] for c in frame.columns if c.startswith("p_")]
    ok = frame["error"].isna().to_numpy()
    flagged = frame["needs_review"].fillna(False).astype(bool).to_numpy()
    tags: Counter = Counter()
    if "tags" in frame:
        tags.update(
            t["tag"]
            for found in frame["tags"].to_numpy()[ok]
            if found is not None and not isinstance(found, float)
            for t in found
        )
    latest = frame["labeled_at"].max()
    return RunOverview(
        files=len(frame),
        labelled=int(ok.sum()),
        failed=int((~ok).sum()),
        flagged=int(flagged.sum()),
        labels=labels,
        genres=_counts(frame["genre"].to_numpy()[ok]),
        reasons=_counts(frame["review_reason"].to_numpy()[flagged]),
        errors=_counts(frame["error_reason"].to_numpy()[~ok]),
        confidence=_histogram(frame["confidence"].to_numpy()[ok], value_range=(0.0, 1.0))
        or (np.zeros(_BINS, np.int64), np.linspace(0.0, 1.0, _BINS + 1)),
        ood=_histogram(frame["ood_score"].to_numpy()[ok]),
        domain_shift=_histogram(frame["domain_shift"].to_numpy()[ok]),
        tags=sorted(tags.items(), key=lambda kv: (-kv[1], kv[0]))[:_TOP_TAGS],
        models=sorted(set(frame["model"].dropna())),
        labeled_at="" if latest is None or latest != latest else latest.isoformat(),
    )


def _local_path(path: str) -> str | None:
    """The local file system path of ``path`` (plain or ``file://``), else ``None``."""
    if path.startswith("file://"):
        return urllib.parse.unquote(urllib.parse.urlparse(path).path)
    return None if store.is_uri(path) else os.path.abspath(path)


def review_queue(frame, *, page_root: str, labels: list[str], window_s: float) -> dict[str, Any]:
    """The review queue as the page embeds it: flagged tracks, least confident first.

    Returns
    -------
    dict
        ``labels``, ``reasons`` (names the rows index), ``base`` (the folder every path
        starts with), ``audio`` (the link to ``base`` from the page's folder, or ``None``),
        ``links`` (presigned links to audio in an object store, see :func:`_presigned`,
        or ``None``; no player without either), ``encoded`` (the paths are URIs, already
        percent-encoded), ``window_s``, ``page_rows`` and ``rows``: one
        ``[path after base, confidence in ‰, [genre index, ‰, …] (top genres),
        [genre index, …] or None (the set), reason index]`` per track.
    """
    frame = _complete(frame)
    flagged = frame["needs_review"].fillna(False).astype(bool).to_numpy()
    rows = frame.loc[flagged, ["path", "confidence", "top_k", "genres", "review_reason"]]
    rows = rows.sort_values(["confidence", "path"], kind="stable")
    paths = rows["path"].tolist()
    base = os.path.commonprefix(paths) if paths else ""
    base = base[: base.rfind("/") + 1]
    index = {g: i for i, g in enumerate(labels)}
    reasons = sorted({r for r in rows["review_reason"] if isinstance(r, str)})
    reason_index = {r: i for i, r in enumerate(reasons)}
    permille = np.rint(rows["confidence"].to_numpy(np.float64) * 1000).astype(int).tolist()
    genres = rows["genres"].tolist()
    out = []
    for path, conf, top, genre_set, reason in zip(
        paths, permille, rows["top_k"].tolist(), genres, rows["review_reason"].tolist(), strict=True
    ):
        top_genres: list[int] = []
        for entry in top if top is not None else ():
            top_genres += [index.get(entry["genre"], -1), round(entry["probability"] * 1000)]
        out.append(
            [
                path[len(base) :],
                conf,
                top_genres,
                None if genre_set is None else [index.get(g, -1) for g in genre_set],
                reason_index.get(reason, -1),
            ]
        )
    audio = _audio_link(base, page_root=page_root) if paths else None
    return {
        "labels": labels,
        "reasons": reasons,
        "base": base,
        "audio": audio,
        "links": _presigned(paths) if paths and audio is None else None,
        "encoded": store.is_uri(base),
        "window_s": window_s,
        "page_rows": PAGE_ROWS,
        "rows": out,
    }


def _audio_link(base: str, *, page_root: str) -> str | None:
    """The URL of the folder ``base`` relative to the page's folder (``None`` unless both
    are local: audio in an object store gets no player)."""
    audio, page = _local_path(base), _local_path(page_root)
    if audio is None or page is None or not base:
        return None
    rel = os.path.relpath(audio, page).replace(os.sep, "/")
    return urllib.parse.quote(rel.rstrip("/") + "/")


def _presigned(paths: list[str]) -> dict[str, Any] | None:
    """Presigned links to ``paths`` as the page embeds them; ``None`` when they cannot be
    made (see :func:`genre.store.presigned_urls`).

    A link is ``prefix + path + "?" + query + "&X-Amz-Signature=" + signature``. Only
    the path and the signature differ from row to row (the query holds the credential,
    the signing second and the expiry), so the queries are kept once: with the 23 374
    flagged tracks of :func:`sample_results`'s 100 000, links of ~300 characters would
    add ~7 MB to the page; kept this way the page is 3.6 MB (1.3 MB without links).

    Returns
    -------
    dict
        ``prefix``, ``expires`` (ISO time, UTC), ``queries`` (each link's query less its
        signature, kept once) and ``rows``: ``[link after prefix, query index,
        signature]`` per path, in order.
    """
    expires = _dt.datetime.now(_dt.timezone.utc) + _dt.timedelta(seconds=store.PRESIGN_EXPIRES_S)
    links = store.presigned_urls(paths)
    if links is None:
        return None
    heads, queries, signatures = [], [], []
    for link in links:
        head, _, query = link.partition("?")
        params = query.split("&")
        signature = next((p for p in params if p.startswith(_SIGNATURE)), _SIGNATURE)
        heads.append(head)
        queries.append("&".join(p for p in params if p is not signature))
        signatures.append(signature[len(_SIGNATURE) :])
    prefix = os.path.commonprefix(heads)
    prefix = prefix[: prefix.rfind("/") + 1]
    index: dict[str, int] = {}
    rows = [
        [head[len(prefix) :], index.setdefault(query, len(index)), signature]
        for head, query, signature in zip(heads, queries, signatures, strict=True)
    ]
    return {
        "prefix": prefix,
        "expires": expires.isoformat(timespec="minutes"),
        "queries": list(index),
        "rows": rows,
    }


_SIGNATURE = "X-Amz-Signature="


# ------------------------------------------------------------------------------- charts


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _bars(items: list[tuple[str, int]], *, title: str, total: int, unit: str = "tracks") -> str:
    """A horizontal bar chart (inline SVG) of ``(name, count)``, each with its share of
    ``total``."""
    if not items:
        return f'<p class="muted">{_esc(title)}: none.</p>'
    row_h, label_w, bar_w = 20, 150, 360
    top = max(n for _, n in items)
    total = max(total, 1)
    height = row_h * len(items) + 4
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {label_w + bar_w + 90} {height}" '
        f'width="{label_w + bar_w + 90}" height="{height}" aria-label="{_esc(title)}">',
        f"<title>{_esc(title)}</title>",
    ]
    for i, (name, n) in enumerate(items):
        y = i * row_h + 2
        w = max(1.0, bar_w * n / top)
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{_esc(name)}</text>'
            f'<rect class="bar" x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row_h - 5}">'
            f"<title>{_esc(name)}: {n} {unit}</title></rect>"
            f'<text x="{label_w + w + 5:.1f}" y="{y + 14}">{n} ({n / total:.0%})</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _histogram_svg(
    hist: tuple[np.ndarray, np.ndarray] | None,
    *,
    title: str,
    axis: str,
    marker: float | None = None,
) -> str:
    """A histogram (inline SVG) of ``(counts, edges)``, with a dashed line at ``marker``."""
    if hist is None:
        return f'<p class="muted">{_esc(title)}: no values in this run.</p>'
    counts, edges = hist
    width, height, pad = 420, 150, 24
    top = max(int(counts.max()), 1)
    step = (width - 2 * pad) / len(counts)
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height + 30}" width="{width}" '
        f'height="{height + 30}" aria-label="{_esc(title)}"><title>{_esc(title)}</title>'
    ]
    for i, n in enumerate(counts.tolist()):
        h = (height - pad) * n / top
        parts.append(
            f'<rect class="bar" x="{pad + i * step:.1f}" y="{height - h:.1f}" '
            f'width="{max(step - 1, 1):.1f}" height="{h:.1f}">'
            f"<title>{edges[i]:.3g} to {edges[i + 1]:.3g}: {n}</title></rect>"
        )
    lo, hi = float(edges[0]), float(edges[-1])
    parts.append(
        f'<line class="axis" x1="{pad}" y1="{height}" x2="{width - pad}" y2="{height}"/>'
        f'<text x="{pad}" y="{height + 14}">{lo:.3g}</text>'
        f'<text x="{width - pad}" y="{height + 14}" text-anchor="end">{hi:.3g}</text>'
        f'<text x="{width / 2}" y="{height + 27}" text-anchor="middle">{_esc(axis)}</text>'
        f'<text x="{pad}" y="12">max {top}</text>'
    )
    if marker is not None and lo <= marker <= hi:
        x = pad + (marker - lo) / (hi - lo) * (width - 2 * pad)
        parts.append(
            f'<line class="marker" x1="{x:.1f}" y1="{pad / 2}" x2="{x:.1f}" y2="{height}"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


# ------------------------------------------------------------------------------ the page


def _json_for_script(data: Any) -> str:
    """JSON safe inside ``<script>``: no ``<`` can end the element early."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c")


def _player_note(queue: dict[str, Any]) -> str:
    """What the page says above the queue about its players: until when presigned links
    work, or why there are none."""
    if queue["links"] is not None:
        until = queue["links"]["expires"].replace("T", " ")
        return (
            f'<p class="muted">The players use presigned links, valid until {_esc(until)} '
            "UTC: write the page again (python -m jobs.report OUTPUT) for fresh ones.</p>"
        )
    if queue["audio"] is not None or not queue["rows"]:
        return ""
    return (
        '<p class="muted">No players: the audio is not on this machine\'s file system '
        "beside the page, and presigned links could not be made (only s3:// audio gets "
        "them, signed with credentials boto3 finds).</p>"
    )


def render_page(
    frame, *, root: str, window_s: float = WINDOW_S, generated_at: str | None = None
) -> str:
    """The review page of the results ``frame`` (from :func:`genre.results.read_results`)
    written under ``root``, as one HTML document.

    Parameters
    ----------
    frame : pandas.DataFrame
        One row per file, the results table's columns.
    root : str
        The results folder the page lives in (links to local audio are relative to it).
    window_s : float > 0
        Length of the first labelled window (the model's segment), played from 0 s.
    """
    if not window_s > 0:
        raise ParameterError(f"window_s={window_s} must be positive")
    run = overview(frame)
    queue = review_queue(frame, page_root=root, labels=run.labels, window_s=window_s)
    generated_at = generated_at or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    conf = run.confidence
    facts = [
        ("files", run.files),
        ("labelled", run.labelled),
        ("failed", run.failed),
        ("needs review", f"{run.flagged} ({run.flagged / max(run.labelled, 1):.0%})"),
        ("model", ", ".join(run.models)),
        ("last labelled", run.labeled_at.replace("T", " ")),
    ]
    no_player = _player_note(queue)
    charts = [
        (
            "Genres (top-1, labelled tracks)",
            _bars(run.genres, title="genre distribution", total=run.labelled),
        ),
        (
            "Confidence",
            _histogram_svg(conf, title="confidence histogram", axis="calibrated confidence"),
        ),
        (
            "Out-of-taxonomy score",
            _histogram_svg(
                run.ood, title="out-of-taxonomy histogram", axis="ood_score (higher: less known)"
            ),
        ),
        (
            "Domain shift",
            _histogram_svg(
                run.domain_shift,
                title="domain shift histogram",
                axis="domain_shift (1: validation's 95th percentile)",
                marker=1.0,
            ),
        ),
        ("Review reasons", _bars(run.reasons, title="review reasons", total=run.flagged)),
        (
            "Most common tags (share of labelled tracks)",
            _bars(run.tags, title="most common tags", total=run.labelled),
        ),
    ]
    if run.errors:
        charts.append(
            (
                "Failed files",
                _bars(run.errors, title="failed files", total=run.failed, unit="files"),
            )
        )
    return _TEMPLATE.format(
        title=_esc(f"genre review: {root}"),
        root=_esc(root),
        style=_STYLE,
        script=_SCRIPT,
        generated=_esc(generated_at),
        facts="".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in facts),
        charts="".join(
            f"<figure><figcaption>{_esc(name)}</figcaption>{svg}</figure>" for name, svg in charts
        ),
        queued=len(queue["rows"]),
        base=_esc(queue["base"] or "(various)"),
        no_player=no_player,
        data=_json_for_script(queue),
    )


def write_page(root: str, *, window_s: float = WINDOW_S) -> str:
    """Write ``root/_report.html`` for the results under ``root``; return its location.

    Written whole: locally under a temporary name, then renamed into place; on an object
    store as one upload.

    Raises
    ------
    ParameterError
        No results under ``root`` (nothing is written), or ``window_s`` not positive.
    GenreError
        The page cannot be written (full disk, read-only folder).
    """
    frame = read_results(root)
    page = render_page(frame, root=str(root), window_s=window_s)
    fs, base = store.filesystem(root)
    store.write_bytes(fs, base, PAGE_NAME, page.encode("utf-8"))
    return store.join(str(root), PAGE_NAME)


def sample_results(
    root: str,
    *,
    tracks: int,
    labels: tuple[str, ...] = ("blues", "classical", "jazz", "metal", "rock"),
    seed: int = 0,
) -> int:
    """Write a synthetic results table of ``tracks`` rows under ``root`` (the results
    schema, one part through :class:`genre.results.ResultStore`); return how many rows
    need review.

    For ``jobs.report --smoke-test``, the tests and benchmarks: paths are
    ``<root>/audio/<genre>/<n>.wav`` (no audio is written); about one track in four
    needs review and one in fifty failed. Built column by column, so 100 000 rows take
    well under a second.
    """
    rng = np.random.default_rng(seed)
    k, n = len(labels), tracks
    probs = rng.dirichlet(np.full(k, 0.4), size=n).astype(np.float32)
    order = np.argsort(-probs, axis=1)
    i = np.arange(n)
    failed = i % 50 == 49
    flagged = ~failed & ((i % 5 == 0) | (probs[i, order[:, 0]] < 0.35))
    names = np.array(labels, dtype=object)
    genre = names[order[:, 0]]
    ok = ~failed
    reasons = np.array(["ambiguous", "none-fits", "domain-shift", "out-of-taxonomy"], object)
    vocabulary = np.array(["guitar", "piano", "drums", "vocal", "slow", "fast", "quiet"], object)

    def lists(values: pa.Array, sizes: np.ndarray, valid: np.ndarray) -> pa.Array:
        offsets = np.concatenate([[0], np.cumsum(np.where(valid, sizes, 0))]).astype(np.int32)
        return pa.ListArray.from_arrays(pa.array(offsets), values, mask=pa.array(~valid))

    top3 = order[:, :3]
    top_k = pa.StructArray.from_arrays(
        [
            pa.array(names[top3[ok]].ravel(), pa.string()),
            pa.array(probs[i[ok, None], top3[ok]].ravel()),
        ],
        names=["genre", "probability"],
    )
    set_sizes = 1 + i % 3
    sets = [names[top3[j, : set_sizes[j]]] for j in i[ok]]
    tags = pa.StructArray.from_arrays(
        [
            pa.array(
                vocabulary[(i[ok, None] + np.arange(3)) % len(vocabulary)].ravel(), pa.string()
            ),
            pa.array(np.full(3 * ok.sum(), 0.5, np.float32)),
        ],
        names=["tag", "probability"],
    )
    paths = np.char.add(np.char.add(f"{str(root).rstrip('/')}/audio/", genre.astype(str)), "/")
    paths = np.char.add(paths, np.char.add(np.char.zfill(i.astype(str), 6), ".wav"))
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    columns = {
        "path": pa.array(paths.tolist(), pa.string()),
        "track_id": pa.array([p.split("/audio/", 1)[1] for p in paths.tolist()], pa.string()),
        "genre": pa.array(np.where(ok, genre, None), pa.string()),
        "confidence": pa.array(probs[i, order[:, 0]], mask=failed),
        "genres": lists(pa.array(np.concatenate(sets) if sets else [], pa.string()), set_sizes, ok),
        "needs_review": pa.array(flagged, mask=failed),
        "review_reason": pa.array(np.where(flagged, reasons[i % len(reasons)], None), pa.string()),
        "ood_score": pa.array(rng.normal(size=n).astype(np.float32), mask=failed),
        "domain_shift": pa.array(rng.gamma(4.0, 0.2, size=n).astype(np.float32), mask=failed),
        "top_k": lists(top_k, np.full(n, 3), ok),
        **{f"p_{g}": pa.array(probs[:, j], mask=failed) for j, g in enumerate(labels)},
        "tags": lists(tags, np.full(n, 3), ok),
        "n_segments": pa.array(np.full(n, 10, np.int32)),
        "duration_s": pa.array(np.full(n, 30.0, np.float32)),
        "warning": pa.nulls(n, pa.string()),
        "model": pa.array(["sample/1"] * n, pa.string()),
        "aggregate": pa.array(["mean"] * n, pa.string()),
        "error": pa.array(np.where(failed, "truncated: less than one segment", None), pa.string()),
        "error_reason": pa.array(np.where(failed, "truncated", None), pa.string()),
        "labeled_at": pa.array([now] * n, pa.timestamp("s", tz="UTC")),
    }
    table = pa.Table.from_pydict(columns, schema=results_schema(list(labels), tags=True))
    with store.FolderLock(root, command="genre.review_page.sample_results"):
        ResultStore(root).write(table)
    return int(flagged.sum())


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { font-size: 1.3rem; margin: 0 0 .3rem; } h2 { font-size: 1.1rem; margin-top: 1.6rem; }
.muted { color: #777; } code { font-size: 90%; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: .1rem 1rem; }
dl.facts dt { color: #666; } dl.facts dd { margin: 0; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem 2rem; }
figure { margin: 0; } figcaption { font-weight: 600; margin-bottom: .3rem; }
svg.chart { font-size: 11px; } svg.chart .bar { fill: #4a7ab5; }
svg.chart .axis { stroke: #888; } svg.chart .marker { stroke: #c33; stroke-dasharray: 4 3; }
table { border-collapse: collapse; width: 100%; margin-top: .5rem; }
th, td { border-bottom: 1px solid #ddd; padding: .25rem .4rem; text-align: left;
  vertical-align: top; }
th { background: #f4f4f4; position: sticky; top: 0; }
td.num { text-align: right; white-space: nowrap; } td.path { overflow-wrap: anywhere; }
audio { height: 28px; width: 220px; display: block; margin-top: .2rem; }
.bar-tools { display: flex; flex-wrap: wrap; gap: .6rem; align-items: center;
  margin: .5rem 0; }
button { font: inherit; padding: .2rem .7rem; }
tr.picked { background: #eef7ee; }
"""

_SCRIPT = r"""
(function () {
  "use strict";
  const q = JSON.parse(document.getElementById("queue-data").textContent);
  const key = "genre-corrections:" + location.pathname;
  const picked = new Map();
  try {
    for (const [p, g] of JSON.parse(localStorage.getItem(key) || "[]")) picked.set(p, g);
  } catch (e) { /* no storage (a private window): picks live as long as the page */ }
  const $ = (id) => document.getElementById(id);
  let view = q.rows.map((_, i) => i);
  let page = 0;
  const pct = (permille) => (permille / 10).toFixed(permille < 100 ? 1 : 0) + "%";
  const genre = (i) => (i >= 0 ? q.labels[i] : "?");
  const encode = (rest) => rest.split("/").map(encodeURIComponent).join("/");
  const decode = (rest) => { try { return decodeURIComponent(rest); } catch (e) { return rest; } };
  const signed = (links, i) => {
    const [head, query, signature] = links.rows[i];
    return links.prefix + head + "?" + links.queries[query] +
      (signature ? "&X-Amz-Signature=" + signature : "");
  };

  function save() {
    try { localStorage.setItem(key, JSON.stringify([...picked])); } catch (e) {}
    $("picked-count").textContent = picked.size;
    $("download").disabled = picked.size === 0;
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function row(i) {
    const [rest, conf, top, set, reason] = q.rows[i];
    const path = q.base + rest;
    const tr = document.createElement("tr");
    tr.dataset.path = path;
    cell(tr, String(i + 1), "num");
    const where = cell(tr, q.encoded ? decode(rest) : rest, "path");
    where.title = path;
    const src = q.links !== null ? signed(q.links, i)
      : q.audio !== null ? q.audio + (q.encoded ? rest : encode(rest)) : null;
    if (src !== null) {
      const audio = document.createElement("audio");
      audio.controls = true;
      audio.preload = "none";
      audio.src = src + "#t=0," + q.window_s;
      where.appendChild(audio);
    }
    cell(tr, pct(conf), "num");
    const tops = [];
    for (let j = 0; j < top.length; j += 2) tops.push(genre(top[j]) + " " + pct(top[j + 1]));
    cell(tr, tops.join(" · "));
    cell(tr, set === null ? "—" : set.length ? set.map(genre).join(", ") : "(empty: none fits)");
    cell(tr, reason >= 0 ? q.reasons[reason] : "");
    const select = document.createElement("select");
    select.className = "pick";
    select.add(new Option("—", ""));
    for (const g of q.labels) select.add(new Option(g, g));
    select.value = picked.get(path) || "";
    tr.classList.toggle("picked", picked.has(path));
    select.addEventListener("change", () => {
      if (select.value) picked.set(path, select.value); else picked.delete(path);
      tr.classList.toggle("picked", picked.has(path));
      save();
    });
    cell(tr, "").appendChild(select);
    return tr;
  }

  function render() {
    const pages = Math.max(1, Math.ceil(view.length / q.page_rows));
    page = Math.min(Math.max(page, 0), pages - 1);
    const start = page * q.page_rows;
    const body = $("queue-body");
    body.replaceChildren(...view.slice(start, start + q.page_rows).map(row));
    $("page-info").textContent =
      "page " + (page + 1) + " of " + pages + " (" + view.length + " tracks)";
    $("prev").disabled = $("first").disabled = page === 0;
    $("next").disabled = $("last").disabled = page >= pages - 1;
  }

  function csvField(s) {
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function download() {
    const lines = ["path,genre"];
    for (const [p, g] of picked) lines.push(csvField(p) + "," + csvField(g));
    const blob = new Blob([lines.join("\n") + "\n"], { type: "text/csv" });
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "corrections.csv";
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }

  const filter = $("reason-filter");
  for (const r of q.reasons) filter.add(new Option(r, r));
  filter.addEventListener("change", () => {
    const r = q.reasons.indexOf(filter.value);
    view = q.rows.map((_, i) => i).filter((i) => r < 0 || q.rows[i][4] === r);
    page = 0;
    render();
  });
  $("first").onclick = () => { page = 0; render(); };
  $("prev").onclick = () => { page -= 1; render(); };
  $("next").onclick = () => { page += 1; render(); };
  $("last").onclick = () => { page = Infinity; render(); };
  $("download").onclick = download;
  $("clear").onclick = () => { picked.clear(); save(); render(); };
  save();
  render();
})();
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{style}</style></head>
<body>
<h1>Labelling run: <code>{root}</code></h1>
<p class="muted">Page made {generated} UTC by genre; <code>python -m jobs.report OUTPUT</code>
makes it again.</p>
<dl class="facts">{facts}</dl>
<h2>The run</h2>
<div class="charts">{charts}</div>
<h2 id="review">Review queue: {queued} tracks</h2>
<p>Tracks flagged <code>needs_review</code>, least confident first, paths under
<code>{base}</code>. Listen to the first labelled window, pick the genre you hear, then
<b>download corrections</b>: <code>corrections.csv</code> (<code>path,genre</code>, one row per
picked track). Picks are kept in this browser until cleared.</p>
{no_player}
<div class="bar-tools">
<label>reason <select id="reason-filter"><option value="">all</option></select></label>
<button id="first">«</button><button id="prev">‹</button>
<span id="page-info"></span>
<button id="next">›</button><button id="last">»</button>
<span><span id="picked-count">0</span> picked</span>
<button id="download">download corrections</button>
<button id="clear">clear picks</button>
</div>
<table id="queue"><thead><tr><th>#</th><th>track</th><th>confidence</th><th>top genres</th>
<th>genre set</th><th>reason</th><th>genre</th></tr></thead>
<tbody id="queue-body"></tbody></table>
<script type="application/json" id="queue-data">{data}</script>
<script>{script}</script>
</body></html>
"""
