"""The extract job end to end, through its command line, on a real local Ray runtime."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, run_job, tone, write_audio
from tests.test_failures import make_bad_files

pytestmark = pytest.mark.slow

# (genre, extension, sample rate, channels, seconds): every accepted format and odd input.
GOOD = [
    ("blues", ".wav", 22050, 1, 9.2),
    ("blues", ".flac", 44100, 2, 6.1),
    ("jazz", ".ogg", 48000, 2, 7.0),
    ("jazz", ".mp3", 44100, 2, 9.5),
    ("rock", ".au", 8000, 1, 3.4),
    ("rock", ".aiff", 16000, 1, 12.0),
]


def _rows(out):
    return pq.read_table(sorted(str(p) for p in out.glob("part-*.parquet"))).to_pandas()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    for i, (genre, ext, sr, ch, sec) in enumerate(GOOD):
        write_audio(
            root / genre / f"{genre}.{i:05d}{ext}",
            tone(seconds=sec, sample_rate=sr, channels=ch, freq_hz=200 + 50 * i),
            sample_rate=sr,
        )
    write_audio(
        root / "unlabelled" / "deeper" / "loose.wav",
        tone(seconds=3.5, sample_rate=22050),
        sample_rate=22050,
    )
    bad = make_bad_files(root / "broken")
    (root / "rock" / "cover.jpg").write_bytes(b"\xff\xd8 not audio")
    return root, bad


@pytest.fixture(scope="module")
def extracted(corpus, tmp_path_factory):
    root, _ = corpus
    out = tmp_path_factory.mktemp("shards")
    result = run_job("jobs.extract", str(root), str(out), "--num-cpus", "2")
    return out, result


def test_job_extracts_every_good_file_and_reports_each_bad_one(corpus, extracted):
    root, bad = corpus
    out, result = extracted
    assert result.returncode == 0, result.stderr
    rows = _rows(out)
    expected_segments = {
        f"{g}/{g}.{i:05d}{e}": int(sec // 3) for i, (g, e, _, _, sec) in enumerate(GOOD)
    }
    expected_segments["unlabelled/deeper/loose.wav"] = 1
    assert rows.groupby("track_id").size().to_dict() == expected_segments
    assert not rows.duplicated(["track_id", "segment"]).any()
    assert rows.set_index("track_id")["genre"].dropna().to_dict() == {
        k: k.split("/")[0] for k in expected_segments if not k.startswith("unl")
    }
    errors = pq.read_table(out / "_errors.parquet").to_pandas()
    assert sorted(errors.track_id) == sorted(f"broken/{n}" for n in bad)
    for name, reasons in bad.items():
        assert errors.set_index("track_id").loc[f"broken/{name}", "reason"] in reasons
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["tracks"] == 7 and manifest["segments"] == sum(expected_segments.values())
    assert "7 tracks → 16 segments" in result.stdout and f"{len(bad)} skipped" in result.stdout
    assert "realtime" in result.stdout and "h of audio" in result.stdout
    assert "1 non-audio files ignored" in result.stdout


def test_rerun_is_idempotent(corpus, extracted):
    root, bad = corpus
    out, _ = extracted
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")}
    again = run_job("jobs.extract", str(root), str(out), "--num-cpus", "2")
    assert again.returncode == 0, again.stderr
    assert "0 tracks → 0 segments" in again.stdout and "7 already extracted" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("part-*.parquet")} == before
    assert len(pq.read_table(out / "_errors.parquet")) == len(bad)


def test_changed_feature_config_is_refused(corpus, extracted):
    root, _ = corpus
    out, _ = extracted
    result = run_job("jobs.extract", str(root), str(out), "--features", "mfcc", timeout=120)
    assert (
        result.returncode == 2
        and "new output folder" in result.stderr
        and "Traceback" not in result.stderr
    )


def test_killed_driver_then_rerun_gives_exactly_the_full_set(tmp_path):
    root = tmp_path / "big"
    n_tracks = 24
    for i in range(n_tracks):
        genre = ("pop", "metal", "disco")[i % 3]
        write_audio(
            root / genre / f"{genre}.{i:05d}.flac",
            tone(seconds=30.0, sample_rate=22050, freq_hz=150 + 10 * i),
            sample_rate=22050,
        )
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "jobs.extract",
        str(root),
        str(out),
        "--num-cpus",
        "1",
        "--tracks-per-shard",
        "1",
    ]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 180
    while time.time() < deadline and len(list(out.glob("part-*.parquet"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # let tasks already in flight in the killed run's workers land or die
    at_kill = len(list(out.glob("part-*.parquet")))
    assert 2 <= at_kill < n_tracks, (
        "the run must be interrupted part-way for this test to mean anything"
    )
    result = run_job("jobs.extract", str(root), str(out), "--num-cpus", "2")
    assert result.returncode == 0, result.stderr
    assert f"{at_kill} already extracted" in result.stdout
    rows = _rows(out)
    assert len(rows) == n_tracks * 10
    assert not rows.duplicated(["track_id", "segment"]).any()
    assert rows.track_id.nunique() == n_tracks
    assert not list(out.glob(".tmp-*"))


def test_smoke_test_flag_runs_on_a_generated_corpus(tmp_path):
    result = run_job("jobs.extract", "--smoke-test", "--num-cpus", "2")
    assert result.returncode == 0, result.stderr
    assert "10 tracks → 20 segments" in result.stdout
    scratch = re.search(r"(/\S*genre-smoke-[^/\s]+)/", result.stdout)
    assert scratch and not Path(scratch[1]).exists(), "the scratch folder is removed"


def test_uris_go_through_pyarrow_filesystems(corpus, tmp_path):
    """``file://`` takes the same code path as ``s3://``/``gs://``.

    Listing, reading and writing all go through pyarrow.
    """
    root, bad = corpus
    out = tmp_path / "shards"
    result = run_job(
        "jobs.extract", root.as_uri(), out.as_uri(), "--num-cpus", "2", "--features", "mfcc"
    )
    assert result.returncode == 0, result.stderr
    rows = _rows(out)
    assert rows.track_id.nunique() == 7 and rows.path.str.startswith("file://").all()
    assert "7 tracks → 16 segments" in result.stdout and f"{len(bad)} skipped" in result.stdout


@pytest.mark.parametrize("features", [("mfcc",), ("musicnn_msd",)], ids=["tasks", "actors"])
def test_the_extract_plan_raises_no_ray_deprecation_warning(
    ray_local, tmp_path, monkeypatch, features
):
    import warnings

    from ray.util.annotations import RayDeprecationWarning

    from genre.config import FeatureConfig
    from genre.corpus import Track
    from genre.extraction import ExtractSummary, _extract_on_ray

    # Ray warns when map_batches is called: build the plan, then iterate over nothing.
    monkeypatch.setattr(ray_local.data.Dataset, "iter_batches", lambda self, **kw: iter(()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _extract_on_ray(
            [Track(path=str(tmp_path / "a.wav"), track_id="a", genre="blues")],
            ExtractSummary(output=str(tmp_path)),
            cfg=FeatureConfig(features=features),
            output=str(tmp_path),
            address=None,
            num_cpus=None,
            tracks_per_shard=None,
            max_duration_s=60.0,
            gpus_per_worker=0.0,
        )
    assert [str(w.message) for w in caught if issubclass(w.category, RayDeprecationWarning)] == []
