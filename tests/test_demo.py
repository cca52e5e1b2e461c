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
    for step in ("1/5 synth", "2/5 extract", "3/5 tune", "4/5 label", "5/5 results"):
        assert step in out
    assert "30 tracks → 60 segments" in out
    assert "registered genre version 1" in out
    assert "30 labelled, 4 failed" in out
    assert "broken files reported with an error: 4 of 4" in out
    for picture in ("confusion_test.png", "curves_by_model.png", "genre_panels.png"):
        assert (tmp_path / "demo" / "figures" / picture).stat().st_size > 10_000
    import pandas as pd

    assert len(pd.read_parquet(tmp_path / "demo" / "labels")) == 34
