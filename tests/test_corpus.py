import numpy as np
import pytest

from genre.corpus import gtzan_filtered_split, is_gtzan, list_tracks, split_tracks
from genre.errors import ParameterError


def test_labels_come_from_one_folder_deep(tmp_path):
    files = [
        "jazz/a.wav",
        "rock/b.flac",
        "loose.mp3",
        "x/y/deep.ogg",
        "rock/cover.jpg",
        ".hidden/z.wav",
        "rock/.DS_Store",
    ]
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    listing = list_tracks(str(tmp_path))
    got = {t.track_id: t.genre for t in listing.tracks}
    assert got == {
        "jazz/a.wav": "jazz",
        "rock/b.flac": "rock",
        "loose.mp3": None,
        "x/y/deep.ogg": None,
    }
    assert [p.rsplit("/", 1)[-1] for p in listing.ignored] == ["cover.jpg"]


def test_folders_starting_with_underscore_are_listed_unlabelled(tmp_path):
    for rel in ["jazz/a.wav", "_other/drone.00000.wav", "_scratch/b.flac", "rock_/c.ogg"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    got = {t.track_id: t.genre for t in list_tracks(str(tmp_path)).tracks}
    assert got == {
        "jazz/a.wav": "jazz",
        "_other/drone.00000.wav": None,
        "_scratch/b.flac": None,
        "rock_/c.ogg": "rock_",
    }


def test_missing_or_file_input_is_a_parameter_error(tmp_path):
    with pytest.raises(ParameterError, match="does not exist"):
        list_tracks(str(tmp_path / "nope"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(ParameterError, match="not a folder"):
        list_tracks(str(tmp_path / "f"))


def _corpus(n_per_genre=10, genres=("a", "b", "c")):
    ids = [f"{g}/{g}.{i:05d}.wav" for g in genres for i in range(n_per_genre)]
    return ids, [i.split("/")[0] for i in ids]


def test_split_is_by_track_stratified_and_deterministic():
    ids, genres = _corpus()
    a = split_tracks(ids, genres, seed=3)
    assert a == split_tracks(list(reversed(ids)), list(reversed(genres)), seed=3)
    assert a != split_tracks(ids, genres, seed=4)
    assert set(a) == set(ids)
    for g in "abc":
        counts = {
            s: sum(1 for t, sp in a.items() if sp == s and t.startswith(g))
            for s in ("train", "val", "test")
        }
        assert counts == {"train": 6, "val": 2, "test": 2}


def test_segments_of_one_track_never_straddle_splits():
    ids, genres = _corpus()
    segment_tracks = np.repeat(ids, 10)  # ten segments per track
    assignment = split_tracks(segment_tracks, np.repeat(genres, 10), seed=0)
    per_segment = np.array([assignment[t] for t in segment_tracks])
    for track in ids:
        assert len(set(per_segment[segment_tracks == track])) == 1


def test_bad_fractions_are_refused():
    with pytest.raises(ParameterError, match="sum"):
        split_tracks(["a/x"], ["a"], fractions=(0.5, 0.2, 0.2))


def test_gtzan_filtered_split_matches_the_published_lists():
    ids = [f"{g}/{g}.{i:05d}.au" for g in ("blues", "rock") for i in range(100)]
    assert is_gtzan(ids) and not is_gtzan(["song.mp3"])
    split = gtzan_filtered_split(ids)
    assert split["blues/blues.00000.au"] == "val"
    assert split["blues/blues.00012.au"] == "test"
    assert split["blues/blues.00029.au"] == "train"
    assert set(split.values()) == {"train", "val", "test"}
    with pytest.raises(ParameterError, match="GTZAN"):
        gtzan_filtered_split(["my/song.mp3"])
