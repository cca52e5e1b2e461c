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


def test_every_clip_extracts_to_its_whole_segments_with_its_genre(tmp_path):
    import pandas as pd
    import soundfile as sf

    result = run_job(
        "jobs.extract",
        str(GTZAN_MINI),
        str(tmp_path / "shards"),
        "--num-cpus",
        "2",
        "--features",
        "mfcc",
    )
    assert result.returncode == 0, result.stderr
    clips = sorted(GTZAN_MINI.glob("*/*.flac"))
    expected = {f"{p.parent.name}/{p.name}": int(sf.info(str(p)).duration // 3) for p in clips}
    assert len(expected) == 50 and set(expected.values()) <= {9, 10}  # a few clips are 29.9 s long
    assert (
        f"50 tracks → {sum(expected.values())} segments" in result.stdout
        and "0 skipped" in result.stdout
    )
    rows = pd.read_parquet(tmp_path / "shards", columns=["track_id", "genre"])
    assert rows.groupby("track_id").size().to_dict() == expected
    assert (rows.genre == rows.track_id.str.split("/").str[0]).all()
    assert json.loads((tmp_path / "shards" / "_manifest.json").read_text())["tracks"] == 50


def test_the_clips_are_recognised_as_a_small_part_of_gtzan():
    from genre.corpus import gtzan_coverage, list_tracks

    ids = [t.track_id for t in list_tracks(str(GTZAN_MINI)).tracks]
    assert (
        0.04 < gtzan_coverage(ids) < 0.06
    )  # so split=auto stays random instead of the published lists
