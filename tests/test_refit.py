"""The champion refit on train + val: stratified folds, a pooled view, out-of-fold predictions."""

from __future__ import annotations

import numpy as np
import pytest

from genre.errors import ParameterError
from genre.posthoc import _fit_mahalanobis
from genre.refit import crossfit_folds, refit
from genre.report import segment_to_track
from genre.training import pooled, prepare
from tests.test_training import segment_set


def _tracks(per_genre: dict[str, int]) -> tuple[list[str], list[str]]:
    tracks = [f"{g}/{g}.{i:05d}.wav" for g, n in per_genre.items() for i in range(n)]
    return tracks, [t.split("/")[0] for t in tracks]


def test_folds_are_disjoint_cover_every_track_and_are_stratified_by_genre():
    tracks, genres = _tracks({"blues": 7, "jazz": 6, "rock": 5})
    folds = crossfit_folds(tracks, genres, folds=5, seed=1)
    assert len(folds) == 5
    flat = [t for fold in folds for t in fold]
    assert sorted(flat) == sorted(tracks)  # every track once
    sizes = [len(f) for f in folds]
    assert max(sizes) - min(sizes) <= 1
    for genre in ("blues", "jazz", "rock"):
        per_fold = [sum(t.startswith(genre) for t in fold) for fold in folds]
        assert max(per_fold) - min(per_fold) <= 1, (genre, per_fold)


def test_folds_depend_on_the_seed_not_on_the_order_of_the_tracks():
    tracks, genres = _tracks({"blues": 6, "jazz": 6})
    one = crossfit_folds(tracks, genres, folds=3, seed=4)
    again = crossfit_folds(tracks[::-1], genres[::-1], folds=3, seed=4)
    other = crossfit_folds(tracks, genres, folds=3, seed=5)
    assert [list(f) for f in one] == [list(f) for f in again]
    assert [list(f) for f in one] != [list(f) for f in other]


def test_fewer_folds_when_a_genre_has_fewer_tracks_and_never_fewer_than_two():
    tracks, genres = _tracks({"blues": 9, "jazz": 3})
    assert len(crossfit_folds(tracks, genres, folds=5)) == 3
    tracks, genres = _tracks({"blues": 9, "jazz": 1})
    assert len(crossfit_folds(tracks, genres, folds=5)) == 2
    for bad in (0, 1, 2.0, True):
        with pytest.raises(ParameterError, match="folds="):
            crossfit_folds(tracks, genres, folds=bad)


def test_the_pooled_view_trains_on_train_and_val_with_their_normalisation(rng):
    data = prepare(segment_set(rng), features=("mfcc",), split="random", seed=3)
    view = pooled(data)
    pool = set(data.track["train"]) | set(data.track["val"])
    assert set(view.track["train"]) == pool and len(view.y["val"]) == 0
    assert view.x["test"] is data.x["test"]
    both = np.concatenate([data.x["train"], data.x["val"]]).reshape(-1, 13)
    np.testing.assert_allclose(view.mean, both.mean(axis=0), rtol=1e-4, atol=1e-5)
    left_out = sorted(pool)[:4]
    fold = pooled(data, leave_out=np.array(left_out))
    assert not set(left_out) & set(fold.track["train"])
    assert view.counts["train"]["tracks"] == len(pool) == fold.counts["train"]["tracks"] + 4


def test_out_of_fold_distances_come_from_models_that_did_not_see_the_fold(rng):
    """A track's own segments pull the Mahalanobis class mean towards it: in-sample
    distances are smaller than cross-fitted ones."""
    segs = segment_set(rng, per_genre=12, segments=4)
    segs.features["musicnn_msd"] = rng.standard_normal((len(segs), 40)).astype(np.float32)
    data = prepare(segs, features=("mfcc",), split="random", seed=3)
    view = pooled(data)
    for part in (view.x, view.y, view.track):  # calibrated on the pool, as after a refit
        part["val"] = part["train"]
    tracks = np.unique(view.track["val"])
    heads = {"val": (tracks, None), "test": (np.unique(view.track["test"]), None)}
    _, _, inside = _fit_mahalanobis(segs, view, heads, [])
    folds = crossfit_folds(tracks, [t.split("/")[0] for t in tracks], folds=4)
    _, _, crossed = _fit_mahalanobis(segs, view, heads, [], folds)
    np.testing.assert_array_equal(inside["test"], crossed["test"])  # test: the full model
    assert np.mean(crossed["val"] > inside["val"]) >= 0.9


@pytest.mark.slow
def test_a_refit_predicts_every_pooled_track_out_of_fold(rng, ray_local):
    """Labels that do not depend on the features: the refit network learns its training
    tracks by heart, the out-of-fold predictions of the same tracks are at chance."""
    segs = segment_set(rng, genres=("blues", "jazz"), per_genre=16, segments=2, signal=0.0)
    data = prepare(segs, features=("mfcc",), split="random", seed=3)
    config = {
        "kind": "mlp",
        "features": ("mfcc",),
        "learning_rate": 3e-3,
        "batch_size": 16,
        "width": 64,
        "dropout": 0.0,
        "trial_seed": 1,
    }
    again = refit(data, config, epochs=25, folds=4, seed=0)
    view = again.data
    probs, y, track = again.val_predicted
    assert len(again.folds) == 4 and len(view.y["val"]) == 0
    assert sorted(track) == sorted(view.track["train"]) and probs.shape == (len(track), 2)
    truth = dict(zip(view.track["train"], view.y["train"], strict=True))
    assert [truth[t] for t in track] == list(y)

    def track_accuracy(probs, track):
        tracks, p = segment_to_track(track, probs, aggregate="mean")
        return np.mean(np.argmax(p, axis=1) == [truth[t] for t in tracks])

    in_sample = track_accuracy(
        again.network.predict(view.x["train"], verbose=0), view.track["train"]
    )
    out_of_fold = track_accuracy(probs, track)
    assert in_sample >= 0.9 and out_of_fold <= 0.75, (in_sample, out_of_fold)
    assert again.describe()["tracks"] == len(truth) and again.describe()["epochs"] == 25
