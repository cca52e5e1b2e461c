"""Segment → track aggregation, scores and pictures, on numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import classification_report

from genre.errors import ParameterError
from genre.report import (
    classification_report_text,
    evaluate,
    plot_confusion,
    plot_genre_panels,
    plot_histories_side_by_side,
    plot_history,
    segment_to_track,
)

# Track "a": three segments; "b": one.
TRACKS = np.array(["a", "a", "a", "b"])
PROBS = np.array([[0.6, 0.4], [0.6, 0.4], [0.0, 1.0], [0.3, 0.7]])


def test_mean_averages_segment_probabilities():
    tracks, probs = segment_to_track(TRACKS, PROBS, aggregate="mean")
    assert list(tracks) == ["a", "b"]
    np.testing.assert_allclose(probs, [[0.4, 0.6], [0.3, 0.7]], atol=1e-6)


def test_max_takes_each_class_maximum_renormalised():
    _, probs = segment_to_track(TRACKS, PROBS, aggregate="max")
    np.testing.assert_allclose(probs[0], [0.6 / 1.6, 1.0 / 1.6], atol=1e-6)


def test_vote_counts_top_classes_and_mean_breaks_ties():
    _, probs = segment_to_track(TRACKS, PROBS, aggregate="vote")
    assert (
        np.argmax(probs[0]) == 0
    )  # two of three segments vote class 0, though the mean favours class 1
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    _, tie = segment_to_track(
        np.array(["t", "t"]), np.array([[0.9, 0.1], [0.2, 0.8]]), aggregate="vote"
    )
    assert np.argmax(tie[0]) == 0  # one vote each; the mean (0.55 vs 0.45) decides


def test_unknown_aggregate_names_the_choices():
    with pytest.raises(ParameterError, match="mean, max or vote"):
        segment_to_track(TRACKS, PROBS, aggregate="median")


def test_evaluate_gives_confusion_precision_recall_and_most_confused():
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 2, 0]]
    report = evaluate(y_true=y, probs=probs, labels=["a", "b", "c"])
    assert report["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["per_genre"]["b"] == {
        "precision": pytest.approx(2 / 3),
        "recall": 1.0,
        "f1": pytest.approx(0.8),
        "support": 2,
    }
    assert report["most_confused"] == [["a", "b", 1], ["c", "a", 1]]
    text = classification_report_text(report)
    assert "most confused" in text and "macro f1" in text


def test_macro_f1_leaves_out_genres_without_tracks():
    # "c" has no tracks but one prediction: F1 0, not in the mean (a: 2/3, b: 2/3).
    report = evaluate(
        y_true=np.array([0, 0, 1, 1]), probs=np.eye(3)[[0, 2, 1, 1]], labels=["a", "b", "c"]
    )
    assert report["per_genre"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert report["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2)


def test_classification_report_text_is_scikit_learns_table_of_the_confusion():
    y = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    text = classification_report_text(
        evaluate(y_true=y, probs=np.eye(3)[y_pred], labels=["a", "b", "c"])
    )
    table = classification_report(y, y_pred, target_names=["a", "b", "c"], digits=3)
    assert text.startswith(table.rstrip() + "\n")
    assert "macro f1 over the genres with tracks: 0.656" in text


def test_evaluate_rejects_class_ids_outside_the_labels():
    with pytest.raises(ParameterError, match=r"\[0, 2\)"):
        evaluate(y_true=np.array([0, 2]), probs=np.eye(2), labels=["a", "b"])


def test_pictures_are_written_as_png(tmp_path, rng):
    plot_confusion(np.array([[3, 1], [0, 4]]), ["a", "b"], path=tmp_path / "c.png")
    history = {
        "accuracy": [0.5, 0.7],
        "val_accuracy": [0.4, 0.6],
        "loss": [1.0, 0.7],
        "val_loss": [1.1, 0.9],
    }
    plot_history(history, path=tmp_path / "h.png")
    plot_histories_side_by_side({"cnn": history, "mlp": history}, path=tmp_path / "s.png")
    plot_genre_panels(
        {"rock": 0.1 * rng.standard_normal(22050 * 4).astype(np.float32)}, path=tmp_path / "g.png"
    )
    for name in ("c", "h", "s", "g"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
