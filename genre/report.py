"""Scores and pictures: segment → track aggregation, metrics, confusion matrices, curves.

numpy and scikit-learn's metrics (and matplotlib for figures, with the Agg backend); no
Ray, MLflow or TensorFlow here, so the label job and the tests use the same code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from genre.config import FeatureConfig
from genre.errors import ParameterError
from genre.features import extract

__all__ = [
    "segment_to_track",
    "track_mean",
    "track_labels",
    "evaluate",
    "classification_report_text",
    "plot_confusion",
    "plot_history",
    "plot_histories_side_by_side",
    "plot_genre_panels",
]


def segment_to_track(
    track_ids: np.ndarray, probs: np.ndarray, *, aggregate: str = "mean"
) -> tuple[np.ndarray, np.ndarray]:
    """Combine segment probabilities into one distribution per track.

    Parameters
    ----------
    track_ids : np.ndarray [shape=(segments,)]
    probs : np.ndarray [shape=(segments, classes)]
    aggregate : {"mean", "max", "vote"}
        ``mean``: average of the probabilities (the default, and the headline
        figure); ``max``: each class's maximum over segments, renormalised;
        ``vote``: share of segments whose top class is each class, ties broken by
        the mean probability.

    Returns
    -------
    tracks : np.ndarray [shape=(tracks,)]
        Sorted unique track ids.
    track_probs : np.ndarray [shape=(tracks, classes), dtype=float32]
        Rows sum to 1.
    """
    probs = np.asarray(probs, dtype=np.float64)
    track_ids = np.asarray(track_ids)
    if probs.ndim != 2 or len(track_ids) != len(probs):
        raise ParameterError(f"probs {probs.shape} and track_ids {track_ids.shape} do not match")
    tracks, inverse, counts = np.unique(track_ids, return_inverse=True, return_counts=True)
    k = probs.shape[1]
    _, mean = track_mean(track_ids, probs)
    if aggregate == "mean":
        out = mean
    elif aggregate == "max":
        out = np.zeros((len(tracks), k))
        np.maximum.at(out, inverse, probs)
        out /= out.sum(axis=1, keepdims=True)
    elif aggregate == "vote":
        votes = np.zeros((len(tracks), k))
        np.add.at(votes, (inverse, np.argmax(probs, axis=1)), 1.0)
        # Break ties by mean probability: it is < 1, so it never outweighs a whole vote.
        out = (votes + mean) / (counts[:, None] + 1.0)
    else:
        raise ParameterError(f"aggregate={aggregate!r}: choose mean, max or vote")
    return tracks, out.astype(np.float32)


def track_mean(track_ids: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The mean of ``values`` over each track's segments.

    Parameters
    ----------
    track_ids : np.ndarray [shape=(segments,)]
    values : np.ndarray [shape=(segments, ...)]

    Returns
    -------
    tracks : np.ndarray [shape=(tracks,)]
        Sorted unique track ids.
    means : np.ndarray [shape=(tracks, ...), dtype=float64]
    """
    tracks, inverse, counts = np.unique(track_ids, return_inverse=True, return_counts=True)
    values = np.asarray(values, np.float64)
    out = np.zeros((len(tracks), *values.shape[1:]))
    np.add.at(out, inverse, values)
    return tracks, out / counts.reshape(-1, *([1] * (values.ndim - 1)))


def track_labels(track_ids: np.ndarray, segment_y: np.ndarray, tracks: np.ndarray) -> np.ndarray:
    """The label of each of ``tracks`` (``(tracks,)`` int32), read from its segments'
    ``segment_y`` (a track's segments share its label)."""
    lookup = dict(zip(track_ids, segment_y, strict=True))
    return np.array([lookup[t] for t in tracks], dtype=np.int32)


def evaluate(*, y_true: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Accuracy, macro F1, per-genre precision/recall/F1, confusion matrix (JSON-ready).

    Parameters
    ----------
    y_true : np.ndarray [shape=(n,), int]
    probs : np.ndarray [shape=(n, classes)]
    labels : list of str, one per class

    Returns
    -------
    dict
        ``accuracy``, ``macro_f1``, ``per_genre`` (label → precision, recall, f1,
        support), ``confusion`` (rows = true class) and ``most_confused`` (up to five
        ``[true, predicted, count]``, most frequent first).
    """
    # scikit-learn takes ~1.9 s to import: label workers that never evaluate skip it.
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs)
    k = len(labels)
    if probs.ndim != 2 or probs.shape != (len(y_true), k):
        raise ParameterError(
            f"probs {probs.shape} must be (len(y_true)={len(y_true)}, len(labels)={k})"
        )
    if y_true.ndim != 1 or np.any(y_true < 0) or np.any(y_true >= k):
        # scikit-learn would silently drop tracks whose class is not among the labels
        raise ParameterError(f"y_true must hold class indices in [0, {k})")
    y_pred = np.argmax(probs, axis=1)
    classes = np.arange(k)
    confusion = confusion_matrix(y_true, y_pred, labels=classes)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0
    )
    off = [
        (labels[i], labels[j], int(confusion[i, j]))
        for i in range(k)
        for j in range(k)
        if i != j and confusion[i, j] > 0
    ]
    off.sort(key=lambda r: (-r[2], r[0], r[1]))
    # Macro F1 over the genres the split has tracks of: scikit-learn's macro average would
    # count a genre without tracks as 0 and lower the figure the cards and MLflow log.
    present = support > 0
    return {
        "accuracy": float(np.trace(confusion) / max(len(y_true), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_genre": {
            labels[i]: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in range(k)
        },
        "confusion": confusion.tolist(),
        "most_confused": [list(r) for r in off[:5]],
    }


def classification_report_text(metrics: dict[str, Any]) -> str:
    """scikit-learn's classification report of :func:`evaluate`'s ``metrics``, plus the
    macro F1 they log and the most confused pairs.

    The tracks are rebuilt from the confusion matrix (rows true, columns predicted), which
    holds all the report needs; the genres are ``per_genre``'s keys, in order.
    """
    from sklearn.metrics import classification_report

    labels = list(metrics["per_genre"])
    confusion = np.asarray(metrics["confusion"], dtype=np.int64)
    true, predicted = np.divmod(np.arange(confusion.size), len(labels))
    rows = [
        classification_report(
            np.repeat(true, confusion.ravel()),
            np.repeat(predicted, confusion.ravel()),
            labels=np.arange(len(labels)),
            target_names=labels,
            digits=3,
            zero_division=0,
        ).rstrip(),
        "",
        # The table's macro avg counts a genre without tracks as 0; this is the logged one.
        f"macro f1 over the genres with tracks: {metrics['macro_f1']:.3f}",
    ]
    if metrics.get("most_confused"):
        rows += [
            "",
            "most confused (true → predicted: tracks): "
            + "; ".join(f"{t} → {p}: {n}" for t, p, n in metrics["most_confused"]),
        ]
    return "\n".join(rows) + "\n"


def _figure(*args, **kwargs):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def _finish(fig, path: str | Path | None):
    fig.tight_layout()
    if path is not None:
        import matplotlib.pyplot as plt

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return fig


def plot_confusion(
    confusion: np.ndarray,
    labels: list[str],
    *,
    title: str = "",
    normalize: bool = True,
    path: str | Path | None = None,
):
    """Heat map of a confusion matrix (rows = true genre), cells annotated."""
    c = np.asarray(confusion, dtype=np.float64)
    shown = (
        np.divide(
            c,
            c.sum(axis=1, keepdims=True),
            out=np.zeros_like(c),
            where=c.sum(axis=1, keepdims=True) > 0,
        )
        if normalize
        else c
    )
    fig, ax = _figure(figsize=(0.6 * len(labels) + 2.5, 0.6 * len(labels) + 2))
    ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if c[i, j]:
                ax.text(
                    j,
                    i,
                    f"{int(c[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if shown[i, j] > 0.5 else "black",
                )
    ax.set_title(title or "confusion matrix")
    return _finish(fig, path)


def plot_history(
    history: dict[str, list[float]], *, title: str = "", path: str | Path | None = None
):
    """Accuracy and loss per epoch, train and validation, in two panels."""
    fig, axes = _figure(1, 2, figsize=(9, 3.4))
    for ax, metric in zip(axes, ("accuracy", "loss"), strict=True):
        for key, style in ((metric, "-"), (f"val_{metric}", "--"), (f"val_track_{metric}", ":")):
            if history.get(key):
                ax.plot(range(1, len(history[key]) + 1), history[key], style, label=key)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def plot_histories_side_by_side(
    histories: dict[str, dict[str, list[float]]], *, path: str | Path | None = None
):
    """One column per model type: validation accuracy (top) and loss (bottom) per epoch."""
    n = max(1, len(histories))
    fig, axes = _figure(2, n, figsize=(3.2 * n, 5.2), squeeze=False, sharey="row")
    for col, (name, history) in enumerate(histories.items()):
        for row, metric in enumerate(("accuracy", "loss")):
            ax = axes[row][col]
            for key, style in ((metric, "-"), (f"val_{metric}", "--")):
                if history.get(key):
                    ax.plot(range(1, len(history[key]) + 1), history[key], style, label=key)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(name)
            else:
                ax.set_xlabel("epoch")
            if col == 0:
                ax.set_ylabel(metric)
                ax.legend(fontsize=7)
    return _finish(fig, path)


def plot_genre_panels(
    examples: dict[str, np.ndarray], *, sample_rate: int = 22050, path: str | Path | None = None
):
    """Per genre (one row): waveform, log-mel spectrogram and MFCC of a 3 s excerpt."""

    cfg = FeatureConfig(sample_rate=sample_rate, features=("mfcc", "mel"))
    fig, axes = _figure(len(examples), 3, figsize=(12, 1.6 * len(examples) + 0.6), squeeze=False)
    for row, (genre, y) in enumerate(examples.items()):
        clip = np.asarray(y, dtype=np.float32)[: cfg.segment_samples]
        clip = np.pad(clip, (0, cfg.segment_samples - len(clip)))
        feats = extract(clip[None], cfg)
        t = np.arange(len(clip)) / sample_rate
        axes[row][0].plot(t, clip, lw=0.4)
        axes[row][0].set_xlim(0, t[-1])
        axes[row][0].set_ylabel(genre)
        extent = [0, cfg.segment_seconds, 0, 1]
        axes[row][1].imshow(
            feats["mel"][0].T,
            origin="lower",
            aspect="auto",
            cmap="magma",
            extent=[0, cfg.segment_seconds, 0, cfg.n_mels],
        )
        # Each coefficient standardised over time: raw c0 is ~10× the others and would flatten
        # the picture.
        mfcc = feats["mfcc"][0]
        mfcc = (mfcc - mfcc.mean(axis=0)) / (mfcc.std(axis=0) + 1e-6)
        axes[row][2].imshow(
            mfcc.T,
            origin="lower",
            aspect="auto",
            cmap="coolwarm",
            vmin=-2.5,
            vmax=2.5,
            extent=[*extent[:2], 0, cfg.n_mfcc],
        )
        if row == 0:
            axes[row][0].set_title("waveform")
            axes[row][1].set_title("log-mel spectrogram (128 bands)")
            axes[row][2].set_title("MFCC (13, each standardised over time)")
    for ax in axes[-1]:
        ax.set_xlabel("seconds")
    return _finish(fig, path)
