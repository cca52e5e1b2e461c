"""genre.conformal: split-conformal genre sets, their coverage, and their path through the
model card, the review flags, the results table and the command lines."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter

import duckdb
import numpy as np
import pandas as pd
import pytest

from genre.calibration import Calibration, apply, fit_calibration
from genre.card import LabelPlan, ModelCard
from genre.config import FeatureConfig, SearchSettings
from genre.conformal import (
    METHODS,
    Conformal,
    conformal_quantile,
    fit_conformal,
    nonconformity,
    prediction_sets,
    set_metrics,
)
from genre.errors import ParameterError
from genre.labeling import LabelSummary, format_file_label
from genre.ood import MahalanobisOOD
from genre.predictor import review, score_tracks
from genre.results import ResultStore, read_results, results_table
from genre.tracking import SearchOutcome
from tests.conftest import main_in_process, one_error_line

LABELS = ("blues", "jazz", "rock", "metal")


def exchangeable(rng, n: int, k: int = 4, sharpness: float = 2.0):
    """Tracks whose true genre is drawn from their own (so calibrated) probabilities."""
    logits = sharpness * rng.normal(size=(n, k))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    y = (p.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    return p, np.minimum(y, k - 1)


# --- the math -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, coverage, rank",
    [(20, 0.9, 19), (10, 0.9, 10), (9, 0.9, 9), (99, 0.95, 95), (100, 0.5, 51), (8, 0.9, None)],
)
def test_the_quantile_is_the_finite_sample_one(n, coverage, rank):
    """⌈(n + 1)(1 − α)⌉-th smallest; infinite when n is too small (9 · 0.9 must not round
    up to the 10th of 9)."""
    scores = np.arange(1, n + 1) / 1000.0
    q = conformal_quantile(scores, coverage=coverage)
    assert q == (math.inf if rank is None else scores[rank - 1])


@pytest.mark.parametrize("method", METHODS)
def test_coverage_holds_over_many_random_splits(rng, method):
    """On exchangeable tracks the sets cover ≥ 1 − α on average over calibration/test splits;
    lac's (continuous scores, sets exactly "score ≤ q̂") no more than 1 − α + 1/(n + 1).
    aps without randomisation keeps the genre that crosses q̂, so it covers more."""
    alpha, n_cal, n_test, splits = 0.1, 100, 400, 300
    coverage = []
    for _ in range(splits):
        p, y = exchangeable(rng, n_cal + n_test)
        fitted = fit_conformal(p[:n_cal], y[:n_cal], coverage=1 - alpha, method=method)
        coverage.append(set_metrics(fitted.sets(p[n_cal:]), y[n_cal:])["coverage"])
    mean = float(np.mean(coverage))
    tolerance = 3 * np.std(coverage) / np.sqrt(splits)  # the mean's own noise
    assert mean >= 1 - alpha - tolerance
    if method == "lac":
        assert mean <= 1 - alpha + 1 / (n_cal + 1) + tolerance
        assert np.std(coverage) < 0.05  # per split it is near too, as Beta(n + 1 − l, l) says


def test_lac_sets_are_smaller_than_aps_sets_at_the_same_coverage(rng):
    p, y = exchangeable(rng, 4000)
    size = {
        m: set_metrics(fit_conformal(p[:1000], y[:1000], method=m).sets(p[1000:]), y[1000:])[
            "mean_size"
        ]
        for m in METHODS
    }
    assert size["lac"] < size["aps"]


def test_scores_and_sets_on_a_known_row():
    p = np.array([[0.6, 0.3, 0.1, 0.0]])
    assert nonconformity(p, np.array([1]), method="lac")[0] == pytest.approx(0.7)
    assert nonconformity(p, np.array([1]), method="aps")[0] == pytest.approx(0.9)
    # lac: every genre with p ≥ 1 − q̂; aps: best first until the mass reaches q̂.
    assert prediction_sets(p, threshold=0.75, method="lac").tolist() == [[True, True, False, False]]
    assert prediction_sets(p, threshold=0.3, method="lac").tolist() == [[False] * 4]
    assert prediction_sets(p, threshold=0.5, method="aps").tolist() == [[True, False, False, False]]
    assert prediction_sets(p, threshold=0.61, method="aps").tolist() == [[True, True, False, False]]
    assert prediction_sets(p, threshold=math.inf, method="aps").all()


def test_a_higher_coverage_gives_larger_sets_from_the_same_scores(rng):
    p, y = exchangeable(rng, 600)
    fitted = fit_conformal(p[:200], y[:200], coverage=0.8)
    low, high = fitted.sets(p[200:], coverage=0.8), fitted.sets(p[200:], coverage=0.95)
    assert np.all(high >= low) and high.sum() > low.sum()
    assert fitted.threshold_at(0.95) >= fitted.threshold


def test_aps_sets_are_never_empty(rng):
    p, y = exchangeable(rng, 500)
    fitted = fit_conformal(p[:100], y[:100], coverage=0.5, method="aps")
    assert fitted.sets(p[100:]).sum(axis=1).min() >= 1


@pytest.mark.parametrize(
    "call",
    [
        lambda: fit_conformal(np.full((3, 2), 0.5), np.array([0, 1, 0]), coverage=1.0),
        lambda: fit_conformal(np.full((3, 2), 0.5), np.array([0, 1, 0]), coverage=0),
        lambda: fit_conformal(np.full((3, 2), 0.5), np.array([0, 1, 0]), method="raps"),
        lambda: conformal_quantile(np.array([0.3, 0.1]), coverage=0.5),
        lambda: Conformal(method="lac", alpha=0.1, scores=()),
        lambda: Conformal(method="lac", alpha=1.0, scores=(0.1,)),
    ],
)
def test_bad_input_is_a_parameter_error(call):
    with pytest.raises(ParameterError):
        call()


# --- review flags ---------------------------------------------------------------------------------


def _lac(threshold: float, n: int = 19) -> Conformal:
    """A lac predictor whose threshold at coverage 0.9 is ``threshold`` (19 of 20 scores)."""
    return Conformal(method="lac", alpha=0.1, scores=(*[threshold] * n, 1.0))


def test_empty_and_ambiguous_sets_are_flagged_with_their_reasons():
    probs = np.array([[0.9, 0.05, 0.03, 0.02], [0.4, 0.3, 0.2, 0.1], [0.45, 0.45, 0.05, 0.05]])
    tight = apply(Calibration(conformal=_lac(0.5)), probs)  # sets: p ≥ 0.5
    assert tight["in_set"].sum(axis=1).tolist() == [1, 0, 0]
    assert tight["review_reason"].tolist() == [None, "none-fits", "none-fits"]
    loose = apply(Calibration(conformal=_lac(0.85)), probs)  # sets: p ≥ 0.15
    assert loose["in_set"].sum(axis=1).tolist() == [1, 3, 2]
    assert loose["review_reason"].tolist() == [None, "ambiguous", None]
    strict = apply(Calibration(conformal=_lac(0.85)), probs, max_set=1)
    assert strict["review_reason"].tolist() == [None, "ambiguous", "ambiguous"]


def test_confidence_is_a_reason_only_when_asked_for():
    cal = Calibration(min_confidence=0.95, conformal=_lac(0.6))
    probs = np.array([[0.9, 0.05, 0.03, 0.02]])
    assert apply(cal, probs)["review_reason"].tolist() == [None]  # the card's 0.95 is not used
    asked = apply(cal, probs, min_confidence=0.95)
    assert asked["review_reason"].tolist() == ["low-confidence"]


def test_a_calibration_without_sets_reviews_as_before():
    ood = {"method": "msp", "threshold": 0.5, "mahalanobis": None}
    cal = Calibration(min_confidence=0.6, ood=ood)
    probs = np.array([[0.9, 0.05, 0.05, 0.0], [0.55, 0.4, 0.05, 0.0], [0.4, 0.3, 0.3, 0.0]])
    out = apply(cal, probs, max_set=1, review_domain_shift=True)
    assert out["in_set"] is None and np.isnan(out["domain_shift"]).all()
    assert out["review_reason"].tolist() == [None, "low-confidence", "out-of-taxonomy"]


# --- the card, the predictor and the results table -----------------------------------------------


def _card(calibration) -> ModelCard:
    return ModelCard(
        labels=LABELS,
        features=("mfcc",),
        feature_config=FeatureConfig(features=("mfcc",)),
        calibration=calibration,
    )


def test_the_sets_round_trip_through_the_card(rng):
    p, y = exchangeable(rng, 60)
    cal = fit_calibration(p[:40], y[:40], test_probs=p[40:], test_y=y[40:], coverage=0.85)
    card = _card(cal)
    again = ModelCard.from_metadata(json.loads(card.to_json()))
    assert again == card and again.conformal == cal.conformal
    assert again.conformal.coverage == pytest.approx(0.85) and again.conformal.n == 40
    assert again.conformal.fitted_on == "validation tracks" and again.conformal.n_test == 20
    assert again.conformal.threshold_at(0.7) == cal.conformal.threshold_at(0.7)
    stored = card.to_metadata()["calibration"]["conformal"]
    assert stored["threshold"] == cal.conformal.threshold and stored["n"] == 40


def test_a_card_whose_threshold_was_edited_is_refused(rng):
    p, y = exchangeable(rng, 40)
    meta = json.loads(_card(fit_calibration(p, y)).to_json())
    meta["calibration"]["conformal"]["threshold"] = 0.01
    with pytest.raises(ParameterError, match="edited"):
        ModelCard.from_metadata(meta)


def _old_card(rng) -> ModelCard:
    """A card as tune wrote it before genre sets: its calibration has no conformal key."""
    p, y = exchangeable(rng, 40)
    old = fit_calibration(p, y, coverage=None).to_dict()
    assert "conformal" not in old
    return ModelCard.from_metadata(json.loads(_card(old).to_json()))


def test_an_old_card_still_labels_with_no_sets_and_the_old_flags(rng, tmp_path):
    card = _old_card(rng)
    assert card.conformal is None
    plan = LabelPlan.from_card(card, max_set=1, review_domain_shift=True)
    seg_probs, _ = exchangeable(rng, 6)
    order, scored = score_tracks(plan, np.array([0, 0, 1, 1, 2, 2]), seg_probs, {})
    expected = apply(card.calibration, np.stack([seg_probs[i : i + 2].mean(0) for i in (0, 2, 4)]))
    assert order.tolist() == [0, 1, 2] and scored["genres"].tolist() == [None] * 3
    assert scored["review_reason"].tolist() == expected["review_reason"].tolist()
    with pytest.raises(ParameterError, match="--coverage 0.8: this model has no genre sets"):
        LabelPlan.from_card(card, coverage=0.8)


def test_the_predictor_gives_each_track_its_set_best_first():
    plan = LabelPlan.from_card(_card(Calibration(conformal=_lac(0.85))), coverage=0.9)
    seg_probs = np.array([[0.1, 0.05, 0.3, 0.55], [0.1, 0.1, 0.3, 0.5], [0.97, 0.01, 0.01, 0.01]])
    _, scored = score_tracks(plan, np.array([0, 0, 1]), seg_probs, {})
    assert scored["genres"].tolist() == [["metal", "rock"], ["blues"]]  # p ≥ 0.15
    assert scored["review_reason"].tolist() == [None, None]
    wide = dataclasses.replace(plan, max_set=1)
    assert score_tracks(wide, np.array([0, 0, 1]), seg_probs, {})[1]["review_reason"][0] == (
        "ambiguous"
    )


def _rows(reviewed: dict, probs: np.ndarray) -> list[dict]:
    rows = []
    for i in range(len(probs)):
        rows.append(
            {
                "path": f"/music/{i}.wav",
                "track_id": f"{i}.wav",
                "genre": LABELS[int(np.argmax(probs[i]))],
                "top_genres": [LABELS[int(np.argmax(probs[i]))]],
                "top_probs": [float(probs[i].max())],
                **{f"p_{g}": probs[i, j] for j, g in enumerate(LABELS)},
                **{k: v[i] for k, v in reviewed.items() if k != "probs"},
                "n_segments": 2,
                "duration_s": 6.0,
                "reason": "",
                "error": "",
            }
        )
    return rows


def test_the_new_columns_read_in_pandas_and_duckdb(tmp_path):
    probs = np.array([[0.9, 0.05, 0.03, 0.02], [0.4, 0.3, 0.2, 0.1], [0.45, 0.45, 0.05, 0.05]])
    ood = {"method": "msp", "threshold": 0.5, "mahalanobis": None}
    with_sets = review(Calibration(conformal=_lac(0.5), ood=ood), probs, labels=LABELS, max_set=1)
    without = review(None, probs[:1], labels=LABELS)
    rows = _rows(with_sets, probs) + _rows(without, probs[:1])
    rows[-1]["path"] = "/music/raw.wav"
    rows[1]["genres"] = np.array(rows[1]["genres"], dtype=object)  # as Ray Data hands it on
    store = ResultStore(str(tmp_path / "labels"))
    store.write(results_table(rows, labels=list(LABELS), model="m/1", aggregate="mean"))

    frame = read_results(str(tmp_path / "labels")).set_index("path")
    assert list(frame.loc["/music/0.wav", "genres"]) == ["blues"]
    assert list(frame.loc["/music/1.wav", "genres"]) == []  # empty set: none fits
    assert frame.loc["/music/raw.wav", "genres"] is None  # no sets: null, not empty
    assert frame.review_reason.fillna("").to_dict() == {
        "/music/0.wav": "",
        "/music/1.wav": "none-fits",
        "/music/2.wav": "none-fits",
        "/music/raw.wav": "",
    }
    assert frame.domain_shift.isna().all()  # no embedding statistics
    plain = pd.read_parquet(tmp_path / "labels")
    assert {"genres", "domain_shift", "needs_review", "review_reason"} <= set(plain.columns)

    sql = (
        "select path, len(genres) as size, list_contains(genres, 'blues') as blues, "
        f"domain_shift from read_parquet('{tmp_path}/labels/part-*.parquet') order by path"
    )
    got = duckdb.sql(sql).fetchall()
    assert got == [
        ("/music/0.wav", 1, True, None),
        ("/music/1.wav", 0, False, None),
        ("/music/2.wav", 0, False, None),
        ("/music/raw.wav", None, None, None),
    ]
    assert duckdb.sql(
        f"select count(*) from read_parquet('{tmp_path}/labels/part-*.parquet') "
        "where review_reason = 'none-fits'"
    ).fetchall() == [(2,)]


def test_domain_shift_is_the_distance_over_the_validation_percentile(rng):
    x = rng.normal(size=(90, 5))
    y = rng.integers(0, 3, 90)
    x[np.arange(90), y] += 4.0
    model = MahalanobisOOD.fit(x, y, components=5)
    p, py = exchangeable(rng, 60, k=3)
    cal = fit_calibration(
        p, py, ood_method="entropy+mahalanobis", mahalanobis=model, val_embeddings=x[:60]
    )
    d = model.score(np.concatenate([x[60:75], 3.0 * x[75:] + 2.0]))  # half far from all
    out = apply(cal, p[:30], distances=d)
    np.testing.assert_allclose(out["domain_shift"], d / np.quantile(model.score(x[:60]), 0.95))
    assert out["domain_shift"].max() > 0
    flagged = apply(cal, p[:30], distances=d, review_domain_shift=True)
    far = out["domain_shift"] > 1
    assert far.any() and np.all(flagged["needs_review"][far])


# --- command lines ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, needle",
    [
        (["--coverage", "1.5"], "--coverage=1.5 must be a number strictly between 0 and 1"),
        (["--coverage", "0"], "--coverage=0.0 must be"),
        (["--coverage", "ninety"], "--coverage: invalid float value"),
        (["--max-set", "0"], "--max-set=0 must be a positive integer"),
    ],
)
def test_label_refuses_bad_set_flags_in_one_line_creating_nothing(tmp_path, capfd, flags, needle):
    (tmp_path / "in").mkdir()
    out = tmp_path / "out"
    result = main_in_process(
        capfd,
        "jobs.label",
        str(tmp_path / "in"),
        str(out),
        "--model",
        "models:/genre@champion",
        "--tracking-uri",
        f"sqlite:///{tmp_path}/mlflow.db",
        *flags,
    )
    assert needle in one_error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


@pytest.mark.parametrize("value", ["1", "0", "-0.1"])
def test_tune_refuses_a_bad_coverage_in_one_line_creating_nothing(tmp_path, capfd, value):
    (tmp_path / "shards").mkdir()
    result = main_in_process(
        capfd,
        "jobs.tune",
        str(tmp_path / "shards"),
        "--models",
        "cnn",
        "--coverage",
        value,
        "--tracking-uri",
        f"sqlite:///{tmp_path}/mlflow.db",
        "--storage",
        str(tmp_path / "ray"),
    )
    assert "--coverage=" in one_error_line(result) and "strictly between 0 and 1" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


def test_search_settings_check_the_coverage_and_leave_it_out_of_the_name(tmp_path):
    with pytest.raises(ParameterError, match="--coverage"):
        SearchSettings(shards=str(tmp_path), coverage=1.0)
    a = SearchSettings(shards=str(tmp_path), coverage=0.8)
    assert a.search_name() == SearchSettings(shards=str(tmp_path)).search_name()


def test_the_label_summary_counts_flags_by_reason_and_sets_by_size():
    summary = LabelSummary(
        output="out",
        model="genre/1",
        labelled=10,
        review=Counter({"none-fits": 2, "ambiguous": 1}),
        set_sizes=Counter({1: 6, 2: 1, 3: 1, 0: 2}),
        sets="lac at coverage 0.90, from 20 validation tracks; review when a set is …",
    )
    text = summary.format()
    assert "needs review: 3 of 10 (30%): none-fits 2, ambiguous 1" in text
    assert "set sizes: 1 genre 6, 2 genres 1, 3 genres 1, empty 2 (mean 1.10)" in text
    assert "genre sets: lac at coverage 0.90, from 20 validation tracks" in text
    one = {
        "path": "a.wav",
        "duration_s": 6.0,
        "n_segments": 2,
        "model": "genre/1",
        "aggregate": "mean",
        "top": [("rock", 0.4), ("metal", 0.35)],
        "genres": [],
        "domain_shift": 2.5,
        "needs_review": True,
        "review_reason": "none-fits",
        "ood_score": 1.3,
        "warning": None,
        "tags": [],
    }
    lines = format_file_label(one).splitlines()
    assert "  genre set: (empty: none fits)" in lines and "  needs review: none-fits" in lines[-1]
    assert any(line.startswith("  domain shift: 2.50") for line in lines)


def test_the_tune_summary_says_what_the_review_flags_on_held_out_tracks():
    best = {"kind": "cnn", "features": "mfcc", "learning_rate": 1e-3, "batch_size": 32}
    outcome = SearchOutcome(
        name="s",
        path="p",
        parent_run_id="r",
        best={**best, "width": 16, "dropout": 0.1},
        trials=[],
        test={"n_tracks": 20, "track_accuracy": 1.0, "segment_accuracy": 1.0},
        model_uri="models:/genre@champion",
        registered="genre",
        version="1",
        tracking_uri="sqlite:///m.db",
        review={
            "test_flagged": 0.05,
            "n_test": 20,
            "test_other_flagged": 0.9,
            "test_other_empty": 0.8,
            "n_test_other": 10,
            "outlier_weight": 0.5,
            "n_train_other": 42,
        },
    )
    outcome.test["track_macro_f1"] = 1.0
    text = outcome.format()
    assert (
        "flagged by that review: 0.05 of the 20 genre test tracks; 0.90 of 10 test _other/" in text
    )
    assert "(0.80 none-fits)" in text and "outlier exposure: λ 0.5 on 42 _other/ training" in text
