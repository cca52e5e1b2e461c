"""The review page of a labelling run (``OUTPUT/_report.html``): its aggregates, its HTML,
``jobs.report``, and the page itself in headless Chromium (skipped without it).

The label job writing the page is checked in ``tests/test_label.py``, on the run its
tests share.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from pathlib import Path

import pytest

from genre.errors import ParameterError
from genre.results import ResultStore, read_results, results_table
from genre.review_page import (
    PAGE_NAME,
    PAGE_ROWS,
    overview,
    render_page,
    review_queue,
    sample_results,
    write_page,
)
from genre.store import FolderLock
from tests import browser
from tests.conftest import one_error_line, run_job, tone, write_audio

LABELS = ["blues", "jazz", "rock"]
#: (relative path, top genres with probabilities, genre set, review reason, error reason)
TRACKS = [
    ("a/one.wav", [("rock", 0.9), ("jazz", 0.07), ("blues", 0.03)], ["rock"], None, None),
    ("a/two.wav", [("rock", 0.8), ("blues", 0.15), ("jazz", 0.05)], ["rock"], None, None),
    (
        'b/three, "quoted".wav',
        [("jazz", 0.4), ("blues", 0.35), ("rock", 0.25)],
        ["jazz", "blues", "rock"],
        "ambiguous",
        None,
    ),
    (
        "b/fünf und zwanzig.wav",
        [("blues", 0.5), ("rock", 0.3), ("jazz", 0.2)],
        [],
        "none-fits",
        None,
    ),
    ("broken.wav", None, None, None, "truncated"),
]


def _row(root: Path, path: str, top, genre_set, reason, error) -> dict:
    probs = dict(top or [(g, 0.0) for g in LABELS])
    return {
        "path": str(root / path),
        "track_id": path,
        "genre": top[0][0] if top else None,
        "confidence": top[0][1] if top else None,
        "genres": genre_set,
        "top_genres": [g for g, _ in top or []],
        "top_probs": [p for _, p in top or []],
        **{f"p_{g}": probs[g] for g in LABELS},
        "needs_review": reason is not None,
        "review_reason": reason,
        "ood_score": 0.5 if reason else -1.0,
        "domain_shift": 1.5 if reason else 0.4,
        "tags": [{"tag": "guitar", "probability": 0.6}]
        + ([{"tag": "slow", "probability": 0.3}] if reason else []),
        "n_segments": 0 if error else 3,
        "duration_s": 9.0,
        "reason": error or "",
        "error": f"{path}: {error}" if error else "",
    }


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """A results folder of five tracks (two to review, one failed), written by the results
    writer; their audio (3 s tones) is in ``collection/`` beside it."""
    work = tmp_path_factory.mktemp("review")
    out = work / "labels"
    for path, *_ in TRACKS:
        write_audio(
            work / "collection" / path, tone(seconds=3.0, sample_rate=8000), sample_rate=8000
        )
    rows = [_row(work / "collection", *track) for track in TRACKS]
    with FolderLock(str(out), command="tests"):
        ResultStore(str(out)).write(
            results_table(rows, labels=LABELS, model="genre-test/1", aggregate="mean", tags=True)
        )
    return out


def _queue_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="queue-data">(.*?)</script>', page, re.S)
    return json.loads(found[1])


def test_overview_counts_genres_reasons_tags_and_failures(small):
    run = overview(read_results(str(small)))
    assert (run.files, run.labelled, run.failed, run.flagged) == (5, 4, 1, 2)
    assert run.labels == LABELS
    assert run.genres == [("rock", 2), ("blues", 1), ("jazz", 1)]
    assert run.reasons == [("ambiguous", 1), ("none-fits", 1)]
    assert run.errors == [("truncated", 1)]
    assert run.tags == [("guitar", 4), ("slow", 2)]
    assert run.models == ["genre-test/1"]


def test_histograms_hold_every_labelled_track(small):
    run = overview(read_results(str(small)))
    counts, edges = run.confidence
    assert counts.sum() == 4 and edges[0] == 0.0 and edges[-1] == 1.0
    assert counts[-3:].sum() == 1  # at 0.85 or more: one.wav (0.9) only
    assert run.ood[0].sum() == 4 and run.domain_shift[0].sum() == 4


def test_review_queue_is_the_flagged_tracks_least_confident_first(small):
    frame = read_results(str(small))
    queue = review_queue(frame, page_root=str(small), labels=LABELS, window_s=3.0)
    collection = str(small.parent / "collection")
    assert queue["base"] == f"{collection}/b/"
    assert [queue["base"] + row[0] for row in queue["rows"]] == [
        f'{collection}/b/three, "quoted".wav',
        f"{collection}/b/fünf und zwanzig.wav",
    ]
    (_, conf, top, genre_set, reason), (_, _, _, empty_set, _) = queue["rows"]
    assert conf == 400 and top == [1, 400, 0, 350, 2, 250]  # jazz 40 %, blues 35 %, rock 25 %
    assert [LABELS[g] for g in genre_set] == ["jazz", "blues", "rock"] and empty_set == []
    assert [queue["reasons"][row[4]] for row in queue["rows"]] == ["ambiguous", "none-fits"]


def test_player_links_are_relative_to_the_page_folder(small):
    frame = read_results(str(small))
    queue = review_queue(frame, page_root=str(small), labels=LABELS, window_s=3.0)
    assert queue["audio"] == "../collection/b/"
    assert not queue["encoded"]  # the page's script encodes each path
    as_uri = review_queue(frame, page_root=small.as_uri(), labels=LABELS, window_s=3.0)
    assert as_uri["audio"] == "../collection/b/"


def test_file_uris_are_linked_as_they_are_already_encoded(small):
    """Listing a ``file://`` INPUT gives percent-encoded paths: linked without encoding again."""
    frame = read_results(str(small))
    frame["path"] = [Path(p).as_uri() for p in frame["path"]]
    queue = review_queue(frame, page_root=str(small), labels=LABELS, window_s=3.0)
    assert queue["audio"] == "../collection/b/" and queue["encoded"]
    assert queue["rows"][0][0] == "three%2C%20%22quoted%22.wav"


def test_object_store_audio_without_credentials_gets_no_player_and_the_page_says_so(
    small, monkeypatch, tmp_path
):
    """No credentials to sign with: no link (tests/test_s3.py checks the presigned ones)."""
    for name in (
        "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    frame = read_results(str(small))
    frame["path"] = "s3://bucket/music/" + frame["track_id"]
    page = render_page(frame, root=str(small))
    assert _queue_data(page)["audio"] is None and _queue_data(page)["links"] is None
    assert "No players" in page and "presigned links could not be made" in page


def test_the_page_is_one_self_contained_file(small):
    page = render_page(read_results(str(small)), root=str(small))
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)
    assert "<link" not in page and "<script src" not in page and "@import" not in page
    assert page.count('<svg class="chart"') >= 6  # genres, 3 histograms, reasons, tags (+failed)
    data = _queue_data(page)
    assert len(data["rows"]) == 2 and data["page_rows"] == PAGE_ROWS and data["window_s"] == 3.0


def test_a_path_cannot_end_the_script_element(small):
    frame = read_results(str(small))
    frame.loc[frame["needs_review"].fillna(False).astype(bool), "path"] = "/m/</script><b>x.wav"
    page = render_page(frame, root=str(small))
    assert page.count("</script>") == 2 and "<b>x" not in page
    data = _queue_data(page)
    assert data["base"] + data["rows"][0][0] == "/m/</script><b>x.wav"


def test_write_page_through_a_uri_and_not_without_results(small, tmp_path):
    written = write_page(small.as_uri())
    assert written == f"{small.as_uri()}/{PAGE_NAME}" and (small / PAGE_NAME).stat().st_size
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ParameterError, match="no results"):
        write_page(str(empty))
    assert not any(empty.iterdir())


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, int]:
    """100 000 synthetic tracks and their page; the time to write the page is printed."""
    out = tmp_path_factory.mktemp("big") / "labels"
    flagged = sample_results(str(out), tracks=100_000)
    started = time.perf_counter()
    write_page(str(out))
    took = time.perf_counter() - started
    size = (out / PAGE_NAME).stat().st_size
    print(
        f"\nreview page of 100 000 tracks ({flagged} to review): {took:.2f} s, {size / 1e6:.2f} MB"
    )
    return out, flagged


def test_a_page_of_100_000_tracks_embeds_the_queue_not_the_rows(big):
    out, flagged = big
    page = (out / PAGE_NAME).read_text(encoding="utf-8")
    assert len(_queue_data(page)["rows"]) == flagged > 20_000
    assert "<tr data-path" not in page  # the script makes one page of rows at a time
    assert len(page.encode()) < 60 * flagged  # compact: under 60 bytes a queued track


# ---------------------------------------------------------------------------- jobs.report


def test_report_job_rebuilds_the_page(small):
    (small / PAGE_NAME).unlink(missing_ok=True)
    result = run_job("jobs.report", str(small), env={})
    assert result.returncode == 0, result.stderr
    assert PAGE_NAME in result.stdout and (small / PAGE_NAME).exists()


@pytest.mark.parametrize("kind", ["missing", "empty"])
def test_report_job_without_results_is_one_line_and_creates_nothing(tmp_path, kind):
    target = tmp_path / "labels"
    if kind == "empty":
        target.mkdir()
    line = one_error_line(run_job("jobs.report", str(target), env={}))
    assert str(target) in line
    assert (not target.exists()) if kind == "missing" else not any(target.iterdir())


# ------------------------------------------------------------------------- in the browser

needs_chromium = pytest.mark.skipif(
    browser.chromium() is None,
    reason="headless Chromium is not installed (apt-get install chromium): page not opened",
)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    with browser.Browser(tmp_path_factory.mktemp("chromium")) as b:
        yield b


def _download(chromium, tab) -> list[list[str]]:
    target = chromium.downloads / "corrections.csv"
    target.unlink(missing_ok=True)
    tab.js("document.getElementById('download').click()")
    deadline = time.time() + 30
    while not target.exists() and time.time() < deadline:
        time.sleep(0.1)
    return list(csv.reader(io.StringIO(target.read_text(encoding="utf-8"))))


def _pick(tab, row: int, genre: str) -> str:
    """Pick ``genre`` in the picker of the ``row``-th row shown; return the row's path."""
    return tab.js(
        f"""(() => {{
        const tr = document.querySelectorAll('#queue-body tr')[{row}];
        const select = tr.querySelector('select.pick');
        select.value = {json.dumps(genre)};
        select.dispatchEvent(new Event('change', {{bubbles: true}}));
        return tr.dataset.path;
    }})()"""
    )


@needs_chromium
def test_browser_pages_100_000_tracks_and_downloads_the_picked_genre(big, chromium):
    out, flagged = big
    tab = chromium.open(out / PAGE_NAME)
    tab.wait_for("document.querySelectorAll('#queue-body tr').length > 0")
    assert tab.js("document.querySelectorAll('#queue-body tr').length") == PAGE_ROWS
    assert tab.js("document.querySelectorAll('svg.chart rect.bar').length") > 20
    pages = -(-flagged // PAGE_ROWS)
    assert tab.js("document.getElementById('page-info').textContent") == (
        f"page 1 of {pages} ({flagged} tracks)"
    )
    first = tab.js("document.querySelector('#queue-body audio').getAttribute('src')")
    assert first.startswith("audio/") and first.endswith("#t=0,3")
    path = _pick(tab, 0, "jazz")
    tab.js("document.getElementById('next').click()")
    assert tab.js("document.getElementById('page-info').textContent").startswith("page 2 of")
    assert tab.js("document.querySelectorAll('#queue-body tr').length") == PAGE_ROWS
    assert _download(chromium, tab) == [["path", "genre"], [path, "jazz"]]


@needs_chromium
def test_browser_corrections_keep_commas_and_quotes_in_paths(small, chromium):
    write_page(str(small))
    tab = chromium.open(small / PAGE_NAME)
    tab.wait_for("document.querySelectorAll('#queue-body tr').length === 2")
    tab.js("document.getElementById('clear').click()")
    # The first player's link reaches its file: the browser reads its header (plays nothing).
    audio = "document.querySelector('#queue-body audio')"
    tab.js(f"(() => {{ const a = {audio}; a.preload = 'metadata'; a.load(); }})()")
    tab.wait_for(f"{audio}.readyState >= 1 || {audio}.error !== null")
    assert tab.js(f"{audio}.error") is None and tab.js(f"{audio}.duration") == pytest.approx(3.0)
    assert _pick(tab, 0, "blues") == str(small.parent / "collection" / 'b/three, "quoted".wav')
    _pick(tab, 1, "rock")
    assert _download(chromium, tab) == [
        ["path", "genre"],
        [str(small.parent / "collection" / 'b/three, "quoted".wav'), "blues"],
        [str(small.parent / "collection" / "b/fünf und zwanzig.wav"), "rock"],
    ]
