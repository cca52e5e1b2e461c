"""The promises every Parquet-folder store keeps (shards and results alike), and the lock.

Like mirdata's loader contract tests, one parametrised test holds both stores to the
same promises: whole parts or none, temporaries of a killed writer removed by the next
writer, one writer at a time, and no duplicate row on read whatever the folder holds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from genre.config import FeatureConfig
from genre.errors import ParameterError
from genre.store import AttemptJournal, FolderLock
from tests.conftest import REPO, run_job, shared_ray_address, tone, write_audio


@dataclass
class Store:
    """One store under test: how to write a part into a folder, read it back, and its key."""

    name: str
    write: Callable[[Path, int], None]  # (folder, n rows)
    read: Callable[[Path], object]  # → object with a row count and key tuples
    keys: Callable[[object], list[tuple]]
    open: Callable[[Path], object]


def _write_shard(folder: Path, n: int) -> None:
    from genre.shards import segments_table, write_shard

    cfg = FeatureConfig(features=("mfcc",))
    ids = np.array([f"t{i // 2}.wav" for i in range(n)], object)
    table = segments_table(
        track_id=ids,
        path=ids,
        genre=[None] * n,
        segment=np.arange(n) % 2,
        start_s=np.zeros(n),
        duration_s=np.full(n, 6.0),
        features={"mfcc": np.zeros((n, *cfg.shape("mfcc")), np.float32)},
        cfg=cfg,
    )
    write_shard(str(folder), table)


def _read_shards(folder: Path):
    from genre.shards import read_segments

    return read_segments(str(folder))


def _write_results(folder: Path, n: int) -> None:
    from genre.results import ResultStore, results_table

    labels = ["a", "b"]
    rows = [
        {
            "path": f"/m/{i}.wav",
            "track_id": f"{i}.wav",
            "genre": "a",
            "confidence": 0.9,
            "top_genres": ["a", "b"],
            "top_probs": [0.9, 0.1],
            "p_a": 0.9,
            "p_b": 0.1,
            "n_segments": 3,
            "duration_s": 9.0,
            "reason": "",
            "error": "",
        }
        for i in range(n)
    ]
    ResultStore(str(folder)).write(
        results_table(rows, labels=labels, model="m/1", aggregate="mean")
    )


def _read_results(folder: Path):
    from genre.results import read_results

    return read_results(str(folder))


def _open_shards(folder: Path):
    from genre.shards import ShardStore

    return ShardStore(str(folder), FeatureConfig(features=("mfcc",)))


def _open_results(folder: Path):
    from genre.results import ResultStore

    return ResultStore(str(folder))


STORES = [
    Store(
        "shards",
        _write_shard,
        _read_shards,
        lambda s: list(zip(s.track_id.tolist(), s.segment.tolist(), strict=True)),
        _open_shards,
    ),
    Store("results", _write_results, _read_results, lambda f: list(f.path), _open_results),
]


@pytest.fixture(params=STORES, ids=lambda s: s.name)
def store(request) -> Store:
    return request.param


def test_a_written_part_is_whole_and_leaves_no_temporary(store, tmp_path):
    store.write(tmp_path, 6)
    assert len(store.keys(store.read(tmp_path))) == 6
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []


def test_opening_a_store_removes_a_killed_writers_temporaries(store, tmp_path):
    store.write(tmp_path, 4)
    (tmp_path / ".tmp-0123abcd.parquet").write_bytes(b"half a part")
    store.open(tmp_path)
    assert not (tmp_path / ".tmp-0123abcd.parquet").exists()
    assert len(store.keys(store.read(tmp_path))) == 4


def test_rows_repeated_across_parts_are_read_once_with_a_warning(store, tmp_path):
    store.write(tmp_path, 6)
    part = sorted(tmp_path.glob("part-*.parquet"))[0]
    shutil.copy(
        part, tmp_path / "part-ffffffffffffffff.parquet"
    )  # a second run's copy of the same rows
    with pytest.warns(UserWarning, match="duplicate"):
        read = store.read(tmp_path)
    keys = store.keys(read)
    assert len(keys) == 6 == len(set(keys))


def test_a_clean_folder_reads_without_warning(store, tmp_path):
    store.write(tmp_path, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.read(tmp_path)


def test_the_manifest_counts_each_segment_once(tmp_path):
    from genre.shards import ShardStore

    _write_shard(tmp_path, 6)
    shutil.copy(
        sorted(tmp_path.glob("part-*.parquet"))[0], tmp_path / "part-ffffffffffffffff.parquet"
    )
    manifest = ShardStore(str(tmp_path), FeatureConfig(features=("mfcc",))).write_manifest()
    assert (manifest["tracks"], manifest["segments"]) == (3, 6)


def test_results_keep_the_latest_row_of_a_path(tmp_path):
    import pyarrow as pa

    _write_results(tmp_path, 3)
    part = sorted(tmp_path.glob("part-*.parquet"))[0]
    table = pq.read_table(part)
    later = table.set_column(table.schema.get_field_index("genre"), "genre", pa.array(["b"] * 3))
    later = later.set_column(
        later.schema.get_field_index("labeled_at"),
        "labeled_at",
        pa.compute.add(table.column("labeled_at"), pa.scalar(60, pa.duration("s"))),
    )
    pq.write_table(later, tmp_path / "part-zzzz.parquet")
    with pytest.warns(UserWarning, match="3 duplicate results"):
        frame = _read_results(tmp_path)
    assert list(frame.genre) == ["b", "b", "b"] and frame.attrs["duplicates"] == 3


# ----------------------------------------------------------------------------- the lock


def test_a_second_writer_is_refused_with_one_line_naming_the_first(tmp_path):
    with FolderLock(str(tmp_path), command="jobs.extract"):
        with pytest.raises(ParameterError) as info:
            FolderLock(str(tmp_path), command="jobs.extract").acquire()
    message = str(info.value)
    assert f"pid {os.getpid()}" in message and "jobs.extract" in message and "_lock" in message
    assert "\n" not in message
    assert not (tmp_path / "_lock").exists(), "the lock goes with its run"


def test_a_lock_left_by_a_dead_process_is_taken_over_with_a_note(tmp_path, capfd):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "_lock").write_text(
        json.dumps(
            {
                "pid": dead.pid,
                "pid_start": "",
                "host": os.uname().nodename,
                "command": "jobs.label",
                "token": "x",
                "since": "2026-01-01T00:00:00+00:00",
            }
        )
    )
    with FolderLock(str(tmp_path), command="jobs.label") as lock:
        assert lock.took_over["pid"] == dead.pid
    assert "taking over the lock" in capfd.readouterr().err


def test_a_lock_of_another_host_is_never_taken_over(tmp_path):
    (tmp_path / "_lock").write_text(
        json.dumps({"pid": 1, "host": "elsewhere", "command": "jobs.extract"})
    )
    with pytest.raises(ParameterError, match="elsewhere"):
        FolderLock(str(tmp_path), command="jobs.extract").acquire()


def test_the_crash_journal_skips_a_file_after_two_deaths(tmp_path):
    journal = AttemptJournal(str(tmp_path))
    assert journal.begin("a.wav", path="/m/a.wav")  # this attempt "dies": no end()
    assert journal.begin("a.wav", path="/m/a.wav")  # and the retry too
    assert not journal.begin("a.wav", path="/m/a.wav")
    assert journal.deaths("a.wav") == 2
    assert journal.clear() == 1 and journal.begin("a.wav", path="/m/a.wav")
    journal.end("a.wav")
    assert journal.deaths("a.wav") == 0


def _corpus(root: Path, n: int) -> Path:
    for i in range(n):
        genre = ("jazz", "pop")[i % 2]
        write_audio(
            root / genre / f"{genre}.{i:05d}.wav",
            tone(seconds=3.5, sample_rate=22050, freq_hz=200 + 9 * i),
            sample_rate=22050,
        )
    return root


def _start(module: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "RAY_ADDRESS": shared_ray_address()},
    )


@pytest.mark.slow
def test_two_extract_runs_into_one_output_write_every_segment_once(tmp_path):
    import pandas as pd

    root, out = _corpus(tmp_path / "corpus", 40), tmp_path / "shards"
    first = _start(
        "jobs.extract",
        str(root),
        str(out),
        "--features",
        "mfcc",
        "--num-cpus",
        "1",
        "--tracks-per-shard",
        "2",
    )
    deadline = time.time() + 60
    while not (out / "_lock").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = run_job(
        "jobs.extract",
        str(root),
        str(out),
        "--features",
        "mfcc",
        "--num-cpus",
        "1",
        "--tracks-per-shard",
        "16",
    )
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-2000:]
    assert second.returncode == 2 and "is being written by jobs.extract" in second.stderr, (
        second.stderr
    )
    rows = pd.read_parquet(out, columns=["track_id", "segment"])
    assert len(rows) == 40 and not rows.duplicated().any()
    assert json.loads((out / "_manifest.json").read_text())["segments"] == 40
    again = run_job(
        "jobs.extract",
        str(root),
        str(out),
        "--features",
        "mfcc",
        "--num-cpus",
        "1",
        "--tracks-per-shard",
        "16",
    )
    assert again.returncode == 0 and "40 already extracted" in again.stdout, again.stderr


@pytest.mark.slow
def test_two_label_runs_into_one_output_label_every_file_once(tmp_path, tuned):
    import pandas as pd

    root, out = _corpus(tmp_path / "corpus", 30), tmp_path / "labels"
    model = [
        "--model",
        f"models:/{tuned.name}@champion",
        "--tracking-uri",
        tuned.uri,
        "--num-cpus",
        "1",
    ]
    first = _start("jobs.label", str(root), str(out), *model)
    deadline = time.time() + 120
    while not (out / "_lock").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = run_job("jobs.label", str(root), str(out), *model, timeout=300)
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-2000:]
    assert second.returncode == 2 and "is being written by jobs.label" in second.stderr, (
        second.stderr
    )
    rows = pd.read_parquet(out)
    assert len(rows) == 30 and not rows.path.duplicated().any()
    assert not (out / "_lock").exists()
