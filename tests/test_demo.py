"""The README's first command, at smoke-test size: every step of the pipeline in one run."""

import pytest

from tests.conftest import run_job

pytestmark = pytest.mark.slow


def test_demo_smoke_test_runs_every_step_and_reports_accuracy(tmp_path):
    result = run_job(
        "jobs.demo", str(tmp_path / "demo"), "--smoke-test", "--num-cpus", "2", timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    steps = ("synth", "extract", "tune", "label", "zero-shot", "results", "corrections")
    for i, step in enumerate(steps, 1):
        assert f"{i}/7 {step}" in out
    assert "zero-shot (no training" in out and "musicnn's top tags per track" in out
    assert "42 tracks → 84 segments" in out  # 30 of the genres, 12 of _other/ (6 styles)
    assert "registered genre version 1" in out
    assert "42 labelled, 4 failed" in out
    assert "broken files reported with an error: 4 of 4" in out
    # The review loop closed: two corrections taken back by one trial tuned again on them.
    assert "labels: 2 from corrections (files corrections.csv sha256 " in out
    assert "corrections: 2 labels from corrections.csv" in out
    assert "→ genre-corrected version 1" in out
    assert "_other/" in out and "review_reason" in out and "genres" in out
    assert "genre sets on the held-out test tracks:" in out and "(coverage " in out
    assert "genre sets: lac at coverage 0.90, from " in out and "set sizes: " in out
    for picture in ("confusion_test.png", "curves_by_model.png", "genre_panels.png"):
        assert (tmp_path / "demo" / "figures" / picture).stat().st_size > 10_000
    import pandas as pd

    labels = pd.read_parquet(tmp_path / "demo" / "labels")
    assert len(labels) == 46
    ok = labels[labels.error.isna()]
    assert ok.genres.notna().all() and ok.domain_shift.notna().all()
    flagged = ok.genres.map(len).pipe(lambda size: (size == 0) | (size > 2))
    assert (ok.needs_review == flagged).all()  # label's defaults: the sets alone decide
    zero_shot = pd.read_parquet(tmp_path / "demo" / "labels-zero-shot")
    assert len(zero_shot) == 42 and zero_shot.tags.map(len).eq(5).all()
