"""genre.calibration: temperature scaling, ECE/Brier, review and out-of-taxonomy thresholds."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.covariance import LedoitWolf

from genre.calibration import (
    Calibration,
    MahalanobisOOD,
    apply,
    auroc,
    brier_score,
    expected_calibration_error,
    fit_calibration,
    fit_temperature,
    ood_threshold,
    output_ood_score,
    plot_reliability,
    reliability_bins,
    review_threshold,
    temperature_scale,
)
from genre.errors import ParameterError

CLASSES = 10


def simulate(rng: np.random.Generator, *, tracks: int, power: float, boost: float = 2.0):
    """A model whose outputs are the true class probabilities raised to ``power``.

    Labels are drawn from the true probabilities, so ``power=1`` is perfectly calibrated,
    ``power > 1`` overconfident (temperature ``power`` undoes it) and ``power < 1``
    underconfident. ``boost`` raises the accuracy.
    """
    logits = rng.normal(scale=1.5, size=(tracks, CLASSES))
    logits[np.arange(tracks), rng.integers(0, CLASSES, tracks)] += boost
    truth = softmax(logits, axis=1)
    y = np.array([rng.choice(CLASSES, p=row) for row in truth])
    return softmax(power * logits, axis=1), y


# --- temperature scaling -----------------------------------------------------------------


def test_temperature_scale_keeps_argmax_and_rows_sum_to_one(rng):
    probs, _ = simulate(rng, tracks=500, power=3.0)
    for t in (0.1, 0.7, 1.0, 2.5, 20.0):
        out = temperature_scale(probs, temperature=t)
        np.testing.assert_allclose(out.sum(axis=1), 1.0)
        np.testing.assert_array_equal(out.argmax(axis=1), probs.argmax(axis=1))


def test_temperature_one_is_identity(rng):
    probs, _ = simulate(rng, tracks=50, power=1.0)
    np.testing.assert_allclose(temperature_scale(probs, temperature=1.0), probs, atol=1e-12)


def test_temperature_scale_undoes_a_power(rng):
    probs, _ = simulate(rng, tracks=50, power=1.0)
    sharpened = softmax(4.0 * np.log(probs), axis=1)
    np.testing.assert_allclose(temperature_scale(sharpened, temperature=4.0), probs, atol=1e-9)


def test_overconfident_model_gets_temperature_above_one(rng):
    probs, y = simulate(rng, tracks=4000, power=4.0)
    assert fit_temperature(probs, y) == pytest.approx(4.0, rel=0.1)


def test_underconfident_model_gets_temperature_below_one(rng):
    probs, y = simulate(rng, tracks=4000, power=0.5)
    assert fit_temperature(probs, y) == pytest.approx(0.5, rel=0.1)


def test_calibration_lowers_ece_of_overconfident_model_and_keeps_argmax(rng):
    val_probs, val_y = simulate(rng, tracks=4000, power=4.0)
    test_probs, test_y = simulate(rng, tracks=10000, power=4.0)
    calibrated = temperature_scale(test_probs, temperature=fit_temperature(val_probs, val_y))
    before = expected_calibration_error(test_probs, test_y)
    after = expected_calibration_error(calibrated, test_y)
    assert before > 0.15
    assert after < before
    assert after <= 0.05
    np.testing.assert_array_equal(calibrated.argmax(axis=1), test_probs.argmax(axis=1))


def test_tiny_validation_set_all_right_keeps_temperature_moderate():
    probs = np.full((10, 4), 0.1)
    probs[:, 0] = 0.7
    t = fit_temperature(probs, np.zeros(10, dtype=int))
    assert 0.2 < t < 1.0  # sharper, but not at the 0.05 bound


def test_tiny_validation_set_without_prior_goes_to_bound():
    probs = np.full((10, 4), 0.1)
    probs[:, 0] = 0.7
    t = fit_temperature(probs, np.zeros(10, dtype=int), prior_width=np.inf)
    assert t < 0.1


# --- ECE, Brier, reliability -------------------------------------------------------------


def test_perfectly_calibrated_model_has_small_ece(rng):
    probs, y = simulate(rng, tracks=20000, power=1.0)
    assert expected_calibration_error(probs, y) < 0.015


def test_ece_of_certain_wrong_answers_is_one():
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(probs, np.array([1, 0])) == pytest.approx(1.0)


def test_ece_known_value_on_hand_made_case():
    # Two tracks at 0.8 (one right), two at 0.6 (both right): (2·0.3 + 2·0.4) / 4.
    probs = np.array([[0.8, 0.2], [0.8, 0.2], [0.6, 0.4], [0.4, 0.6]])
    y = np.array([0, 1, 0, 1])
    assert expected_calibration_error(probs, y) == pytest.approx(0.35)


@pytest.mark.parametrize(
    ("probs", "y", "expected"),
    [
        ([[1.0, 0.0, 0.0]], [0], 0.0),
        ([[1.0, 0.0, 0.0]], [1], 2.0),
        ([[1 / 3, 1 / 3, 1 / 3]], [2], 2 / 3),
        ([[0.7, 0.2, 0.1], [0.5, 0.5, 0.0]], [0, 1], (0.14 + 0.5) / 2),
    ],
)
def test_brier_score_known_values(probs, y, expected):
    assert brier_score(np.array(probs), np.array(y)) == pytest.approx(expected)


def test_reliability_bins_put_confidence_one_in_last_bin():
    probs = np.array([[1.0, 0.0], [0.5, 0.5], [0.95, 0.05]])
    r = reliability_bins(probs, np.array([0, 0, 1]), bins=10)
    assert r["count"].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 2]
    assert r["accuracy"][9] == pytest.approx(0.5)
    assert np.isnan(r["confidence"][0])


def test_reliability_bins_are_closed_on_the_right():
    # 0.6 is on the edge between bins 5 and 6 of 10: it belongs to (0.5, 0.6], bin 5.
    probs = np.array([[0.6, 0.4], [0.4, 0.6], [0.65, 0.35]])
    r = reliability_bins(probs, np.array([0, 1, 1]), bins=10)
    assert r["count"].tolist() == [0, 0, 0, 0, 0, 2, 1, 0, 0, 0]
    assert r["accuracy"][5] == 1.0 and r["accuracy"][6] == 0.0
    assert r["confidence"][5] == pytest.approx(0.6) and r["confidence"][6] == pytest.approx(0.65)


def test_brier_score_is_not_halved_for_two_genres():
    # scikit-learn halves the two-class score by default; ours stays the sum over classes.
    assert brier_score(np.array([[1.0, 0.0]]), np.array([1])) == pytest.approx(2.0)


def test_float32_rows_that_sum_to_one_within_tolerance_are_scored_quietly():
    probs = np.array([[0.7002, 0.3], [1.0004, 0.0]], dtype=np.float32)  # sums 1.0002, 1.0004
    y = np.array([0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert brier_score(probs, y) == pytest.approx(((0.2998**2 + 0.09) + 2.0) / 2, abs=1e-3)
        assert reliability_bins(probs, y, bins=10)["count"][-1] == 1


def test_plot_reliability_writes_png(rng, tmp_path):
    probs, y = simulate(rng, tracks=300, power=4.0)
    after = temperature_scale(probs, temperature=4.0)
    path = plot_reliability(
        reliability_bins(probs, y),
        reliability_bins(after, y),
        path=tmp_path / "plots" / "reliability.png",
        title="test",
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- review threshold --------------------------------------------------------------------


def test_review_threshold_is_lowest_confidence_that_reaches_target():
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    correct = np.array([True, True, True, True, False, False])
    assert review_threshold(conf, correct, target=0.95, min_tracks=1) == pytest.approx(0.6)


def test_review_threshold_takes_in_all_tied_confidences():
    conf = np.array([0.9, 0.7, 0.7, 0.5])
    correct = np.array([True, True, False, True])
    assert review_threshold(conf, correct, target=0.95, min_tracks=1) == pytest.approx(0.9)


def test_review_threshold_lowest_wins_over_a_failing_higher_one():
    conf = np.linspace(0.99, 0.5, 20)
    correct = np.ones(20, dtype=bool)
    correct[0] = False  # the most confident track is wrong; all 20 together are 95 % right
    assert review_threshold(conf, correct, target=0.95, min_tracks=1) == 0.0


def test_review_threshold_is_zero_when_all_tracks_reach_target():
    assert review_threshold(np.array([0.3, 0.9]), np.array([True, True]), min_tracks=1) == 0.0


def test_review_threshold_is_one_when_target_is_unreachable():
    conf = np.array([0.9, 0.8, 0.7])
    assert review_threshold(conf, np.array([False, True, False]), min_tracks=1) == 1.0


def test_review_threshold_needs_min_tracks_to_vouch():
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, True, False, False])
    assert review_threshold(conf, correct, min_tracks=2) == pytest.approx(0.8)
    assert review_threshold(conf, correct, min_tracks=3) == 1.0


# --- out of taxonomy ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores_in", "scores_out", "expected"),
    [
        ([0, 1, 2], [3, 4], 1.0),
        ([3, 4], [0, 1, 2], 0.0),
        ([1, 1, 1], [1, 1], 0.5),
        ([0, 1], [1, 2], 0.875),
    ],
)
def test_auroc_known_values(scores_in, scores_out, expected):
    assert auroc(np.array(scores_in), np.array(scores_out)) == pytest.approx(expected)


def test_auroc_matches_pairwise_count(rng):
    s_in, s_out = rng.integers(0, 5, 40).astype(float), rng.integers(2, 7, 30).astype(float)
    pairs = (s_out[None, :] > s_in[:, None]) + 0.5 * (s_out[None, :] == s_in[:, None])
    assert auroc(s_in, s_out) == pytest.approx(pairs.mean())


@pytest.mark.parametrize("method", ["msp", "entropy"])
def test_output_ood_score_is_higher_for_flat_outputs(method):
    probs = np.array([[0.97, 0.01, 0.01, 0.01], [0.25, 0.25, 0.25, 0.25]])
    sharp, flat = output_ood_score(probs, method=method)
    assert flat > sharp
    assert 0.0 <= sharp and flat <= 1.0


def test_ood_threshold_is_validation_quantile():
    assert ood_threshold(np.arange(101.0), quantile=0.95) == pytest.approx(95.0)


def clusters(rng: np.random.Generator, *, tracks: int, dims: int, classes: int = 3):
    centres = rng.normal(scale=4.0, size=(classes, dims))
    y = rng.integers(0, classes, tracks)
    scales = rng.uniform(0.5, 3.0, dims)  # features on different scales, as pooled stats are
    return (centres[y] + rng.normal(size=(tracks, dims))) * scales, y, centres, scales


def test_mahalanobis_scores_far_points_higher(rng):
    x, y, centres, scales = clusters(rng, tracks=300, dims=20)
    model = MahalanobisOOD.fit(x, y, components=8)
    near = model.score(centres * scales + 0.1 * rng.normal(size=centres.shape))
    far = model.score((centres.mean(axis=0) + 12.0 * rng.normal(size=(5, 20))) * scales)
    assert far.min() > near.max()


def test_mahalanobis_is_exact_with_all_components(rng):
    x, y, _, _ = clusters(rng, tracks=200, dims=6)
    model = MahalanobisOOD.fit(x, y, components=6, shrinkage=0.2)
    means = np.stack([x[y == c].mean(axis=0) for c in range(3)])
    resid = x - means[y]
    scale = resid.std(axis=0)
    cov = np.cov(resid / scale, rowvar=False, bias=True)
    cov = 0.8 * cov + 0.2 * np.trace(cov) / 6 * np.eye(6)
    queries = rng.normal(scale=5.0, size=(10, 6))
    d = (queries[:, None, :] - means[None]) / scale
    expected = np.sqrt(np.einsum("qcd,de,qce->qc", d, np.linalg.inv(cov), d).min(axis=1))
    np.testing.assert_allclose(model.score(queries), expected, rtol=1e-4)


def test_mahalanobis_fits_more_dims_than_tracks(rng):
    x, y, _, _ = clusters(rng, tracks=30, dims=80)
    scores = MahalanobisOOD.fit(x, y).score(x)
    assert scores.shape == (30,) and np.all(np.isfinite(scores))


def test_mahalanobis_json_round_trip_gives_identical_scores(rng):
    x, y, _, _ = clusters(rng, tracks=200, dims=12)
    model = MahalanobisOOD.fit(x, y, components=4)
    again = MahalanobisOOD.from_dict(json.loads(json.dumps(model.to_dict())))
    queries = rng.normal(scale=5.0, size=(20, 12))
    np.testing.assert_array_equal(again.score(queries), model.score(queries))


def test_mahalanobis_default_shrinkage_is_ledoit_wolf(rng):
    x, y, _, _ = clusters(rng, tracks=200, dims=10)
    x = x @ rng.normal(size=(10, 10))  # correlated features, so the weight is inside (0, 1)
    means = np.stack([x[y == c].mean(axis=0) for c in range(3)])
    resid = x - means[y]
    weight = LedoitWolf(assume_centered=True).fit(resid / resid.std(axis=0)).shrinkage_
    assert 0.0 < weight < 1.0
    queries = rng.normal(scale=5.0, size=(10, 10))
    np.testing.assert_allclose(
        MahalanobisOOD.fit(x, y, components=4).score(queries),
        MahalanobisOOD.fit(x, y, components=4, shrinkage=weight).score(queries),
        rtol=1e-6,
    )


# --- Calibration, fit_calibration, apply -------------------------------------------------


def test_calibration_round_trips_through_json(rng):
    x, y, _, _ = clusters(rng, tracks=100, dims=5)
    ood = {
        "method": "mahalanobis",
        "threshold": 3.25,
        "mahalanobis": MahalanobisOOD.fit(x, y, components=2).to_dict(),
    }
    cal = Calibration(
        temperature=1.7,
        min_confidence=0.62,
        ood=ood,
        ece_before=0.2,
        ece_after=0.03,
        brier_before=0.5,
        brier_after=0.4,
        n_val_tracks=100,
    )
    again = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal
    assert again.temperature == 1.7 and again.min_confidence == 0.62
    assert again.ood["threshold"] == 3.25


def test_fit_calibration_on_overconfident_model(rng):
    val_probs, val_y = simulate(rng, tracks=3000, power=4.0, boost=5.0)
    test_probs, test_y = simulate(rng, tracks=6000, power=4.0, boost=5.0)
    cal = fit_calibration(val_probs, val_y, test_probs=test_probs, test_y=test_y)
    assert cal.temperature > 1.0 and cal.n_val_tracks == 3000
    assert cal.ece_after < cal.ece_before and cal.ece_after <= 0.05
    assert cal.brier_after < cal.brier_before
    # The card's review threshold, which --min-confidence passes on beside the genre sets.
    out = apply(cal, test_probs, min_confidence=cal.min_confidence)
    kept = ~out["needs_review"]
    assert kept.mean() > 0.3
    assert np.mean(out["prediction"][kept] == test_y[kept]) >= 0.94
    assert Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal


def test_fit_calibration_with_mahalanobis_stores_parameters(rng):
    x, y, _, _ = clusters(rng, tracks=150, dims=8)
    model = MahalanobisOOD.fit(x, y, components=3)
    probs, py = simulate(rng, tracks=150, power=1.0)
    cal = fit_calibration(probs, py, ood_method="mahalanobis", mahalanobis=model, val_embeddings=x)
    assert cal.ood["threshold"] == pytest.approx(np.quantile(model.score(x), 0.95))
    assert np.mean(apply(cal, probs, embeddings=x)["review_reason"] == "out-of-taxonomy") <= 0.06


MSP_HALF = {"method": "msp", "threshold": 0.5, "mahalanobis": None}


def test_apply_flags_rows_with_the_right_reasons():
    cal = Calibration(min_confidence=0.6, ood=MSP_HALF)
    probs = np.array([[0.9, 0.05, 0.05], [0.55, 0.4, 0.05], [0.4, 0.3, 0.3]])
    out = apply(cal, probs)
    assert out["needs_review"].tolist() == [False, True, True]
    assert out["review_reason"].tolist() == [None, "low-confidence", "out-of-taxonomy"]
    np.testing.assert_allclose(out["ood_score"], [0.1, 0.45, 0.6])


def test_apply_min_confidence_override():
    cal = Calibration(min_confidence=0.6, ood=MSP_HALF)
    probs = np.array([[0.9, 0.05, 0.05], [0.55, 0.4, 0.05], [0.4, 0.3, 0.3]])
    out = apply(cal, probs, min_confidence=0.3)
    assert out["review_reason"].tolist() == [None, None, "out-of-taxonomy"]


def test_apply_min_confidence_one_flags_even_certain_tracks():
    out = apply(Calibration(min_confidence=1.0), np.array([[1.0, 0.0], [0.5, 0.5]]))
    assert out["needs_review"].all()
    assert np.isnan(out["ood_score"]).all()


def test_apply_temperature_does_not_change_prediction(rng):
    probs, _ = simulate(rng, tracks=200, power=4.0)
    out = apply(Calibration(temperature=3.0), probs)
    np.testing.assert_array_equal(out["prediction"], probs.argmax(axis=1))
    assert out["confidence"].mean() < probs.max(axis=1).mean()


# --- bad input ---------------------------------------------------------------------------


PROBS = np.array([[0.7, 0.3], [0.4, 0.6]])


@pytest.mark.parametrize(
    "call",
    [
        lambda: temperature_scale(PROBS, temperature=-1.0),
        lambda: temperature_scale(PROBS, temperature=0.0),
        lambda: temperature_scale(PROBS[0], temperature=1.0),
        lambda: temperature_scale(np.array([[0.7, 0.7]]), temperature=1.0),
        lambda: temperature_scale(np.array([[np.nan, 1.0]]), temperature=1.0),
        lambda: fit_temperature(PROBS, np.array([0])),
        lambda: fit_temperature(PROBS, np.array([0, 2])),
        lambda: fit_temperature(PROBS, np.array([0, 1]), bounds=(2.0, 1.0)),
        lambda: brier_score(PROBS, np.array([0.0, 1.0])),
        lambda: expected_calibration_error(PROBS, np.array([0, 1]), bins=0),
        lambda: review_threshold(np.array([0.5, 0.6]), np.array([True])),
        lambda: review_threshold(np.array([0.5]), np.array([True]), target=1.5),
        lambda: auroc(np.array([]), np.array([1.0])),
        lambda: ood_threshold(np.array([1.0, 2.0]), quantile=0.0),
        lambda: Calibration(ood=[("method", "msp")]),
        lambda: output_ood_score(PROBS, method="energy"),
        lambda: MahalanobisOOD.fit(np.ones((4, 3)), np.array([0, 1])),
        lambda: Calibration(temperature=-2.0),
        lambda: Calibration(min_confidence=1.5),
        lambda: Calibration(ood={"method": "energy", "threshold": 1.0, "mahalanobis": None}),
        lambda: Calibration(ood={"method": "mahalanobis", "threshold": 1.0, "mahalanobis": None}),
        lambda: Calibration.from_dict({"temperature": 1.0}),
        lambda: Calibration.from_dict({"format": "genre.calibration/1", "bogus": 1}),
        lambda: apply(Calibration(), PROBS, min_confidence=2.0),
        lambda: fit_calibration(PROBS, np.array([0, 1]), ood_method="mahalanobis"),
    ],
)
def test_bad_input_raises_parameter_error(call):
    with pytest.raises(ParameterError):
        call()


def test_mahalanobis_apply_without_embeddings_raises(rng):
    x, y, _, _ = clusters(rng, tracks=60, dims=4)
    ood = {
        "method": "mahalanobis",
        "threshold": 3.0,
        "mahalanobis": MahalanobisOOD.fit(x, y, components=2).to_dict(),
    }
    with pytest.raises(ParameterError, match="embeddings"):
        apply(Calibration(ood=ood), PROBS)
