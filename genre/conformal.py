"""Genre sets with a coverage guarantee: split-conformal prediction at track level.

On held-out tracks whose genres are known (the validation tracks of a search, or the
``--calibrate-on`` folder of a zero-shot model), each track's *nonconformity score* says how
badly its calibrated probabilities fit its true genre. For a new track, the set of genres
whose score would be at most the ``⌈(n + 1)(1 − α)⌉``-th smallest of the ``n`` held-out scores
holds the track's true genre with probability at least ``1 − α``, whatever the model, as long
as the new track and the held-out ones are exchangeable (Vovk et al. 2005; Angelopoulos &
Bates, *A Gentle Introduction to Conformal Prediction*, 2021, https://arxiv.org/abs/2107.07511).
The guarantee is marginal (over tracks, not per genre) and says nothing about music unlike the
held-out tracks.

Two scores (:data:`METHODS`):

- ``lac``, least ambiguous set-valued classifier (Sadinle, Lei & Wasserman 2019): ``1 − p_y``.
  The set is every genre with ``p ≥ 1 − q̂``: the smallest sets on average; it is *empty* when no
  genre is likely enough, which is what "none of the genres fits" means.
- ``aps``, adaptive prediction sets (Romano, Sesia & Candès 2020), without randomisation: the
  probability mass of the genres ranked at or above the true one. The set takes genres, best
  first, until their mass reaches ``q̂``; never empty, larger where the model is unsure.

:class:`Conformal` keeps the sorted held-out scores, not only the threshold, so label can ask
for another coverage without refitting. numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from genre.config import DEFAULT_COVERAGE
from genre.errors import ParameterError
from genre.ood import check_labels, check_number, check_probs

__all__ = [
    "METHODS",
    "check_coverage",
    "nonconformity",
    "conformal_quantile",
    "prediction_sets",
    "set_metrics",
    "Conformal",
    "fit_conformal",
]

#: Nonconformity scores, the first the default (chosen by measurement: see the README).
METHODS = ("lac", "aps")


def check_coverage(coverage: Any, flag: str = "coverage") -> float:
    """``coverage`` (``1 − α``) as a float strictly between 0 and 1; a ``ParameterError``
    naming ``flag`` otherwise."""
    ok = isinstance(coverage, (int, float, np.integer, np.floating)) and not isinstance(
        coverage, bool
    )
    if not ok or not np.isfinite(coverage) or not 0.0 < coverage < 1.0:
        raise ParameterError(f"{flag}={coverage!r} must be a number strictly between 0 and 1")
    return float(coverage)


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ParameterError(f"method={method!r}: choose one of {', '.join(METHODS)}")
    return method


def _ranked(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's genres best first (ties: lower index first) and their cumulative mass."""
    order = np.argsort(-p, axis=1, kind="stable")
    return order, np.cumsum(np.take_along_axis(p, order, axis=1), axis=1)


def nonconformity(probs: np.ndarray, y: np.ndarray, *, method: str = "lac") -> np.ndarray:
    """How badly each track's probabilities fit its true genre (higher: worse).

    Parameters
    ----------
    probs : np.ndarray [shape=(tracks, classes)], calibrated
    y : np.ndarray [shape=(tracks,)], true class indices
    method : one of :data:`METHODS`

    Returns
    -------
    np.ndarray [shape=(tracks,), dtype=float64], in ``[0, 1]``
    """
    p = check_probs(probs)
    y = check_labels(y, len(p), p.shape[1])
    rows = np.arange(len(y))
    if _check_method(method) == "lac":
        return 1.0 - p[rows, y]
    order, mass = _ranked(p)
    rank = np.argmax(order == y[:, None], axis=1)
    return np.minimum(mass[rows, rank], 1.0)


def conformal_quantile(sorted_scores: np.ndarray, *, coverage: float) -> float:
    """The ``⌈(n + 1) · coverage⌉``-th smallest of ``n`` held-out scores: the finite-sample
    quantile whose sets cover with probability ≥ ``coverage``.

    ``inf`` when ``n`` is too small for the coverage asked (``⌈(n + 1) · coverage⌉ > n``, that
    is ``n < coverage / (1 − coverage)``: 9 tracks for 0.9): then every genre is in every set.

    Parameters
    ----------
    sorted_scores : np.ndarray [shape=(n,)], ascending
    coverage : float in (0, 1), ``1 − α``
    """
    coverage = check_coverage(coverage)
    s = np.asarray(sorted_scores, dtype=np.float64)
    if s.ndim != 1 or len(s) == 0 or not np.all(np.isfinite(s)) or np.any(np.diff(s) < 0):
        raise ParameterError("sorted_scores must be a non-empty ascending 1-D array")
    # The small tolerance keeps (n + 1) · coverage from rounding up past a whole number
    # (10 · 0.9 is 9.000000000000002 in floating point).
    k = math.ceil((len(s) + 1) * coverage - 1e-9)
    return float(s[k - 1]) if k <= len(s) else math.inf


def prediction_sets(probs: np.ndarray, *, threshold: float, method: str = "lac") -> np.ndarray:
    """Which genres are in each track's set for a score threshold ``q̂``.

    ``lac``: every genre with ``1 − p ≤ q̂``. ``aps``: genres best first while the mass
    before them is below ``q̂`` (so the genre that reaches ``q̂`` is in), and any genre whose
    own score is at most ``q̂``. A genre whose score would be at most ``q̂`` is always in the
    set, which is what the coverage guarantee needs. ``q̂ = inf`` puts every genre in.

    Parameters
    ----------
    probs : np.ndarray [shape=(tracks, classes)], calibrated
    threshold : float (may be ``inf``)

    Returns
    -------
    np.ndarray [shape=(tracks, classes), dtype=bool]
    """
    p = check_probs(probs)
    q = float(threshold)
    if np.isnan(q):
        raise ParameterError("threshold must be a number (inf allowed)")
    if _check_method(method) == "lac":
        return 1.0 - p <= q
    order, mass = _ranked(p)
    before = mass - np.take_along_axis(p, order, axis=1)
    member = np.zeros_like(p, dtype=bool)
    np.put_along_axis(member, order, (before < q) | (np.minimum(mass, 1.0) <= q), axis=1)
    return member


def set_metrics(member: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Empirical coverage and set sizes of sets ``member`` (tracks, classes) for true genres ``y``.

    Returns
    -------
    dict
        ``coverage`` (share of tracks whose set holds their genre), ``mean_size``,
        ``empty`` and ``singleton`` (shares of tracks).
    """
    member = np.asarray(member, dtype=bool)
    y = check_labels(y, len(member), member.shape[1])
    size = member.sum(axis=1)
    return {
        "coverage": float(member[np.arange(len(y)), y].mean()),
        "mean_size": float(size.mean()),
        "empty": float(np.mean(size == 0)),
        "singleton": float(np.mean(size == 1)),
    }


@dataclass(frozen=True)
class Conformal:
    """A fitted split-conformal predictor: what label needs to give each track a genre set.

    Attributes
    ----------
    method : str, one of :data:`METHODS`
    alpha : float in (0, 1)
        The miscoverage it was fitted for: sets hold the true genre with probability
        ≥ ``1 − alpha`` (the default coverage at label time).
    scores : tuple of float
        The held-out tracks' nonconformity scores, ascending: any other coverage's
        threshold comes from them (:meth:`threshold_at`).
    fitted_on : str
        Which tracks (``validation tracks``, ``--calibrate-on FOLDER``), for people.
    test_coverage, test_mean_size : float or None
        On the test tracks at ``1 − alpha``, when there were any.
    n_test : int
        Test tracks those two were measured on.
    """

    method: str
    alpha: float
    scores: tuple[float, ...]
    fitted_on: str = ""
    test_coverage: float | None = None
    test_mean_size: float | None = None
    n_test: int = 0

    def __post_init__(self) -> None:
        _check_method(self.method)
        alpha = check_number("alpha", self.alpha, 0, 1, low_open=True)
        if alpha >= 1:
            raise ParameterError(f"alpha={self.alpha} must be below 1")
        object.__setattr__(self, "alpha", alpha)
        scores = np.asarray(self.scores, dtype=np.float64)
        if scores.ndim != 1 or len(scores) == 0 or not np.all(np.isfinite(scores)):
            raise ParameterError("conformal scores must be a non-empty list of finite numbers")
        object.__setattr__(self, "scores", tuple(float(s) for s in np.sort(scores)))
        for name, high in (("test_coverage", 1.0), ("test_mean_size", np.inf)):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, check_number(name, value, 0, high))
        if isinstance(self.n_test, bool) or not isinstance(self.n_test, int) or self.n_test < 0:
            raise ParameterError(f"n_test={self.n_test} must be a count")

    @property
    def n(self) -> int:
        """Held-out tracks the scores come from."""
        return len(self.scores)

    @property
    def coverage(self) -> float:
        """``1 − alpha``: the coverage the card was fitted for."""
        return 1.0 - self.alpha

    def threshold_at(self, coverage: float | None = None) -> float:
        """``q̂`` for ``coverage`` (default ``1 − alpha``); ``inf``: too few tracks for it."""
        coverage = self.coverage if coverage is None else coverage
        return conformal_quantile(np.asarray(self.scores), coverage=coverage)

    @property
    def threshold(self) -> float:
        """``q̂`` at the fitted coverage."""
        return self.threshold_at()

    def min_tracks(self, coverage: float | None = None) -> int:
        """The fewest held-out tracks that give ``coverage`` a finite threshold."""
        coverage = self.coverage if coverage is None else check_coverage(coverage)
        return math.ceil(coverage / (1.0 - coverage) - 1e-9)

    def sets(self, probs: np.ndarray, *, coverage: float | None = None) -> np.ndarray:
        """Genre sets of calibrated ``probs`` (tracks, classes) → bool (tracks, classes)."""
        return prediction_sets(probs, threshold=self.threshold_at(coverage), method=self.method)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; ``threshold`` and ``n`` are written for people and checked on reading."""
        q = self.threshold
        return {
            "method": self.method,
            "alpha": self.alpha,
            "threshold": q if math.isfinite(q) else None,
            "n": self.n,
            "fitted_on": self.fitted_on,
            "test_coverage": self.test_coverage,
            "test_mean_size": self.test_mean_size,
            "n_test": self.n_test,
            "scores": list(self.scores),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Conformal:
        """Read :meth:`to_dict`'s form back.

        Raises
        ------
        ParameterError
            Missing keys, bad values, or a ``threshold`` or ``n`` that its scores do not give
            (the card was edited).
        """
        if not isinstance(d, dict):
            raise ParameterError(f"conformal={d!r:.60} must be a dict")
        d = dict(d)
        stated_q, stated_n = d.pop("threshold", None), d.pop("n", None)
        try:
            fitted = cls(**d)
        except TypeError as e:
            raise ParameterError(f"malformed conformal entry: {e}") from None
        q = fitted.threshold
        if (
            stated_n != fitted.n
            or (stated_q is None) != math.isinf(q)
            or (stated_q is not None and not math.isclose(stated_q, q, rel_tol=0, abs_tol=1e-12))
        ):
            raise ParameterError(
                "the conformal entry's threshold or n does not match its scores: the card was "
                "edited; refusing to guess which is right"
            )
        return fitted


def fit_conformal(
    probs: np.ndarray,
    y: np.ndarray,
    *,
    coverage: float = DEFAULT_COVERAGE,
    method: str = "lac",
    fitted_on: str = "",
    test_probs: np.ndarray | None = None,
    test_y: np.ndarray | None = None,
) -> Conformal:
    """Fit on held-out tracks' calibrated probabilities; measure on test tracks if given.

    Parameters
    ----------
    probs : np.ndarray [shape=(tracks, classes)], calibrated, of tracks the model was not
        trained on
    y : np.ndarray [shape=(tracks,)], their true class indices
    coverage : float in (0, 1), ``1 − α``
    method : one of :data:`METHODS`
    fitted_on : which tracks, for people
    test_probs, test_y : calibrated probabilities and genres of test tracks, optional

    Returns
    -------
    Conformal
    """
    coverage = check_coverage(coverage)
    if (test_probs is None) != (test_y is None):
        raise ParameterError("give both test_probs and test_y, or neither")
    scores = nonconformity(probs, y, method=method)
    fitted = Conformal(
        method=method, alpha=1.0 - coverage, scores=tuple(scores), fitted_on=fitted_on
    )
    if test_probs is None or len(test_y) == 0:
        return fitted
    measured = set_metrics(fitted.sets(test_probs), test_y)
    return Conformal(
        method=method,
        alpha=fitted.alpha,
        scores=fitted.scores,
        fitted_on=fitted_on,
        test_coverage=measured["coverage"],
        test_mean_size=measured["mean_size"],
        n_test=len(test_y),
    )
