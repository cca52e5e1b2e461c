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
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from genre import backend
from genre.config import REFIT_FOLDS
from genre.errors import ParameterError
from genre.runtime import live_nodes
from genre.training import PreparedData, build_network, fit, model_config_from_trial, pooled

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
    data : PreparedData
        The calibration view: ``train`` and ``val`` are both the pooled segments (train +
        val), ``test`` the test split; the network's normalisation is the pool's.
    val_probs : np.ndarray [shape=(segments, classes)]
        Out-of-fold probabilities of ``data``'s ``val`` segments.
    folds : list of np.ndarray
        The track ids of each fold.
    epochs : int
    """

    network: Any
    data: PreparedData
    val_probs: np.ndarray
    folds: list[np.ndarray]
    epochs: int

    def describe(self) -> dict[str, Any]:
        """How the model was fitted, for its card and the tune summary."""
        return {
            "method": "refit",
            "trained_on": ["train", "val"],
            "tracks": int(len(np.unique(self.data.track["val"]))),
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
    data: PreparedData,
    config: dict[str, Any],
    *,
    leave_out: np.ndarray | None,
    epochs: int,
    seed: int,
    threads: int,
    mixed_precision: bool,
):
    """One training on the pool less ``leave_out``: the probabilities of the left-out
    segments (in pool order), or the weights when nothing is left out."""
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
        return result.network.get_weights()
    # The left-out segments in pool order (train's, then val's), without a second copy of
    # the whole pool beside the one the training view holds.
    x = np.concatenate(
        [data.x[split][np.isin(data.track[split], leave_out)] for split in ("train", "val")]
    )
    return result.network.predict(x, batch_size=256, verbose=0)


def _gather(refs: list, *, cpus: float, gpus: float, limit_s: float) -> list:
    """``ray.get`` of the trainings, bounded: gives up when, for ``limit_s``, none has
    finished and no live node could hold one (nodes left the cluster)."""
    import ray

    pending, since = list(refs), None
    while pending:
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=5.0)
        if done or any(cpus <= c and gpus <= g for c, g in live_nodes()):
            since = None
            continue
        since = since or time.monotonic()
        if time.monotonic() - since > limit_s:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise ParameterError(
                f"the refit's trainings could not run for {limit_s:.0f} s: each asks for "
                f"{cpus:g} CPUs and {gpus:g} GPUs and no live Ray node has them"
            )
    return ray.get(refs)


def refit(
    data: PreparedData,
    config: dict[str, Any],
    *,
    epochs: int,
    folds: int = REFIT_FOLDS,
    seed: int = 0,
    cpus: float = 1.0,
    gpus: float = 0.0,
    mixed_precision: bool = False,
    limit_s: float = _UNSCHEDULABLE_S,
) -> Refit:
    """Train ``config`` on train + val of ``data``, and cross-fit its out-of-fold predictions.

    Parameters
    ----------
    data : PreparedData
        The search's data for the configuration's features.
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

    Returns
    -------
    Refit
    """
    import ray

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ParameterError(f"epochs={epochs!r} must be a positive integer")
    view = pooled(data)  # the refit's training data; its train split is the pool, in order
    pool_track, pool_y = view.track["train"], view.y["train"]
    tracks, first = np.unique(pool_track, return_index=True)
    cut = crossfit_folds(tracks, pool_y[first], folds=folds, seed=seed)
    task = ray.remote(_train).options(num_cpus=cpus, num_gpus=gpus)
    shared = ray.put(data)
    start = seed + int(config.get("trial_seed", 0))
    common = {"epochs": epochs, "threads": max(1, int(cpus)), "mixed_precision": mixed_precision}
    refs = [task.remote(shared, config, leave_out=None, seed=start, **common)]
    refs += [
        task.remote(shared, config, leave_out=fold, seed=start + 1 + k, **common)
        for k, fold in enumerate(cut)
    ]
    weights, *held = _gather(refs, cpus=cpus, gpus=gpus, limit_s=limit_s)
    val_probs = np.empty((len(pool_track), len(data.labels)), dtype=np.float32)
    for fold, probs in zip(cut, held, strict=True):
        val_probs[np.isin(pool_track, fold)] = probs
    backend.configure()
    # Compiled plainly, as the search's champion: the logged model holds Keras's own loss.
    network = build_network(model_config_from_trial(config), view, outlier_exposure=False)
    network.set_weights(weights)
    calibration_view = replace(
        view,
        x={**view.x, "val": view.x["train"]},
        y={**view.y, "val": pool_y},
        track={**view.track, "val": pool_track},
    )
    return Refit(
        network=network, data=calibration_view, val_probs=val_probs, folds=cut, epochs=epochs
    )
