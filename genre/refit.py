"""After the search: the champion's configuration trained again on every labelled track.

A search trains each trial on the train split and picks the best by the validation split.
With a few labelled tracks per genre that leaves the validation tracks (a sixth of them by
default) out of the registered model. The refit (scikit-learn's ``refit=True``) trains the
best trial's configuration once more, on train + val, for the epochs at which its validation
loss was lowest.

What is fitted after training (blend weight, temperature, conformal thresholds,
out-of-taxonomy statistics: :mod:`genre.posthoc`) must not see tracks the model was trained
on, and after a refit no labelled track is left over. It comes from **cross-fitting**: the
pooled tracks are cut into K folds stratified by genre; for each fold a model of the same
configuration is trained on the other K − 1 folds for the same epochs and predicts the fold.
Every pooled track gets a prediction from a model that never saw it (out of fold), and
:func:`genre.posthoc.fit_posthoc` fits on those (Vovk's cross-conformal prediction and
cross-fitted calibration; Barber et al., *Predictive inference with the jackknife+*, 2021).
The test split stays out of all of it: the figures reported are the refit model's on it.

The K + 1 trainings are Ray tasks asking for a trial's CPUs and GPUs, run side by side
where the cluster has room.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from genre import backend
from genre.config import REFIT_FOLDS
from genre.errors import ParameterError
from genre.runtime import live_nodes
from genre.training import (
    HELD_OUT,
    PreparedData,
    StreamedData,
    build_network,
    fit,
    model_config_from_trial,
    pooled,
    predict_split,
    tracks_of,
)

__all__ = ["REFIT_FOLDS", "Refit", "crossfit_folds", "refit"]

#: Seconds the fold trainings may wait with no live node able to hold one before giving up.
_UNSCHEDULABLE_S = 120.0


@dataclass
class Refit:
    """What :func:`refit` trained.

    Attributes
    ----------
    network : keras.Model
        Trained on train + val, compiled plainly (as a search's champion is).
    data : PreparedData or StreamedData
        The pooled view (:func:`genre.training.pooled`): its ``train`` split is the pool
        (train + val), ``test`` the test split; the network's normalisation is the pool's.
    val_predicted : tuple of np.ndarray
        The pool's out-of-fold predictions as :func:`genre.training.predict_split` gives
        them: segment probabilities ``(segments, classes)``, classes and track ids, each
        segment predicted by the model of the fold that left its track out.
    folds : list of np.ndarray
        The track ids of each fold.
    epochs : int
    """

    network: Any
    data: PreparedData | StreamedData
    val_predicted: tuple[np.ndarray, np.ndarray, np.ndarray]
    folds: list[np.ndarray]
    epochs: int

    def describe(self) -> dict[str, Any]:
        """How the model was fitted, for its card and the tune summary."""
        return {
            "method": "refit",
            "trained_on": ["train", "val"],
            "tracks": int(len(tracks_of(self.data, "train"))),
            "epochs": self.epochs,
            "folds": len(self.folds),
            "calibration": "out-of-fold predictions of the folds' models",
        }


def crossfit_folds(
    tracks: Sequence[str] | np.ndarray,
    genres: Sequence[str] | np.ndarray,
    *,
    folds: int = REFIT_FOLDS,
    seed: int = 0,
) -> list[np.ndarray]:
    """Cut tracks into folds stratified by genre, seeded.

    Each genre's tracks are shuffled and dealt to the folds in turn, continuing where the
    previous genre stopped, so the folds differ in size by one track at most. Fewer folds
    than asked when the smallest genre has fewer tracks (two at least).

    Parameters
    ----------
    tracks : sequence of str, one entry per track (duplicates are collapsed)
    genres : the genre of each entry
    folds : int ≥ 2
    seed : int

    Returns
    -------
    list of np.ndarray
        The track ids of each fold, sorted.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ParameterError(f"folds={folds!r} must be an integer of at least 2")
    genre_of = dict(zip(map(str, tracks), map(str, genres), strict=True))
    by_genre: dict[str, list[str]] = {}
    for track in sorted(genre_of):
        by_genre.setdefault(genre_of[track], []).append(track)
    k = max(2, min(folds, min(len(t) for t in by_genre.values())))
    rng = np.random.default_rng(seed)
    dealt: list[list[str]] = [[] for _ in range(k)]
    turn = 0
    for genre in sorted(by_genre):
        for track in rng.permutation(by_genre[genre]):
            dealt[turn % k].append(str(track))
            turn += 1
    return [np.array(sorted(fold)) for fold in dealt]


def _train(
    data: PreparedData | StreamedData,
    config: dict[str, Any],
    *,
    leave_out: np.ndarray | None,
    epochs: int,
    seed: int,
    threads: int,
    mixed_precision: bool,
):
    """One training on the pool less ``leave_out``: the left-out segments' predictions
    (:func:`_held_out`), or, when nothing is left out, the weights and (for a stream) the
    pooled view's statistics, which the driver's network is built with."""
    backend.configure(threads=threads, mixed_precision=mixed_precision)
    view = pooled(data, leave_out=leave_out)
    result = fit(
        view,
        model_config_from_trial(config),
        max_epochs=epochs,
        batch_size=int(config["batch_size"]),
        patience=epochs,  # no validation split: a fixed number of epochs
        seed=seed,
        restore_best=False,
    )
    if leave_out is None:
        stats = view.stats if isinstance(view, StreamedData) else None
        return result.network.get_weights(), stats
    return _held_out(result.network, data, view, leave_out)


def _held_out(network, data, view, leave_out: np.ndarray):
    """``(probs, classes, tracks)`` of the segments of the ``leave_out`` tracks: streamed
    from the view's held-out split, or, in memory, gathered from train and val without a
    second copy of the whole pool beside the one the training view holds."""
    if isinstance(view, StreamedData):
        return predict_split(network, view, HELD_OUT)
    rows = {split: np.isin(data.track[split], leave_out) for split in ("train", "val")}
    x = np.concatenate([data.x[split][rows[split]] for split in rows])
    y = np.concatenate([data.y[split][rows[split]] for split in rows])
    track = np.concatenate([data.track[split][rows[split]] for split in rows])
    return network.predict(x, batch_size=256, verbose=0), y, track


def _pool(data: PreparedData | StreamedData) -> tuple[np.ndarray, np.ndarray]:
    """The pooled (train + val) tracks and their class indices, one entry per track."""
    if isinstance(data, StreamedData):
        tracks = np.concatenate([tracks_of(data, "train"), tracks_of(data, "val")])
        return tracks, np.array([data.source.label[t] for t in tracks], dtype=np.int64)
    track = np.concatenate([data.track["train"], data.track["val"]])
    y = np.concatenate([data.y["train"], data.y["val"]])
    tracks, first = np.unique(track, return_index=True)
    return tracks, y[first]


def _gather(calls: list, *, cpus: float, gpus: float, limit_s: float, at_once: int) -> list:
    """The results of ``calls`` (each submits one training and returns its ref), at most
    ``at_once`` running at a time (0: all), bounded: gives up when, for ``limit_s``, none
    has finished and no live node could hold one (nodes left the cluster)."""
    import ray

    results: list = [None] * len(calls)
    waiting, running, since = list(enumerate(calls)), {}, None
    while waiting or running:
        while waiting and (not at_once or len(running) < at_once):
            k, call = waiting.pop(0)
            running[call()] = k
        done, _ = ray.wait(list(running), num_returns=len(running), timeout=5.0)
        for ref in done:
            results[running.pop(ref)] = ray.get(ref)
        if done or any(cpus <= c and gpus <= g for c, g in live_nodes()):
            since = None
            continue
        since = since or time.monotonic()
        if time.monotonic() - since > limit_s:
            for ref in running:
                ray.cancel(ref, force=True)
            raise ParameterError(
                f"the refit's trainings could not run for {limit_s:.0f} s: each asks for "
                f"{cpus:g} CPUs and {gpus:g} GPUs and no live Ray node has them"
            )
    return results


def refit(
    data: PreparedData | StreamedData,
    config: dict[str, Any],
    *,
    epochs: int,
    folds: int = REFIT_FOLDS,
    seed: int = 0,
    cpus: float = 1.0,
    gpus: float = 0.0,
    mixed_precision: bool = False,
    limit_s: float = _UNSCHEDULABLE_S,
    at_once: int = 0,
) -> Refit:
    """Train ``config`` on train + val of ``data``, and cross-fit its out-of-fold predictions.

    Parameters
    ----------
    data : PreparedData or StreamedData
        The search's data for the configuration's features: a stream is trained on as
        the trials were (each training reads the pool from the shards).
    config : dict
        The best trial's Tune config (``kind``, ``batch_size``, ``trial_seed``, …).
    epochs : int ≥ 1
        Epochs of every training: the best trial's best epoch (1-based).
    folds : int ≥ 2
        Cross-fitting folds (fewer when a genre has fewer pooled tracks).
    seed : int
        The search's seed; the refit starts its weights as the trial did.
    cpus, gpus : what each training asks Ray for (a trial's share)
    mixed_precision : float16 compute on GPUs, as the trials had
    limit_s : how long the trainings may wait for a node that can hold them
    at_once : trainings running at once, at most (0: as many as the cluster holds). A
        stream's trainings must leave Ray Data a CPU, as a streamed search's trials do
        (:func:`genre.tuning.streamed_trials_at_once`): its file listing asks for one,
        and trainings holding every CPU would wait for ever for their own data.

    Returns
    -------
    Refit
    """
    import ray

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ParameterError(f"epochs={epochs!r} must be a positive integer")
    tracks, classes = _pool(data)
    cut = crossfit_folds(tracks, classes, folds=folds, seed=seed)
    task = ray.remote(_train).options(num_cpus=cpus, num_gpus=gpus)
    shared = ray.put(data)
    start = seed + int(config.get("trial_seed", 0))
    common = {"epochs": epochs, "threads": max(1, int(cpus)), "mixed_precision": mixed_precision}
    calls = [partial(task.remote, shared, config, leave_out=None, seed=start, **common)]
    calls += [
        partial(task.remote, shared, config, leave_out=fold, seed=start + 1 + k, **common)
        for k, fold in enumerate(cut)
    ]
    (weights, stats), *held = _gather(calls, cpus=cpus, gpus=gpus, limit_s=limit_s, at_once=at_once)
    val_predicted = tuple(np.concatenate(part) for part in zip(*held, strict=True))
    view = data.with_stats(stats) if isinstance(data, StreamedData) else pooled(data)
    backend.configure()
    # Compiled plainly, as the search's champion: the logged model holds Keras's own loss.
    network = build_network(model_config_from_trial(config), view, outlier_exposure=False)
    network.set_weights(weights)
    return Refit(network=network, data=view, val_predicted=val_predicted, folds=cut, epochs=epochs)
