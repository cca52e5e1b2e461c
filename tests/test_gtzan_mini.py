"""Real music: the 50 GTZAN clips of ../shared/data/gtzan-mini go through extract cleanly.

Skipped when the folder is absent (it is not part of the repository). Accuracy on these clips
is measured by ``make eval-gtzan``, not asserted here.
"""

import json

import pytest

from tests.conftest import SHARED_DATA, run_job

GTZAN_MINI = SHARED_DATA / "gtzan-mini"

pytestmark = [
    pytest.mark.gtzan,
    pytest.mark.slow,
    pytest.mark.skipif(not GTZAN_MINI.is_dir(), reason="../shared/data/gtzan-mini is absent"),
]


def test_every_clip_extracts_to_ten_labelled_segments(tmp_path):
    result = run_job("jobs.extract", str(GTZAN_MINI), str(tmp_path / "shards"), "--num-cpus", "2", "--features", "mfcc")
    assert result.returncode == 0, result.stderr
    assert "50 tracks → 500 segments" in result.stdout and "0 skipped" in result.stdout
    manifest = json.loads((tmp_path / "shards" / "_manifest.json").read_text())
    assert manifest["tracks"] == 50


def test_the_clips_are_recognised_as_a_small_part_of_gtzan():
    from genre.corpus import gtzan_coverage, list_tracks

    ids = [t.track_id for t in list_tracks(str(GTZAN_MINI)).tracks]
    assert 0.04 < gtzan_coverage(ids) < 0.06  # so split=auto stays random instead of the published lists
