"""Splits by track, normalisation fitted on train only, early stopping keeping the best weights."""

from __future__ import annotations

import numpy as np
import pytest

from genre.config import FeatureConfig
from genre.corpus import gtzan_coverage
from genre.errors import ParameterError
from genre.models import ModelConfig
from genre.shards import SegmentSet
from genre.training import fit, prepare, stack_features


def segment_set(
    rng, *, genres=("blues", "jazz", "rock"), per_genre=10, segments=4, names=None, signal=1.0
) -> SegmentSet:
    """Random MFCC-shaped segments whose mean depends on the genre (learnable, not trivially)."""
    cfg = FeatureConfig(features=("mfcc", "chroma"))
    if names is None:
        names = [(g, f"{g}/{g}.{i:05d}.wav") for g in genres for i in range(per_genre)]
    track_id = np.repeat([t for _, t in names], segments).astype(object)
    genre = np.repeat([g for g, _ in names], segments).astype(object)
    offsets = {g: k for k, g in enumerate(sorted({g for g, _ in names}))}
    n = len(track_id)
    mfcc = rng.standard_normal((n, 130, 13)).astype(np.float32)
    mfcc[:, :, 1] += signal * np.array([offsets[g] for g in genre], np.float32)[:, None]
    chroma = rng.random((n, 130, 12)).astype(np.float32)
    return SegmentSet(
        track_id=track_id,
        path=track_id.copy(),
        genre=genre,
        segment=np.tile(np.arange(segments), len(names)).astype(np.int32),
        features={"mfcc": mfcc, "chroma": chroma},
        cfg=cfg,
    )


def test_segments_of_one_track_stay_in_one_split(rng):
    data = prepare(segment_set(rng), features=("mfcc",), split="random", seed=3)
    seen = {split: set(tracks) for split, tracks in data.track.items()}
    assert (
        not (seen["train"] & seen["val"])
        and not (seen["train"] & seen["test"])
        and not (seen["val"] & seen["test"])
    )
    assert sum(len(s) for s in seen.values()) == 30
    assert all(data.counts[s]["segments"] == 4 * data.counts[s]["tracks"] for s in seen)


def test_split_is_stratified_and_deterministic_from_the_seed(rng):
    segs = segment_set(rng)
    a = prepare(segs, features=("mfcc",), seed=5)
    b = prepare(segs, features=("mfcc",), seed=5)
    c = prepare(segs, features=("mfcc",), seed=6)
    assert all(np.array_equal(a.track[s], b.track[s]) for s in a.track)
    assert any(not np.array_equal(a.track[s], c.track[s]) for s in a.track)
    for split in ("val", "test"):
        genres = {t.split("/")[0] for t in a.track[split]}
        assert genres == {"blues", "jazz", "rock"}, split


def test_normalisation_is_fitted_on_the_training_split_only(rng):
    data = prepare(segment_set(rng), features=("mfcc", "chroma"), seed=1)
    train = data.x["train"].reshape(-1, 25).astype(np.float64)
    np.testing.assert_allclose(data.mean, train.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data.variance, train.var(axis=0), rtol=1e-4)
    everything = np.concatenate([data.x[s] for s in data.x]).reshape(-1, 25)
    assert not np.allclose(data.mean, everything.mean(axis=0), atol=1e-4)


def test_features_stack_along_the_bins_axis(rng):
    segs = segment_set(rng)
    stacked = stack_features(segs.features, ("mfcc", "chroma"))
    assert stacked.shape == (len(segs), 130, 25)
    np.testing.assert_array_equal(stacked[..., 13:], segs.features["chroma"])
    with pytest.raises(ParameterError, match="mel"):
        stack_features(segs.features, ("mel",))


def test_auto_split_is_random_for_a_few_gtzan_named_tracks(rng):
    data = prepare(segment_set(rng), features=("mfcc",), split="auto")
    assert data.split_method == "random"


def test_auto_split_uses_the_published_lists_for_the_whole_of_gtzan(rng):
    from genre.corpus import _gtzan_lists, gtzan_filtered_split

    names = [
        (key.split(".")[0], f"{key.split('.')[0]}/{key}.wav") for key in sorted(_gtzan_lists())
    ]
    assert gtzan_coverage([t for _, t in names]) == 1.0
    data = prepare(segment_set(rng, names=names, segments=1), features=("mfcc",), split="auto")
    assert data.split_method == "gtzan-filtered"
    published = gtzan_filtered_split([t for _, t in names])
    assert {t: s for s in data.track for t in data.track[s]} == published
    assert (
        data.counts["train"]["tracks"],
        data.counts["val"]["tracks"],
        data.counts["test"]["tracks"],
    ) == (443, 197, 290)


def test_unlabelled_or_single_genre_shards_cannot_train(rng):
    segs = segment_set(rng, genres=("rock",))
    with pytest.raises(ParameterError, match="two genres"):
        prepare(segs, features=("mfcc",))
    segs.genre[:] = None
    with pytest.raises(ParameterError, match="no labelled"):
        prepare(segs, features=("mfcc",))


@pytest.mark.slow
def test_fit_restores_the_weights_of_the_best_validation_epoch(rng):
    # No signal in the features: a wide MLP memorises the training tracks and the
    # validation loss rises after the first epochs, so the best epoch is not the last.
    data = prepare(segment_set(rng, per_genre=8, signal=0.0), features=("mfcc",), seed=0)
    result = fit(
        data,
        ModelConfig(kind="mlp", width=32, learning_rate=1e-2),
        max_epochs=8,
        batch_size=16,
        patience=1,
    )
    losses = result.history["val_loss"]
    assert result.best_epoch == int(np.argmin(losses))
    assert result.best_epoch < len(losses) - 1, f"the scenario needs a worse last epoch: {losses}"
    probs = result.network.predict(data.x["val"], verbose=0)
    y = data.y["val"]
    val_loss = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0))))
    assert val_loss == pytest.approx(min(losses), rel=1e-4)
    assert val_loss < losses[-1]
    assert (
        result.stopped_early and len(losses) == result.best_epoch + 2
    )  # patience 1: one epoch past the best


def test_a_resumed_trial_goes_on_from_the_newest_checkpoint_it_can_read(rng, tmp_path):
    # A search killed while Tune replaces a checkpoint hands back one that is gone or torn.
    from ray import tune

    from genre.training import LAST_WEIGHTS, STATE_FILE, Trainer
    from genre.tuning import _resumed

    data = prepare(segment_set(rng, per_genre=4), features=("mfcc",), seed=0)

    def fresh() -> Trainer:
        return Trainer(data, ModelConfig(kind="mlp", width=8), batch_size=16, patience=9)

    trainer, trial = fresh(), tmp_path / "trial"
    for k in range(3):
        trainer.step()
        (trial / f"checkpoint_{k:06d}").mkdir(parents=True)
        trainer.save(trial / f"checkpoint_{k:06d}")

    def resumed_epoch(handed: str) -> int:
        return _resumed(fresh, tune.Checkpoint.from_directory(str(trial / handed))).state.epoch

    assert resumed_epoch("checkpoint_000001") == 2  # readable: what Tune handed
    (trial / "checkpoint_000001" / STATE_FILE).unlink()
    assert resumed_epoch("checkpoint_000001") == 3  # torn: the newest beside it
    weights = trial / "checkpoint_000002" / LAST_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:200])
    assert resumed_epoch("checkpoint_000001") == 1  # that one torn too: the older one
    (trial / "checkpoint_000000" / STATE_FILE).write_text("{")
    assert resumed_epoch("checkpoint_000001") == 0  # nothing readable: start again


def test_segments_with_non_finite_features_are_refused_naming_their_tracks(rng):
    segs = segment_set(rng)
    segs.features["mfcc"][5, 3, 2] = np.nan  # a segment of blues/blues.00001.wav
    segs.features["mfcc"][80, 0, 0] = np.inf  # a segment of rock/rock.00000.wav
    with pytest.raises(ParameterError) as info:
        prepare(segs, features=("mfcc",))
    message = str(info.value)
    assert message.startswith("2 segments of 2 tracks hold non-finite feature values")
    assert "blues/blues.00001.wav" in message and "rock/rock.00000.wav" in message
    assert prepare(segs, features=("chroma",)).labels  # the other feature is usable


def test_tune_on_shards_with_non_finite_features_exits_2_with_one_line(rng, tmp_path):
    from genre.shards import ShardStore, segments_table, write_shard
    from tests.conftest import run_job

    segs = segment_set(rng, per_genre=4)
    segs.features["mfcc"][0] = np.nan
    n = len(segs)
    table = segments_table(
        track_id=segs.track_id,
        path=segs.path,
        genre=segs.genre,
        segment=segs.segment,
        start_s=segs.segment.astype(np.float32) * 3,
        duration_s=np.full(n, 12.0),
        features={"mfcc": segs.features["mfcc"]},
        cfg=FeatureConfig(features=("mfcc",)),
    )
    write_shard(str(tmp_path / "shards"), table)
    ShardStore(str(tmp_path / "shards"), FeatureConfig(features=("mfcc",))).write_manifest()
    result = run_job(
        "jobs.tune",
        str(tmp_path / "shards"),
        "--models",
        "mlp",
        "--num-samples",
        "1",
        "--tracking-uri",
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        "--storage",
        str(tmp_path / "ray"),
        "--num-cpus",
        "1",
        timeout=300,
    )
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "non-finite feature values (blues/blues.00000.wav)" in lines[0]
