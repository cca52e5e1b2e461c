"""Damaged, foreign or odd data: one line or one warning each, never a traceback.

The data half of issue 22: unreadable parts are skipped and their work redone; a
folder of the wrong kind, a read-only or full output, a lock or manifest that does not
parse, a broken input list or mapping are named in one line; one file named three ways
is one item; collections, genre names and synth arguments are checked before work.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from genre import store
from genre.config import FeatureConfig
from genre.corpus import Track, list_inputs, list_tracks
from genre.errors import GenreError, ParameterError
from genre.results import ResultStore, read_results, results_schema, results_table
from genre.shards import ShardStore, read_config, read_segments, segments_table, write_shard
from genre.store import FolderLock
from genre.zeroshot import load_mapping
from tests.conftest import REPO, main_in_process, run_job, tone, write_audio

CFG = FeatureConfig(features=("mfcc",))


def _shard(folder: Path, tracks: list[str], *, root: str = "/music") -> Path:
    """One shard of two segments per track; return its file."""
    ids = np.array([t for t in tracks for _ in range(2)], object)
    n = len(ids)
    table = segments_table(
        track_id=ids,
        path=np.array([f"{root}/{t}" for t in ids], object),
        genre=[t.split("/")[0] for t in ids],
        segment=np.arange(n) % 2,
        start_s=np.zeros(n),
        duration_s=np.full(n, 6.0),
        features={"mfcc": np.zeros((n, *CFG.shape("mfcc")), np.float32)},
        cfg=CFG,
    )
    return folder / write_shard(str(folder), table)


def _results(folder: Path, paths: list[str], *, model: str = "m/1", error: str = "") -> None:
    rows = [
        {
            "path": p,
            "track_id": p.rsplit("/", 1)[-1],
            "genre": "a",
            "confidence": 0.9,
            "top_genres": ["a", "b"],
            "top_probs": [0.9, 0.1],
            "p_a": 0.9,
            "p_b": 0.1,
            "n_segments": 3,
            "duration_s": 9.0,
            "reason": "corrupt" if error else "",
            "error": error,
        }
        for p in paths
    ]
    ResultStore(str(folder)).write(
        results_table(rows, labels=["a", "b"], model=model, aggregate="mean")
    )


def _truncate(path: Path) -> None:
    """What a full disk or an interrupted copy leaves: the first half, no footer."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _one_warning(record, needle: str) -> str:
    messages = [str(w.message) for w in record if needle in str(w.message)]
    assert len(messages) >= 1, [str(w.message) for w in record]
    assert all("\n" not in m for m in messages)
    return messages[0]


# ----------------------------------------------------------------------------- row 7


def test_truncated_shard_is_skipped_with_a_warning_and_its_tracks_redone(tmp_path):
    _shard(tmp_path, ["jazz/a.wav", "jazz/b.wav"])
    bad = _shard(tmp_path, ["pop/c.wav"])
    ShardStore(str(tmp_path), CFG).write_manifest()
    _truncate(bad)
    with pytest.warns(UserWarning) as record:
        done = ShardStore(str(tmp_path), CFG).done_track_ids()
        segments = read_segments(str(tmp_path))
        manifest = ShardStore(str(tmp_path), CFG).write_manifest()
    message = _one_warning(record, bad.name)
    assert "delete it" in message and "extract" in message
    assert done == {"jazz/a.wav", "jazz/b.wav"}, "the damaged shard's track must be redone"
    assert sorted(set(segments.track_id)) == ["jazz/a.wav", "jazz/b.wav"]
    assert manifest["tracks"] == 2 and bad.name not in {s["file"] for s in manifest["shards"]}


def test_a_shard_corrupt_inside_is_skipped_like_a_truncated_one(tmp_path):
    _shard(tmp_path, ["jazz/a.wav"])
    bad = _shard(tmp_path, ["pop/c.wav"])
    data = bytearray(bad.read_bytes())
    data[4:-8] = b"\xff" * (len(data) - 12)  # magic bytes and footer length intact
    bad.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="skipped unreadable part"):
        assert ShardStore(str(tmp_path), CFG).done_track_ids() == {"jazz/a.wav"}


def test_a_folder_of_only_damaged_shards_is_one_line(tmp_path):
    _truncate(_shard(tmp_path, ["jazz/a.wav"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ParameterError, match="no readable shard") as info:
            read_segments(str(tmp_path))
    assert "\n" not in str(info.value)


def test_truncated_results_part_is_skipped_with_a_warning_and_its_files_relabelled(tmp_path):
    _results(tmp_path, ["/m/a.wav", "/m/b.wav"])
    first = set(tmp_path.glob("part-*.parquet"))
    _results(tmp_path, ["/m/c.wav"], error="corrupt")
    (bad,) = set(tmp_path.glob("part-*.parquet")) - first
    _truncate(bad)
    with pytest.warns(UserWarning) as record:
        results = ResultStore(str(tmp_path))
        existing = results.existing()
        assert results.drop_errors() == 0  # --retry-errors
        assert results.supersede("m/1") == 0  # --new-model-ok
        frame = read_results(str(tmp_path))
    message = _one_warning(record, bad.name)
    assert "delete it" in message and "label" in message
    assert sorted(existing.column("path").to_pylist()) == ["/m/a.wav", "/m/b.wav"]
    assert sorted(frame["path"]) == ["/m/a.wav", "/m/b.wav"]


@pytest.mark.slow
def test_extract_over_a_truncated_shard_warns_and_extracts_its_tracks_again(tmp_path):
    corpus = tmp_path / "corpus"
    for i, genre in enumerate(["jazz", "jazz", "pop", "pop"]):
        write_audio(
            corpus / genre / f"{genre}.{i:05d}.wav",
            tone(seconds=3.5, sample_rate=22050, freq_hz=200 + 30 * i),
            sample_rate=22050,
        )
    out = tmp_path / "shards"
    args = ["jobs.extract", str(corpus), str(out), "--features", "mfcc", "--num-cpus", "2"]
    first = run_job(*args, "--tracks-per-shard", "1")
    assert first.returncode == 0, first.stderr
    bad = sorted(out.glob("part-*.parquet"))[0]
    _truncate(bad)
    again = run_job(*args, "--tracks-per-shard", "1")
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    assert f"skipped unreadable part {bad}" in again.stderr
    # The redone track's shard has the damaged one's name (a hash of its tracks): healed.
    segments = read_segments(str(out))
    assert len(set(segments.track_id)) == 4


# ----------------------------------------------------------------------------- row 8


def _without_root_powers(command: list[str]) -> list[str]:
    """``command`` as a user that permissions apply to: root writes anywhere."""
    if os.geteuid() != 0:
        return command
    if not shutil.which("capsh"):
        pytest.skip("running as root without capsh to drop CAP_DAC_OVERRIDE")
    return ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", shlex.join(command)]


LOCK = r"""
import sys
from genre.errors import GenreError
from genre.store import FolderLock
try:
    FolderLock(sys.argv[1], command="jobs.label").acquire()
except GenreError as exc:
    print(exc)
"""


@pytest.mark.parametrize("output", ["ro", "ro/new/deeper"])
def test_a_read_only_output_is_one_line_and_nothing_is_created(tmp_path, output):
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o555)
    command = _without_root_powers([sys.executable, "-c", LOCK, str(tmp_path / output)])
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    finally:
        readonly.chmod(0o755)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert "\n" not in line and "is not writable" in line and str(tmp_path / output) in line
    assert list(readonly.iterdir()) == []


def test_extract_into_a_read_only_output_exits_2_with_one_line(tmp_path):
    corpus = tmp_path / "corpus"
    write_audio(corpus / "jazz" / "a.wav", tone(seconds=3.5, sample_rate=22050), sample_rate=22050)
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    command = [sys.executable, "-m", "jobs.extract", str(corpus), str(out), "--num-cpus", "1"]
    try:
        done = subprocess.run(
            _without_root_powers(command), capture_output=True, text=True, cwd=REPO, timeout=300
        )
    finally:
        out.chmod(0o755)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "not writable" in lines[0] and str(out) in lines[0], lines
    assert list(out.iterdir()) == []


# ----------------------------------------------------------------------------- row 9


def test_a_labels_folder_is_refused_as_shards_naming_what_it_is(tmp_path):
    _results(tmp_path, ["/m/a.wav"])
    with pytest.raises(ParameterError, match="is a labels folder") as info:
        ShardStore(str(tmp_path), CFG)  # extract into a labels folder
    assert "output" in str(info.value) and "not a shards folder" in str(info.value)
    with pytest.raises(ParameterError, match="is a labels folder.*not a shards folder"):
        read_config(str(tmp_path))  # tune on a labels folder
    with pytest.raises(ParameterError, match="is a labels folder"):
        read_segments(str(tmp_path))


def test_a_shards_folder_is_refused_as_labels_naming_what_it_is(tmp_path):
    _shard(tmp_path, ["jazz/a.wav"])
    with pytest.raises(ParameterError, match="is a shards folder.*not a labels folder"):
        ResultStore(str(tmp_path))  # label into a shards folder
    with pytest.raises(ParameterError, match="is a shards folder"):
        read_results(str(tmp_path))


def test_a_folder_of_foreign_parquet_is_refused_by_both_stores(tmp_path):
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "part-0.parquet")
    for open_store in (lambda: ShardStore(str(tmp_path), CFG), lambda: ResultStore(str(tmp_path))):
        with pytest.raises(ParameterError, match="genre did not write"):
            open_store()


def test_tune_on_a_labels_folder_exits_2_saying_it_is_a_labels_folder(tmp_path, capfd):
    _results(tmp_path / "labels", ["/m/a.wav"])
    args = [str(tmp_path / "labels"), "--storage", str(tmp_path / "st")]
    done = main_in_process(capfd, "jobs.tune", *args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "is a labels folder" in lines[0], lines


# ----------------------------------------------------------------------------- row 12


def test_one_file_named_three_ways_in_a_list_is_one_item_under_its_first_spelling(tmp_path):
    write_audio(tmp_path / "x.wav", tone(seconds=1, sample_rate=8000), sample_rate=8000)
    (tmp_path / "d").mkdir()
    (tmp_path / "link.wav").symlink_to(tmp_path / "x.wav")
    (tmp_path / "list.txt").write_text("x.wav\n./x.wav\nd/../x.wav\nlink.wav\n")
    items, kind = list_inputs(str(tmp_path / "list.txt"))
    assert kind == "list"
    assert items == [{"path": str(tmp_path / "x.wav"), "track_id": str(tmp_path / "x.wav")}]


# ----------------------------------------------------------------------------- minor rows


@pytest.mark.parametrize("text", ["{not json", "[]", '{"feature_config": 5}', "\x00\xff"])
def test_a_manifest_that_does_not_parse_is_ignored_with_a_warning_naming_it(tmp_path, text):
    _shard(tmp_path, ["jazz/a.wav"])
    (tmp_path / "_manifest.json").write_text(text)
    with pytest.warns(UserWarning, match="_manifest.json.*re-run extract"):
        assert read_config(str(tmp_path)) == CFG
    with pytest.warns(UserWarning):
        ShardStore(str(tmp_path), CFG).write_manifest()  # extract rebuilds it
    assert read_config(str(tmp_path)) == CFG  # and without a warning now


def _lock_of_this_host(**fields) -> str:
    return json.dumps({"host": socket.gethostname(), "command": "jobs.extract", **fields})


@pytest.mark.parametrize(
    "content",
    [
        _lock_of_this_host(pid="abc"),
        _lock_of_this_host(pid=10**30),
        _lock_of_this_host(pid=-1),
        _lock_of_this_host(pid=True),
    ],
    ids=["pid-abc", "pid-huge", "pid-negative", "pid-bool"],
)
def test_a_lock_whose_pid_names_no_process_is_taken_over_with_a_note(tmp_path, capfd, content):
    (tmp_path / "_lock").write_text(content)
    with FolderLock(str(tmp_path), command="jobs.extract") as lock:
        assert lock.took_over is not None
    assert "taking over the lock" in capfd.readouterr().err


def test_a_lock_whose_json_is_a_list_is_judged_by_its_age(tmp_path, capfd):
    lock = tmp_path / "_lock"
    lock.write_text("[1, 2]")
    with pytest.raises(ParameterError, match="remove .*_lock") as info:
        FolderLock(str(tmp_path), command="jobs.extract").acquire()  # could be a live writer
    assert "\n" not in str(info.value)
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with FolderLock(str(tmp_path), command="jobs.extract"):
        pass
    assert "taking over the lock" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("empty.txt", b"", "names no file"),
        ("comments.txt", b"# nothing\n\n", "names no file"),
        ("binary.txt", bytes(range(256)) * 4, "not UTF-8"),
        ("nul.txt", b"a.wav\x00b.wav\n", "NUL byte"),
        ("empty.csv", b"", "cannot be read as .csv"),
        ("broken.csv", b'path\n"a.wav\n', "cannot be read as .csv"),
        ("broken.parquet", b"PAR1 not really", "cannot be read as .parquet"),
    ],
)
def test_an_empty_binary_or_broken_input_list_is_one_line(tmp_path, name, content, needle):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ParameterError, match=needle) as info:
        list_inputs(str(tmp_path / name))
    assert "\n" not in str(info.value) and name in str(info.value)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"[genres]\nrock = 5\njazz = ['msd:jazz']\n", "must be a list of tags"),
        (b"[genres]\nrock = ['msd:rock']\njazz = ['msd:jazz \xff']\n", "not UTF-8"),
        (b"[genres]\nrock = ['msd:rock']\nRock = ['msd:jazz']\n", "differ only in case"),
        (b"[genres]\n'' = ['msd:rock']\njazz = ['msd:jazz']\n", "name every genre"),
    ],
    ids=["number", "not-utf8", "case", "empty-name"],
)
def test_a_broken_mapping_is_one_line(tmp_path, content, needle):
    (tmp_path / "m.toml").write_bytes(content)
    with pytest.raises(ParameterError, match=needle) as info:
        load_mapping(str(tmp_path / "m.toml"))
    assert "\n" not in str(info.value)


def test_a_full_disk_is_one_line_and_loses_nothing(tmp_path, monkeypatch):
    _results(tmp_path, ["/m/a.wav"])
    before = sorted(tmp_path.iterdir())

    def full_disk(table, where, **kwargs):  # what a full disk does halfway through a part
        Path(where).write_bytes(b"PAR1 half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.pq, "write_table", full_disk)
    with pytest.raises(GenreError, match="no space left") as info:
        _results(tmp_path, ["/m/b.wav"])
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)
    monkeypatch.undo()
    assert sorted(tmp_path.iterdir()) == before, "no temporary, no half part"
    assert list(read_results(str(tmp_path))["path"]) == ["/m/a.wav"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--seconds", "1e7"], "--seconds"),  # was a MemoryError
        (["--extra-styles", "--extra-per-style", "-2"], "--extra-per-style"),  # after writing
    ],
)
def test_synth_checks_its_arguments_before_writing_anything(tmp_path, capsys, args, needle):
    from jobs.synth import main

    assert main([str(tmp_path / "corpus"), "--per-genre", "1", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0], err
    assert not (tmp_path / "corpus").exists()


def test_genre_folders_differing_only_in_case_are_refused(tmp_path):
    for rel in ["Rock/a.wav", "rock/b.wav"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    with pytest.raises(ParameterError, match="'Rock' and 'rock' differ only in case"):
        list_tracks(str(tmp_path))
    items, _ = list_inputs(str(tmp_path))  # labelling such a tree uses no folder name
    assert len(items) == 2


@pytest.mark.parametrize("labels", [["Rock", "rock"], ["", "jazz"], [" ", "jazz"]])
def test_labels_that_would_not_be_distinct_columns_are_refused(labels):
    with pytest.raises(ParameterError, match="model labels"):
        results_schema(labels)


def test_a_second_collection_with_the_same_names_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "shards"
    _shard(out, ["jazz/a.wav", "jazz/b.wav"], root="/music/one")
    shards = ShardStore(str(out), CFG)
    same = [Track(path="/music/one/jazz/a.wav", track_id="jazz/a.wav", genre="jazz")]
    assert shards.done_track_ids(tracks=same) == {"jazz/a.wav", "jazz/b.wav"}
    other = [
        Track(path="/music/two/jazz/a.wav", track_id="jazz/a.wav", genre="jazz"),
        Track(path="/music/two/jazz/z.wav", track_id="jazz/z.wav", genre="jazz"),
    ]
    with pytest.raises(ParameterError, match="holds the collection /music/one") as info:
        shards.done_track_ids(tracks=other)
    assert "another output folder" in str(info.value) and "\n" not in str(info.value)


def test_a_collection_reached_through_a_link_is_the_same_collection(tmp_path):
    (tmp_path / "music" / "jazz").mkdir(parents=True)
    (tmp_path / "music" / "jazz" / "a.wav").write_bytes(b"")
    (tmp_path / "via").symlink_to(tmp_path / "music")
    out = tmp_path / "shards"
    _shard(out, ["jazz/a.wav"], root=str(tmp_path / "music"))
    again = list_tracks(str(tmp_path / "via")).tracks
    assert ShardStore(str(out), CFG).done_track_ids(tracks=again) == {"jazz/a.wav"}


def test_entries_that_are_not_regular_files_are_skipped_with_a_reason_unopened(tmp_path):
    (tmp_path / "rock").mkdir()
    write_audio(tmp_path / "rock" / "a.wav", tone(seconds=1, sample_rate=8000), sample_rate=8000)
    os.mkfifo(tmp_path / "rock" / "pipe.wav")  # opening it would wait for a writer forever
    (tmp_path / "rock" / "link.wav").symlink_to(tmp_path / "rock" / "pipe.wav")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "rock" / "sock.wav"))
    try:
        listing = list_tracks(str(tmp_path))
        items, _ = list_inputs(str(tmp_path))
    finally:
        sock.close()
    assert [t.track_id for t in listing.tracks] == ["rock/a.wav"]
    assert [(s["track_id"], s["reason"]) for s in listing.skipped] == [
        ("rock/link.wav", "unreadable"),
        ("rock/pipe.wav", "unreadable"),
        ("rock/sock.wav", "unreadable"),
    ]
    assert "named pipe" in listing.skipped[1]["message"]
    assert "socket" in listing.skipped[2]["message"]
    # label keeps them, for the decoder to make error rows of without opening them
    assert len(items) == 4
