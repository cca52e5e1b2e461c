"""Corrections train the next model: the review page's ``corrections.csv`` taken back by tune."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from genre.card import ModelCard
from genre.config import FeatureConfig, SearchSettings
from genre.corrections import LabelCorrections, apply_corrections, read_corrections
from genre.errors import ParameterError
from genre.shards import SegmentSet
from genre.training import prepare

ROOT = "/data/collection"
GENRES = ("blues", "jazz", "rock")


def segments(rng, *, per_genre: int = 6, per_track: int = 2) -> SegmentSet:
    """Shards as extract writes them for ``ROOT``: genre folders, two ``_other/`` tracks
    and one file outside any genre folder (no genre), ``per_track`` segments each."""
    ids = [f"{g}/{g}.{i:05d}.wav" for g in GENRES for i in range(per_genre)]
    ids += ["_other/drone.00000.wav", "_other/drone.00001.wav", "_other/speech.00000.wav"]
    ids += ["loose/live/unsorted.wav"]
    track_id = np.repeat(sorted(ids), per_track).astype(object)
    folder = [t.split("/")[0] for t in track_id]
    genre = np.array([g if g in GENRES else None for g in folder], dtype=object)
    n = len(track_id)
    return SegmentSet(
        track_id=track_id,
        path=np.array([f"{ROOT}/{t}" for t in track_id], dtype=object),
        genre=genre,
        segment=np.tile(np.arange(per_track), n // per_track).astype(np.int32),
        features={"mfcc": rng.standard_normal((n, 130, 13)).astype(np.float32)},
        cfg=FeatureConfig(features=("mfcc",)),
    )


def write(path: Path, *rows: tuple[str, str], header: str = "path,genre") -> str:
    lines = [header, *(f"{p},{g}" for p, g in rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def applied(seg: SegmentSet, *files: str) -> tuple[SegmentSet, LabelCorrections]:
    return apply_corrections(seg, *read_corrections(files))


def genre_of(seg: SegmentSet, track: str) -> str | None:
    return seg.genre[list(seg.track_id).index(track)]


def test_rows_match_by_path_by_its_absolute_spelling_and_by_the_track_id_it_ends_with(
    rng, tmp_path
):
    seg = segments(rng)
    rows = [
        (f"{ROOT}/blues/blues.00000.wav", "jazz"),  # the path extract read
        (f"{ROOT}/./rock//rock.00001.wav", "jazz"),  # another spelling of it
        ("/mnt/moved/collection/rock/rock.00002.wav", "blues"),  # moved: its track id's tail
        ("/elsewhere/nothing.wav", "rock"),  # no such track
    ]
    corrected, done = applied(seg, write(tmp_path / "c.csv", *rows))
    assert genre_of(corrected, "blues/blues.00000.wav") == "jazz"
    assert genre_of(corrected, "rock/rock.00001.wav") == "jazz"
    assert genre_of(corrected, "rock/rock.00002.wav") == "blues"
    assert (done.relabelled, done.added, done.confirmed, done.labels) == (3, 0, 0, 3)
    assert done.unmatched == 1 and done.unmatched_examples == ("/elsewhere/nothing.wav",)
    assert "1 row(s) matched no track in the shards and were skipped" in done.format()
    # Every other segment keeps the shards' genre; the shards' own stay beside.
    changed = corrected.genre != seg.genre
    assert set(corrected.track_id[changed]) == {
        "blues/blues.00000.wav",
        "rock/rock.00001.wav",
        "rock/rock.00002.wav",
    }
    assert corrected.shard_genre is seg.genre and corrected.features is seg.features


def test_a_later_row_wins_in_a_file_and_across_files_and_each_file_is_hashed(rng, tmp_path):
    seg = segments(rng)
    track = f"{ROOT}/blues/blues.00001.wav"
    first = write(
        tmp_path / "a.csv",
        (track, "rock"),
        (track, "jazz"),
        (f"{ROOT}/jazz/jazz.00000.wav", "jazz"),
    )
    second = write(tmp_path / "b.csv", (track, "rock"), (f"{ROOT}/loose/live/unsorted.wav", "rock"))
    corrected, done = applied(seg, first, second)
    assert genre_of(corrected, "blues/blues.00001.wav") == "rock"  # b.csv, the later file
    assert genre_of(corrected, "loose/live/unsorted.wav") == "rock"
    assert (done.relabelled, done.added, done.confirmed) == (1, 1, 1)
    a, b = done.files
    assert (a.rows, a.applied, b.rows, b.applied) == (3, 1, 2, 2)
    assert a.sha256 == hashlib.sha256(Path(first).read_bytes()).hexdigest()
    assert b.sha256 == hashlib.sha256(Path(second).read_bytes()).hexdigest()


def test_a_genre_the_shards_do_not_name_is_refused_naming_the_row(rng, tmp_path):
    path = write(tmp_path / "c.csv", (f"{ROOT}/rock/rock.00000.wav", "jaz"))
    with pytest.raises(ParameterError, match=r"c\.csv:2: genre 'jaz' is not one of the shards'"):
        applied(segments(rng), path)


@pytest.mark.parametrize(
    "content, needle",
    [
        (b"file,label\n/a.wav,rock\n", "its header is file,label, need path,genre"),
        (b"", "its header is (none)"),
        (b"path,genre\n/a.wav,\n", "c.csv:2: a row needs a path and a genre"),
        (b"path,genre\n\xff\xfe/a.wav,rock\n", "is not a CSV file of UTF-8 text"),
        (b'path,genre\n"/a.wav"x,rock\n', "is not a CSV file of UTF-8 text"),
    ],
)
def test_a_file_that_is_not_a_corrections_csv_is_refused_in_one_line(tmp_path, content, needle):
    (tmp_path / "c.csv").write_bytes(content)
    with pytest.raises(ParameterError) as caught:
        read_corrections([str(tmp_path / "c.csv")])
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_a_bom_and_extra_columns_are_read(rng, tmp_path):
    (tmp_path / "c.csv").write_bytes(
        f"\ufeffgenre,note,path\njazz,heard twice,{ROOT}/rock/rock.00003.wav\n".encode()
    )
    corrected, done = applied(segments(rng), str(tmp_path / "c.csv"))
    assert genre_of(corrected, "rock/rock.00003.wav") == "jazz" and done.relabelled == 1


def test_corrected_tracks_keep_their_split_and_train_with_their_new_label(rng, tmp_path):
    seg = segments(rng)
    before = prepare(seg, features=("mfcc",), split="random", seed=0, outlier_weight=0.5)
    split_before = {t: s for s, ids in before.track.items() for t in ids}
    other_before = {t: s for s, ids in before.other_track.items() for t in ids}
    test_track = next(t for t in before.track["test"] if t.startswith("blues/"))
    other = sorted(other_before)[0]
    path = write(
        tmp_path / "c.csv",
        (f"{ROOT}/{test_track}", "rock"),  # a test track relabelled
        (f"{ROOT}/{other}", "jazz"),  # an _other/ track given a genre
        (f"{ROOT}/loose/live/unsorted.wav", "blues"),  # an unlabelled file given one
    )
    corrected, _ = applied(seg, path)
    after = prepare(corrected, features=("mfcc",), split="random", seed=0, outlier_weight=0.5)
    split_after = {t: s for s, ids in after.track.items() for t in ids}
    # Every track the shards labelled is where it was: the relabelled test track never trains.
    assert {t: split_after[t] for t in split_before} == split_before
    assert split_after[other] == other_before[other]  # its outlier-exposure split
    assert "loose/live/unsorted.wav" in split_after  # labelled now, in a split of its own hash
    rest = {t: s for s, ids in after.other_track.items() for t in ids}
    assert rest == {t: s for t, s in other_before.items() if t != other}
    # ...and they are scored and trained with their corrected genres.
    rows = after.track["test"] == test_track
    assert rows.any() and (after.y["test"][rows] == after.labels.index("rock")).all()
    rows = after.track[split_after[other]] == other
    assert (after.y[split_after[other]][rows] == after.labels.index("jazz")).all()


def test_the_search_name_follows_the_corrections_content_not_their_path(tmp_path):
    a = write(tmp_path / "a.csv", ("/c/blues/x.wav", "jazz"))
    same = write(tmp_path / "same.csv", ("/c/blues/x.wav", "jazz"))
    edited = write(tmp_path / "edited.csv", ("/c/blues/x.wav", "rock"))

    def name(*labels: str) -> str:
        return SearchSettings(
            shards="/s", tracking_uri="sqlite:////tmp/m.db", labels=labels
        ).search_name()

    assert name() == SearchSettings(shards="/s", tracking_uri="sqlite:////tmp/m.db").search_name()
    assert name(a) != name() and name(a) == name(same) and name(a) != name(edited)
    assert name(a, edited) != name(edited, a)  # order matters: a later file wins
    with pytest.raises(ParameterError, match="--labels '.*missing.csv' does not exist"):
        name(str(tmp_path / "missing.csv"))


def test_the_card_records_the_corrections_and_cards_without_them_still_load():
    done = LabelCorrections(
        files=({"path": "c.csv", "sha256": "ab" * 32, "rows": 3, "applied": 2},),
        relabelled=1,
        added=1,
        unmatched=1,
        unmatched_examples=["/x.wav"],
    )
    card = ModelCard(
        labels=("a", "b"),
        features=("mfcc",),
        feature_config=FeatureConfig(features=("mfcc",)),
        corrections=done,
    )
    meta = json.loads(json.dumps(card.to_metadata()))
    assert ModelCard.from_metadata(meta) == card
    assert meta["corrections"]["files"][0]["sha256"] == "ab" * 32
    del meta["corrections"]  # a card written before --labels existed
    assert ModelCard.from_metadata(meta).corrections is None


# ----------------------------------------------------------------------------- the tune job


@pytest.mark.slow
@pytest.mark.parametrize(
    "content, needle",
    [
        (None, "--labels '{path}' does not exist"),
        ("file,label\n", "its header is file,label"),
        ("path,genre\n/a/blues/blues.00000.wav,bluez\n", "genre 'bluez' is not one of"),
    ],
)
def test_bad_labels_are_one_line_exit_2_and_create_nothing(
    small_shards, tmp_path, capsys, content, needle
):
    from jobs.tune import main

    work = tmp_path / "work"
    work.mkdir()
    path = tmp_path / "corrections.csv"
    if content is not None:
        path.write_text(content)
    code = main(
        [
            str(small_shards),
            *("--labels", str(path), "--tracking-uri", f"sqlite:///{work}/m.db"),
            *("--storage", str(work / "ray")),
        ]
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and needle.format(path=path) in err[0], err
    assert list(work.iterdir()) == [], "nothing is created for a command that exits 2"


@pytest.mark.slow
def test_labels_on_a_streamed_search_are_refused_in_one_line(small_shards, tmp_path, capsys):
    """Corrections are applied to segments held in memory; a streamed search reads the
    shards' own labels, so it would train on the uncorrected ones: refused, not ignored."""
    from jobs.tune import main

    work = tmp_path / "work"
    work.mkdir()
    path = write(tmp_path / "corrections.csv", ("/x/blues/blues.00000.wav", "jazz"))
    code = main(
        [
            str(small_shards),
            *("--labels", path, "--data", "stream"),
            *("--tracking-uri", f"sqlite:///{work}/m.db", "--storage", str(work / "ray")),
        ]
    )
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "--data memory" in err[0], err
    assert list(work.iterdir()) == [], "nothing is created for a command that exits 2"
