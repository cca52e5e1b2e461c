"""A search's data on Ray Data: the statistics pass equals what prepare fits in memory."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from genre.config import FeatureConfig
from genre.errors import ParameterError
from genre.shards import (
    ShardStore,
    read_segments,
    segments_table,
    track_index,
    with_other,
    write_shard,
)
from genre.training import SearchStats, plan_splits, prepare

CFG = FeatureConfig(features=("mfcc", "chroma"))
GENRES = ("rock", "jazz", "pop")


def _track(rng, track, genre, *, scale=1.0, nan=False) -> pa.Table:
    """Three segments of ``track``, values around 3 with spread ``scale``, the second MFCC
    raised by the genre's rank in :data:`GENRES` (learnable), one NaN if asked."""
    features = {f: 3.0 + scale * rng.standard_normal((3, *CFG.shape(f))) for f in CFG.features}
    if genre is not None:
        features["mfcc"][:, :, 1] += 4.0 * GENRES.index(genre)
    if nan:
        features["mfcc"][1, 4, 2] = np.nan
    return segments_table(
        track_id=np.array([track] * 3, object),
        path=np.array(["/x/" + track] * 3, object),
        genre=[genre] * 3,
        segment=np.arange(3),
        start_s=np.arange(3) * 3.0,
        duration_s=np.full(3, 9.5),
        features=features,
        cfg=CFG,
    )


def _folder(root, rng, tracks, *, per_shard=3, scale=1.0) -> str:
    """Shards under ``root`` holding ``tracks`` (``(track_id, genre)``), ``per_shard`` a shard."""
    store = ShardStore(str(root), CFG)
    for i in range(0, len(tracks), per_shard):
        chunk = tracks[i : i + per_shard]
        write_shard(str(root), pa.concat_tables([_track(rng, t, g, scale=scale) for t, g in chunk]))
    store.write_manifest()
    return str(root)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A collection extracted in two parts (one track in both), and an --other folder."""
    rng = np.random.default_rng(7)
    root = tmp_path_factory.mktemp("parts")
    labelled = [(f"{g}/{g}{k}.wav", g) for g in GENRES for k in range(5)]
    outliers = [(f"_other/noise{k}.wav", None) for k in range(4)]
    first = _folder(root / "a", rng, labelled[:8] + outliers[:2], scale=1.0)
    second = _folder(root / "b", rng, labelled[7:] + outliers[2:], scale=2.0)
    other = _folder(root / "o", rng, [(f"speech/s{k}.wav", None) for k in range(3)], scale=0.5)
    return (first, second), other


def test_the_track_index_files_tracks_as_the_readers_do(parts):
    roots, other = parts
    with pytest.warns(UserWarning, match="duplicate"):
        segments = with_other(read_segments(roots), other)
    with pytest.warns(UserWarning, match="3 duplicate segments"):
        index = track_index(roots, other=other)
    tracks, counts = np.unique(segments.track_id.astype(str), return_counts=True)
    assert list(index.track_id) == list(tracks) and list(index.segments) == list(counts)
    genre_of = dict(zip(segments.track_id, segments.genre, strict=True))
    assert list(index.genre) == [genre_of[t] for t in index.track_id]
    # The track both parts hold is read from the first; the second's shard is read alone.
    both = list(index.track_id).index("jazz/jazz2.wav")
    assert "/a/" in index.files[index.source[both]]
    assert [("/b/" in index.files[k]) for k in index.shadowed] == [True]


@pytest.mark.slow  # Ray Data on the run's shared head
@pytest.mark.parametrize("split, weight", [("random", 0.5), ("auto", None)])
def test_the_statistics_pass_finds_the_split_counts_and_normalisation_prepare_fits(
    parts, ray_local, split, weight
):
    from genre.searchdata import statistics

    roots, other = parts
    with pytest.warns(UserWarning, match="duplicate"):
        segments = with_other(read_segments(roots), other)
        index = track_index(roots, other=other)
    features = ("mfcc", "chroma")
    data = prepare(segments, features=features, split=split, seed=3, outlier_weight=weight)
    planned = plan_splits(index, features=features, split=split, seed=3, outlier_weight=weight)
    stats = statistics(index, planned)
    assert stats.labels == data.labels and stats.split_method == data.split_method
    assert stats.counts == data.counts
    for name in ("train", "val", "test"):
        assert {t for t, s in stats.assignment.items() if s == name} == set(data.track[name])
        assert {t for t, s in stats.other_assignment.items() if s == name} == set(
            data.other_track.get(name, ())
        )
    assert stats.input_shape == data.input_shape
    np.testing.assert_allclose(stats.mean, data.mean, rtol=1e-6)
    np.testing.assert_allclose(stats.variance, data.variance, rtol=1e-5)
    assert SearchStats.from_json(stats.to_json()).counts == stats.counts


@pytest.mark.slow  # Ray Data on the run's shared head
def test_the_statistics_pass_refuses_training_segments_that_are_not_finite(
    tmp_path, rng, ray_local
):
    from genre.searchdata import statistics

    tracks = [(f"{g}/{g}{k}.wav", g) for g in GENRES for k in range(4)]
    root = _folder(tmp_path / "s", rng, tracks, per_shard=1)
    split = plan_splits(track_index(root), features=("mfcc",), split="random", seed=0)
    victim = sorted(t for t, s in split.assignment.items() if s == "train")[0]
    write_shard(root, _track(rng, victim, victim.split("/")[0], nan=True))  # replaces its shard
    index = track_index(root)
    planned = plan_splits(index, features=("mfcc",), split="random", seed=0)
    with pytest.raises(ParameterError, match=f"1 segments of 1 tracks .*non-finite.*{victim}"):
        statistics(index, planned)


def test_stored_statistics_are_read_back_for_their_feature_set(tmp_path):
    from genre.searchdata import load_stats, save_stats

    stats = SearchStats(
        features=("mfcc",),
        labels=["jazz", "rock"],
        split_method="random",
        seed=1,
        assignment={"a": "train", "b": "val"},
        other_assignment={},
        counts={"train": {"tracks": 1, "segments": 3}},
        input_shape=(130, 13),
        mean=np.arange(13, dtype=np.float32),
        variance=np.ones(13, np.float32),
    )
    path = save_stats(str(tmp_path / "search"), stats)
    assert path.endswith("genre_stats/mfcc.json")
    back = load_stats(str(tmp_path / "search"), ("mfcc",))
    assert back.assignment == stats.assignment and back.input_shape == (130, 13)
    np.testing.assert_array_equal(back.mean, stats.mean)
    assert load_stats(str(tmp_path / "search"), ("mel",)) is None


def _streamed(root, rng, *, per_genre: int, per_shard: int, weight: float):
    """Shards of ``per_genre`` tracks a genre and six ``_other/`` ones, split at random with
    outlier exposure λ = ``weight``, and their stream: the folder, its stats and the data."""
    from genre.searchdata import ShardStream, statistics
    from genre.training import StreamedData

    tracks = [(f"{g}/{g}{k}.wav", g) for g in GENRES for k in range(per_genre)]
    tracks += [(f"_other/noise{k}.wav", None) for k in range(6)]
    root = _folder(root, rng, tracks, per_shard=per_shard)
    index = track_index(root)
    planned = plan_splits(index, features=("mfcc",), split="random", seed=1, outlier_weight=weight)
    stats = statistics(index, planned)
    source = ShardStream(index, stats)
    features = index.cfg.with_features(("mfcc",))
    return root, stats, StreamedData(stats, features, source, outlier_weight=weight)


@pytest.mark.slow  # Ray Data on the run's shared head
def test_a_stream_gives_a_split_once_with_outliers_marked_and_a_trainer_learns_from_it(
    tmp_path, rng, ray_local
):
    import keras

    from genre.models import ModelConfig
    from genre.training import Trainer, evaluate

    _, stats, data = _streamed(tmp_path / "s", rng, per_genre=10, per_shard=4, weight=0.5)
    assert data.has_other and data.input_shape == (130, 13)
    batches = list(data.source("train", batch_size=8, seed=5, other=True))
    y = np.concatenate([b[1] for b in batches])
    track = np.concatenate([b[2] for b in batches])
    train = stats.counts["train"]
    assert (y >= 0).sum() == train["segments"] and (y < 0).sum() == train["other_segments"]
    assert set(track) == {
        t for t, s in {**stats.assignment, **stats.other_assignment}.items() if s == "train"
    }
    assert all(len(b[0]) <= 8 for b in batches) and batches[0][0].dtype == np.float32
    keras.utils.set_random_seed(0)
    trainer = Trainer(data, ModelConfig(kind="mlp", width=16), batch_size=8, patience=9)
    for _ in range(3):
        metrics = trainer.step()
    assert metrics["train_segments_per_s"] > 0
    assert max(trainer.state.history["val_accuracy"]) > 0.6  # three genres: chance is 1/3
    test = evaluate(trainer.network, data, split="test")
    assert test["n_segments"] == stats.counts["test"]["segments"]


def test_auto_keeps_a_search_in_memory_when_it_fits_comfortably_and_streams_otherwise(parts):
    from genre.config import SearchSettings
    from genre.tuning import choose_data, in_memory_peak

    roots, _ = parts
    with pytest.warns(UserWarning, match="duplicate"):
        index = track_index(roots)
    features = {"mlp": ("mfcc",), "cnn": ("mfcc",)}
    peak = in_memory_peak(index, features)
    columns = 4 * 130 * (13 + 12) * int(index.segments.sum())
    assert peak == int(columns + 3.5 * 4 * 130 * 13 * int(index.segments.sum()))
    auto = SearchSettings(shards=roots)
    fits = choose_data(index, auto, features, available=2 * peak)
    assert fits.mode == "memory" and "within 50%" in fits.reason
    assert choose_data(index, auto, features, available=2 * peak - 1).mode == "stream"
    forced = choose_data(index, SearchSettings(shards=roots, data="memory"), features, available=1)
    assert forced.mode == "memory" and forced.reason.startswith("--data memory")


@pytest.mark.slow  # Ray Data on the run's shared head
def test_a_streamed_search_leaves_a_cpu_to_ray_data_and_refuses_a_cluster_without_one(
    ray_local, tmp_path
):
    from genre.config import SearchSettings
    from genre.tuning import streamed_trials_at_once

    assert ray_local.cluster_resources()["CPU"] == 2  # the suite's shared head
    assert streamed_trials_at_once(SearchSettings(shards=str(tmp_path))) == 1
    with pytest.raises(ParameterError, match="Ray Data needs one beside a trial's"):
        streamed_trials_at_once(SearchSettings(shards=str(tmp_path), cpus_per_trial=2))


@pytest.mark.slow  # Ray Data on the run's shared head
def test_a_streamed_champion_pools_refits_and_calibrates_as_one_held_in_memory(
    tmp_path, rng, ray_local
):
    """The champion phase of a streamed search: the refit's pooled views (and each fold's)
    have the normalisation and counts :func:`prepare`'s arrays give, every pooled segment
    is predicted once out of fold, and the post-hoc fit and the card read the stream."""
    from genre.card import card_for
    from genre.posthoc import fit_posthoc
    from genre.refit import refit
    from genre.training import HELD_OUT, evaluate, pooled, tracks_of

    root, stats, stream = _streamed(tmp_path / "s", rng, per_genre=8, per_shard=5, weight=0.0)
    memory = prepare(
        read_segments(root),
        features=("mfcc",),
        split="random",
        seed=1,
        assignment=stats.assignment,
        outlier_weight=0.0,
    )
    assert card_for(stream).splits == card_for(memory).splits
    assert "other_test" in card_for(stream).splits
    fold = tracks_of(stream, "val")[:2]
    for leave_out in (None, fold):
        a, b = pooled(stream, leave_out=leave_out), pooled(memory, leave_out=leave_out)
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(a.variance, b.variance, rtol=1e-4)
        assert a.counts == b.counts and list(tracks_of(a, "train")) == list(tracks_of(b, "train"))
    assert list(tracks_of(a, HELD_OUT)) == list(fold)

    config = {"kind": "mlp", "batch_size": 8, "learning_rate": 3e-3, "width": 16}
    again = refit(stream, config, epochs=2, folds=2, seed=0, at_once=1)  # a CPU for Ray Data
    probs, y, track = again.val_predicted
    pool = [*tracks_of(stream, "train"), *tracks_of(stream, "val")]
    assert sorted(set(track)) == sorted(pool) and len(track) == 3 * len(pool)  # each once
    assert probs.shape == (len(track), 3) and (y >= 0).all()
    assert again.describe()["tracks"] == len(pool)
    post = fit_posthoc(
        again.network,
        again.data,
        read_segments(root, features=()),  # no musicnn columns: entropy alone
        val_predicted=again.val_predicted,
        folds=again.folds,
    )
    test_probs, _, test_track = post.predicted["test"]
    assert len(test_probs) == stats.counts["test"]["segments"]
    assert set(test_track) == set(tracks_of(stream, "test"))
    assert post.review["n_test_other"] == stats.counts["test"]["other_tracks"] > 0
    report = evaluate(again.network, again.data, split="test", predicted=post.predicted["test"])
    assert report["n_tracks"] == stats.counts["test"]["tracks"]
