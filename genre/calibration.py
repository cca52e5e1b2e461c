"""Confidence you can act on: calibration, review thresholds and out-of-taxonomy scores.

Everything here works on **track-level probabilities** ``(tracks, classes)``, after the
segment aggregation the model card names (:func:`genre.report.segment_to_track`), so a
classifier and a zero-shot tag mapping are treated alike. Models give probabilities, not
logits, so temperature scaling (Guo et al. 2017, https://arxiv.org/abs/1706.04599) uses
``log p`` as the logits: ``softmax(log p / T)``. That is exact for a softmax model's own
logits up to a per-row constant, which softmax ignores, and it keeps every row's argmax.

The order of fitting, all on the validation tracks (:func:`fit_calibration`): the
temperature first, then the review threshold, the conformal genre sets
(:mod:`genre.conformal`) and the out-of-taxonomy threshold on the *calibrated*
probabilities, which are what :func:`apply` scores at label time. The result is a
:class:`Calibration`, stored as a plain JSON dict in the model card's ``calibration``.

What :func:`apply` flags for review depends on the calibration: with conformal sets, a track
whose set is empty (``none-fits``) or holds more than ``max_set`` genres (``ambiguous``), and
only when asked, one below a confidence (``low-confidence``) or unlike the training
collection (``domain-shift``); without them (cards made before sets existed), a track below
the review threshold (``low-confidence``) or above the out-of-taxonomy threshold
(``out-of-taxonomy``), as before.

numpy, scipy and scikit-learn's metrics (matplotlib for the figure); no Ray, MLflow or
TensorFlow.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from genre.config import DEFAULT_COVERAGE
from genre.conformal import Conformal, fit_conformal
from genre.errors import ParameterError
from genre.ood import (
    OOD_METHODS,
    MahalanobisOOD,
    auroc,
    check_labels,
    check_number,
    check_probs,
    check_scores,
    ood_threshold,
    output_ood_score,
)

__all__ = [
    "REVIEW_REASONS",
    "DEFAULT_MAX_SET",
    "OOD_METHODS",
    "temperature_scale",
    "fit_temperature",
    "expected_calibration_error",
    "brier_score",
    "reliability_bins",
    "plot_reliability",
    "review_threshold",
    "output_ood_score",
    "MahalanobisOOD",
    "ood_threshold",
    "ood_scores",
    "domain_shift",
    "auroc",
    "Calibration",
    "fit_calibration",
    "apply",
]

#: Values of ``review_reason`` (besides ``None``): with conformal sets the first four (in
#: the order one wins over the next), without them the last two.
REVIEW_REASONS = ("none-fits", "domain-shift", "ambiguous", "low-confidence", "out-of-taxonomy")
#: Label's ``--max-set`` unless told otherwise: a larger genre set is ``ambiguous``.
DEFAULT_MAX_SET = 2
_FORMAT = "genre.calibration/1"
_METRICS = ("ece_before", "ece_after", "brier_before", "brier_after")
# Floor before log, so a probability of exactly 0 stays finite; below float32 resolution, so
# float32 model outputs are never clipped.
_EPS = float(np.finfo(np.float32).smallest_subnormal)


def temperature_scale(probs: np.ndarray, *, temperature: float) -> np.ndarray:
    """Soften (``T > 1``) or sharpen (``T < 1``) probabilities; each row's argmax is kept.

    Parameters
    ----------
    probs : np.ndarray [shape=(tracks, classes)]
        Rows sum to 1.
    temperature : float > 0

    Returns
    -------
    np.ndarray [shape=(tracks, classes), dtype=float64]
        ``softmax(log(probs) / temperature)``.
    """
    temperature = check_number("temperature", temperature, 0, np.inf, low_open=True)
    p = check_probs(probs)
    return softmax(np.log(np.maximum(p, _EPS)) / temperature, axis=1)


def fit_temperature(
    probs: np.ndarray,
    y: np.ndarray,
    *,
    bounds: tuple[float, float] = (0.05, 20.0),
    prior_width: float = 1.0,
) -> float:
    """The temperature that minimises the negative log-likelihood of ``y``.

    A weak log-normal prior centred on ``T = 1`` (standard deviation ``prior_width`` in
    ``log T``) is added to the summed NLL: negligible beside hundreds of validation tracks,
    it stops ten tracks that are all right from driving ``T`` to the lower bound (the NLL
    of a separable set keeps falling as ``T → 0``).

    Parameters
    ----------
    probs : np.ndarray [shape=(tracks, classes)]
    y : np.ndarray [shape=(tracks,)], true class indices
    bounds : (float, float), the search range for ``T``
    prior_width : float > 0; ``inf`` turns the prior off (plain maximum likelihood)

    Returns
    -------
    float
        ``T``: above 1 for an overconfident model, below 1 for an underconfident one.
    """
    low, high = bounds
    if not (0 < low < high < np.inf):
        raise ParameterError(f"bounds={bounds} must satisfy 0 < low < high < inf")
    if not prior_width > 0:  # inf allowed
        raise ParameterError(f"prior_width={prior_width} must be positive")
    p = check_probs(probs)
    y = check_labels(y, len(p), p.shape[1])
    logits = np.log(np.maximum(p, _EPS))
    rows = np.arange(len(y))

    def objective(log_t: float) -> float:
        nll = -log_softmax(logits / np.exp(log_t), axis=1)[rows, y].sum()
        return float(nll + 0.5 * (log_t / prior_width) ** 2)

    # The NLL is convex in 1/T, hence unimodal in log T: bounded Brent finds the minimum.
    res = minimize_scalar(
        objective, bounds=(np.log(low), np.log(high)), method="bounded", options={"xatol": 1e-5}
    )
    return float(np.exp(res.x))


def reliability_bins(probs: np.ndarray, y: np.ndarray, *, bins: int = 15) -> dict[str, np.ndarray]:
    """Mean confidence, accuracy and count per equal-width confidence bin.

    Confidence is the top probability; bin ``b`` holds ``(b/bins, (b+1)/bins]`` (the first
    also holds 0), as in Guo et al.

    Returns
    -------
    dict
        ``edges`` (bins + 1,); ``confidence``, ``accuracy`` (bins,), NaN where a bin is
        empty; ``count`` (bins,) int.
    """
    from sklearn.calibration import calibration_curve  # 1.9 s to import: only here

    if not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ParameterError(f"bins={bins} must be a positive integer")
    p = check_probs(probs)
    y = check_labels(y, len(p), p.shape[1])
    # Rows may sum to 1 within 1e-3 (the guard's tolerance), so a top probability can pass
    # 1 by rounding; calibration_curve rejects that.
    conf = np.minimum(p.max(axis=1), 1.0)
    correct = (p.argmax(axis=1) == y).astype(np.int64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # calibration_curve gives the non-empty bins only, without counts, while the figure
    # and the ECE need every bin and its count: count with its rule (searchsorted on the
    # inner edges, so bins are closed on the right) and put its values back in place.
    count = np.bincount(np.searchsorted(edges[1:-1], conf), minlength=bins)
    accuracy, mean_conf = np.full(bins, np.nan), np.full(bins, np.nan)
    full = count > 0
    accuracy[full], mean_conf[full] = calibration_curve(
        correct, conf, n_bins=bins, strategy="uniform"
    )
    return {"edges": edges, "confidence": mean_conf, "accuracy": accuracy, "count": count}


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, *, bins: int = 15) -> float:
    """ECE: the count-weighted mean of ``|accuracy − confidence|`` over equal-width bins."""
    r = reliability_bins(probs, y, bins=bins)
    full = r["count"] > 0
    gap = np.abs(r["accuracy"][full] - r["confidence"][full])
    return float(np.sum(r["count"][full] * gap) / r["count"].sum())


def brier_score(probs: np.ndarray, y: np.ndarray) -> float:
    """Multi-class Brier score (Brier 1950): mean over tracks of ``Σ_k (p_k − onehot_k)²``.

    Ranges over ``[0, 2]``: 0 for certain and right, 2 for certain and wrong, ``1 − 1/K``
    for a uniform guess. (Not divided by the number of classes.)
    """
    from sklearn.metrics import brier_score_loss  # 1.9 s to import: only here

    p = check_probs(probs)
    y = check_labels(y, len(p), p.shape[1])
    with warnings.catch_warnings():
        # The guard above accepts rows that sum to 1 within 1e-3 (float32 model outputs);
        # scikit-learn warns beyond 1.5e-8 and rejects a probability over 1.
        warnings.filterwarnings("ignore", "The y_prob values do not sum to one", UserWarning)
        # scale_by_half=False: the sum over classes for every K (scikit-learn halves it for
        # K = 2 by default), so scores from two- and many-genre models compare.
        score = brier_score_loss(
            y, np.minimum(p, 1.0), labels=np.arange(p.shape[1]), scale_by_half=False
        )
    return float(score)


def plot_reliability(
    before: dict[str, np.ndarray],
    after: dict[str, np.ndarray],
    *,
    path: str | Path,
    title: str = "",
) -> Path:
    """Reliability diagram (PNG): both curves, the diagonal, and a confidence histogram.

    ``before`` and ``after`` are :func:`reliability_bins` of the same tracks without and
    with calibration. Uses matplotlib's object API (no pyplot, no global backend).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="0.6", linestyle="--", label="perfectly calibrated")
    width = np.diff(before["edges"])
    for name, r, color in (("before", before, "tab:red"), ("after", after, "tab:blue")):
        full = r["count"] > 0
        ece = np.sum(r["count"][full] * np.abs(r["accuracy"] - r["confidence"])[full])
        ece /= max(int(r["count"].sum()), 1)
        top.plot(
            r["confidence"][full],
            r["accuracy"][full],
            marker="o",
            color=color,
            label=f"{name} (ECE {ece:.3f})",
        )
        bottom.bar(
            r["edges"][:-1],
            r["count"],
            width=width,
            align="edge",
            alpha=0.45,
            color=color,
            label=name,
        )
    top.set(xlim=(0, 1), ylim=(0, 1.02), ylabel="accuracy", title=title or "reliability")
    top.legend(loc="upper left", fontsize=8)
    bottom.set(xlabel="confidence (top probability)", ylabel="tracks")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def review_threshold(
    confidence: np.ndarray, correct: np.ndarray, *, target: float = 0.95, min_tracks: int = 5
) -> float:
    """The lowest confidence ``c`` such that validation tracks with confidence ≥ ``c`` are
    right at least ``target`` of the time (and there are at least ``min_tracks`` of them).

    Tracks below the threshold need review. Edge cases: if all tracks together reach
    ``target``, the answer is ``0.0`` (flag nothing, including new tracks below the lowest
    validation confidence); if no ``c`` does, it is ``1.0``, which :func:`apply` reads as
    "flag everything".

    Parameters
    ----------
    confidence : np.ndarray [shape=(tracks,)], top calibrated probability per track
    correct : np.ndarray [shape=(tracks,), dtype=bool]
    target : float in (0, 1]
    min_tracks : int ≥ 1, the fewest tracks at or above ``c`` that may vouch for it

    Returns
    -------
    float in [0, 1]
    """
    target = check_number("target", target, 0, 1, low_open=True)
    if not isinstance(min_tracks, (int, np.integer)) or min_tracks < 1:
        raise ParameterError(f"min_tracks={min_tracks} must be a positive integer")
    conf = check_scores(confidence, "confidence")
    correct = np.asarray(correct)
    if correct.shape != conf.shape:
        raise ParameterError(f"correct {correct.shape} and confidence {conf.shape} differ")
    order = np.argsort(-conf, kind="stable")
    conf, right = conf[order], correct[order].astype(np.float64)
    n_above = np.arange(1, len(conf) + 1)
    accuracy = np.cumsum(right) / n_above
    # A candidate ends a run of equal confidences: "≥ c" takes in all the ties.
    last_of_tie = np.append(conf[1:] < conf[:-1], True)
    ok = last_of_tie & (accuracy >= target - 1e-12) & (n_above >= min_tracks)
    if ok[-1]:
        return 0.0
    if not ok.any():
        return 1.0
    return float(conf[np.flatnonzero(ok)[-1]])


_OOD_KEYS, _OOD_OPTIONAL = {"method", "threshold", "mahalanobis"}, {"column", "scale"}


def _check_ood(ood: Any) -> dict[str, Any]:
    """Validate the ``ood`` entry of a calibration; return it with plain floats."""
    if (
        not isinstance(ood, dict)
        or not _OOD_KEYS <= set(ood) <= _OOD_KEYS | _OOD_OPTIONAL
        or ood["method"] not in OOD_METHODS
    ):
        raise ParameterError(
            f"ood={ood!r:.80} must be {{method in {OOD_METHODS}, threshold, mahalanobis"
            "[, column, scale]}"
        )
    out = {**ood, "threshold": check_number("ood['threshold']", ood["threshold"], -np.inf, np.inf)}
    uses_embeddings = "mahalanobis" in ood["method"]
    if uses_embeddings != (ood["mahalanobis"] is not None):
        raise ParameterError("ood['mahalanobis'] holds parameters iff the method uses them")
    combined = "+" in ood["method"]
    scale = ood.get("scale")
    if combined != (scale is not None):
        raise ParameterError("ood['scale'] holds one scale per part iff the method combines two")
    if combined:
        parts = ood["method"].split("+")
        if not isinstance(scale, dict) or set(scale) != set(parts):
            raise ParameterError(f"ood['scale'] must give a scale for each of {parts}")
        out["scale"] = {
            k: check_number(f"ood['scale'][{k!r}]", v, 0, np.inf, low_open=True)
            for k, v in scale.items()
        }
    column = ood.get("column")
    if column is not None and not isinstance(column, str):
        raise ParameterError(f"ood['column']={column!r} must be a column name")
    return out


def ood_scores(
    calibration: Calibration,
    calibrated: np.ndarray,
    *,
    embeddings: np.ndarray | None = None,
    distances: np.ndarray | None = None,
) -> np.ndarray:
    """The calibration's out-of-taxonomy score of each track (NaN without an OOD method).

    Parameters
    ----------
    calibrated : np.ndarray [shape=(tracks, classes)], temperature-scaled probabilities
    embeddings : np.ndarray [shape=(tracks, dims)], optional
        Track embeddings for a Mahalanobis score; or give ``distances``.
    distances : np.ndarray [shape=(tracks,)], optional
        Mahalanobis distances already computed (the label pipeline averages them over a
        track's segments).
    """
    ood = calibration.ood
    n = len(calibrated)
    if ood is None:
        return np.full(n, np.nan)
    method = ood["method"]
    if "mahalanobis" in method:
        if distances is None:
            if embeddings is None:
                raise ParameterError("this calibration's OOD score needs the tracks' embeddings")
            distances = calibration.mahalanobis.score(embeddings)
        distances = np.asarray(distances, dtype=np.float64)
        if distances.shape != (n,):
            raise ParameterError(f"embeddings give {len(distances)} tracks, track_probs {n}")
    if method == "mahalanobis":
        return distances
    output = output_ood_score(calibrated, method=method.split("+")[0])
    if "+" not in method:
        return output
    scale = ood["scale"]
    return np.maximum(output / scale["entropy"], distances / scale["mahalanobis"])


def domain_shift(calibration: Calibration, distances: np.ndarray | None, n: int) -> np.ndarray:
    """How unlike the training collection each of ``n`` tracks is: its Mahalanobis distance
    over the validation tracks' 95th percentile (the calibration's scale), so above 1 is
    "more unusual than 95 % of the validation tracks". NaN without embedding statistics.

    Parameters
    ----------
    distances : np.ndarray [shape=(tracks,)] or None
        The tracks' Mahalanobis distances (:meth:`MahalanobisOOD.score`).
    """
    ood = calibration.ood
    if ood is None or "mahalanobis" not in ood["method"] or distances is None:
        return np.full(n, np.nan)
    scale = ood["scale"]["mahalanobis"] if "+" in ood["method"] else ood["threshold"]
    return np.asarray(distances, dtype=np.float64) / max(scale, 1e-12)


@dataclass(frozen=True)
class Calibration:
    """What label needs to turn track probabilities into confidence it can act on.

    Attributes
    ----------
    temperature : float > 0
    min_confidence : float in [0, 1]
        Calibrated confidence below which a track needs review (1.0: every track).
    target : float
        Share of validation tracks at or above ``min_confidence`` that were right.
    ood : dict or None
        ``{"method": one of OOD_METHODS, "threshold": float, "mahalanobis": dict or None}``.
    ece_before, ece_after, brier_before, brier_after : float or None
        On the test tracks, without and with the temperature (15 bins).
    n_val_tracks : int
        Validation tracks everything was fitted on.
    conformal : Conformal or None
        The genre sets' held-out scores (:mod:`genre.conformal`); ``None`` in cards made
        before sets existed, which then flag by the two thresholds above.
    """

    temperature: float = 1.0
    min_confidence: float = 0.0
    target: float = 0.95
    ood: dict[str, Any] | None = None
    ece_before: float | None = None
    ece_after: float | None = None
    brier_before: float | None = None
    brier_after: float | None = None
    n_val_tracks: int = 0
    conformal: Conformal | None = None
    _mahalanobis: MahalanobisOOD | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        # Validate, and store plain floats so that to_dict() is JSON-safe whatever came in.
        limits = {
            "temperature": (0, np.inf, True),
            "min_confidence": (0, 1, False),
            "target": (0, 1, True),
            **dict.fromkeys(_METRICS, (0, 2, False)),
        }
        for name, (low, high, low_open) in limits.items():
            if getattr(self, name) is not None or name not in _METRICS:
                value = check_number(name, getattr(self, name), low, high, low_open=low_open)
                object.__setattr__(self, name, value)
        if not isinstance(self.n_val_tracks, int) or self.n_val_tracks < 0:
            raise ParameterError(f"n_val_tracks={self.n_val_tracks} must be a count")
        if isinstance(self.conformal, dict):
            object.__setattr__(self, "conformal", Conformal.from_dict(self.conformal))
        elif self.conformal is not None and not isinstance(self.conformal, Conformal):
            raise ParameterError(f"conformal={self.conformal!r:.60} must be a Conformal or dict")
        if self.ood is not None:
            object.__setattr__(self, "ood", _check_ood(self.ood))
            params = self.ood["mahalanobis"]
            if params is not None:  # validate once, and keep the parsed model for apply()
                object.__setattr__(self, "_mahalanobis", MahalanobisOOD.from_dict(params))

    @property
    def mahalanobis(self) -> MahalanobisOOD | None:
        """The embedding model of the out-of-taxonomy score, when it has one."""
        return self._mahalanobis

    @property
    def ood_column(self) -> str | None:
        """The embedding column (``musicnn_msd``…) the Mahalanobis score reads, if named."""
        return (self.ood or {}).get("column")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict for the model card's ``calibration`` field."""
        names = [f.name for f in fields(self) if f.init and f.name != "conformal"]
        out = {"format": _FORMAT, **{name: getattr(self, name) for name in names}}
        if self.conformal is not None:  # absent, not null, so older readers see what they knew
            out["conformal"] = self.conformal.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        d = dict(d)
        if d.pop("format", None) != _FORMAT:
            raise ParameterError(f"calibration is not in format {_FORMAT}")
        try:
            return cls(**d)
        except TypeError as e:
            raise ParameterError(f"malformed calibration: {e}") from None


def fit_calibration(
    val_probs: np.ndarray,
    val_y: np.ndarray,
    *,
    target: float = 0.95,
    min_tracks: int = 5,
    ood_method: str | None = "entropy",
    ood_quantile: float = 0.95,
    mahalanobis: MahalanobisOOD | None = None,
    val_embeddings: np.ndarray | None = None,
    val_distances: np.ndarray | None = None,
    ood_column: str | None = None,
    test_probs: np.ndarray | None = None,
    test_y: np.ndarray | None = None,
    coverage: float | None = DEFAULT_COVERAGE,
    conformal_method: str = "lac",
    fitted_on: str = "validation tracks",
) -> Calibration:
    """Fit everything on the validation tracks; score it (ECE, Brier, sets) on the test tracks.

    Parameters
    ----------
    val_probs : np.ndarray [shape=(tracks, classes)], uncalibrated, after aggregation
    val_y : np.ndarray [shape=(tracks,)]
    target, min_tracks : see :func:`review_threshold`
    ood_method : one of :data:`OOD_METHODS`, or None (no out-of-taxonomy score)
        The Mahalanobis methods need ``mahalanobis`` (fitted on the training tracks) and
        the validation tracks' ``val_embeddings`` (tracks, dims) or ``val_distances``
        (tracks,). ``entropy+mahalanobis`` divides each part by its ``ood_quantile`` on
        the validation tracks and takes the larger.
    ood_quantile, ood_column : see :func:`ood_threshold`; the embedding column, for the card
    test_probs, test_y : optional test tracks for the before/after figures
    coverage : float in (0, 1) or None
        ``1 − α`` of the genre sets (:func:`genre.conformal.fit_conformal`); None: no sets.
    conformal_method, fitted_on : the sets' score (one of :data:`genre.conformal.METHODS`)
        and which tracks they were fitted on, for people
    """
    p = check_probs(val_probs, "val_probs")
    y = check_labels(val_y, len(p), p.shape[1])
    uses_embeddings = _uses_embeddings(ood_method, mahalanobis, val_embeddings, val_distances)
    if (test_probs is None) != (test_y is None):
        raise ParameterError("give both test_probs and test_y, or neither")
    temperature = fit_temperature(p, y)
    calibrated = temperature_scale(p, temperature=temperature)
    min_confidence = review_threshold(
        calibrated.max(axis=1), calibrated.argmax(axis=1) == y, target=target, min_tracks=min_tracks
    )
    ood = None
    if ood_method is not None:
        ood = _fit_ood(
            ood_method,
            calibrated,
            quantile=ood_quantile,
            mahalanobis=mahalanobis if uses_embeddings else None,
            distances=_val_distances(uses_embeddings, mahalanobis, val_embeddings, val_distances),
            column=ood_column if uses_embeddings else None,
        )
    test = None if test_probs is None else temperature_scale(test_probs, temperature=temperature)
    conformal = (
        None
        if coverage is None
        else fit_conformal(
            calibrated,
            y,
            coverage=coverage,
            method=conformal_method,
            fitted_on=fitted_on,
            test_probs=test,
            test_y=test_y,
        )
    )
    return Calibration(
        temperature=temperature,
        min_confidence=min_confidence,
        target=target,
        ood=ood,
        n_val_tracks=len(p),
        conformal=conformal,
        **({} if test_probs is None else _test_metrics(test_probs, test_y, temperature)),
    )


def _uses_embeddings(
    ood_method: str | None,
    mahalanobis: MahalanobisOOD | None,
    val_embeddings: np.ndarray | None,
    val_distances: np.ndarray | None,
) -> bool:
    """Whether ``ood_method`` reads the embedding distance, with what it needs given."""
    if ood_method is not None and ood_method not in OOD_METHODS:
        raise ParameterError(f"ood_method={ood_method!r} must be one of {OOD_METHODS} or None")
    uses_embeddings = ood_method is not None and "mahalanobis" in ood_method
    if uses_embeddings and (
        mahalanobis is None or (val_embeddings is None and val_distances is None)
    ):
        raise ParameterError(
            f"ood_method={ood_method!r} needs mahalanobis and val_embeddings or val_distances"
        )
    return uses_embeddings


def _val_distances(
    uses_embeddings: bool,
    mahalanobis: MahalanobisOOD | None,
    val_embeddings: np.ndarray | None,
    val_distances: np.ndarray | None,
) -> np.ndarray | None:
    """The validation tracks' Mahalanobis distances, when the OOD method reads them."""
    if not uses_embeddings:
        return None
    if val_distances is None:
        return mahalanobis.score(val_embeddings)
    return check_scores(val_distances, "val_distances")


def _test_metrics(test_probs: np.ndarray, test_y: np.ndarray, temperature: float) -> dict:
    """ECE and Brier score of the test tracks before and after temperature scaling."""
    t = check_probs(test_probs, "test_probs")
    ty = check_labels(test_y, len(t), t.shape[1])
    after = temperature_scale(t, temperature=temperature)
    return {
        "ece_before": expected_calibration_error(t, ty),
        "ece_after": expected_calibration_error(after, ty),
        "brier_before": brier_score(t, ty),
        "brier_after": brier_score(after, ty),
    }


def _fit_ood(
    method: str,
    calibrated: np.ndarray,
    *,
    quantile: float,
    mahalanobis: MahalanobisOOD | None,
    distances: np.ndarray | None,
    column: str | None,
) -> dict[str, Any]:
    """The ``ood`` entry of a calibration: its method, scales and threshold."""
    if distances is not None and len(distances) != len(calibrated):
        raise ParameterError(
            f"val_embeddings has {len(distances)} rows, val_probs {len(calibrated)}"
        )
    ood: dict[str, Any] = {
        "method": method,
        "threshold": 0.0,
        "mahalanobis": mahalanobis.to_dict() if mahalanobis is not None else None,
    }
    if column is not None:
        ood["column"] = column
    if "+" in method:
        entropy = output_ood_score(calibrated, method="entropy")
        # A floor keeps the ratio finite when every validation track is certain.
        ood["scale"] = {
            "entropy": max(ood_threshold(entropy, quantile=quantile), 1e-3),
            "mahalanobis": max(ood_threshold(distances, quantile=quantile), 1e-6),
        }
    probe = Calibration(ood={**ood, "threshold": 0.0})
    scores = ood_scores(probe, calibrated, distances=distances)
    ood["threshold"] = ood_threshold(scores, quantile=quantile)
    return ood


def apply(
    calibration: Calibration,
    track_probs: np.ndarray,
    *,
    embeddings: np.ndarray | None = None,
    distances: np.ndarray | None = None,
    min_confidence: float | None = None,
    coverage: float | None = None,
    max_set: int = DEFAULT_MAX_SET,
    review_domain_shift: bool = False,
) -> dict[str, np.ndarray]:
    """Calibrate track probabilities, give each its genre set, and decide which need review.

    Parameters
    ----------
    calibration : Calibration
    track_probs : np.ndarray [shape=(tracks, classes)]
        Uncalibrated, after segment aggregation.
    embeddings : np.ndarray [shape=(tracks, dims)], optional
        Needed when the calibration's OOD method uses the Mahalanobis distance (or
        give the tracks' ``distances`` (tracks,) computed already).
    min_confidence : float in [0, 1], optional
        ``--min-confidence``: with conformal sets, also flag tracks below it; without,
        it overrides the card's threshold. 1.0 flags every track.
    coverage : float in (0, 1), optional
        ``--coverage`` of the genre sets (default: the card's).
    max_set : int ≥ 1
        ``--max-set``: a larger set is ``ambiguous``.
    review_domain_shift : bool
        ``--review-domain-shift``: with conformal sets, also flag tracks whose
        ``domain_shift`` is above 1.

    Returns
    -------
    dict
        ``probs`` (tracks, classes); ``prediction`` (tracks,) int, unchanged by
        calibration; ``confidence``, ``ood_score`` (NaN without an OOD method),
        ``domain_shift`` (NaN without embedding statistics) (tracks,); ``in_set``
        (tracks, classes) bool, or None without conformal sets; ``needs_review`` (tracks,)
        bool; ``review_reason`` (tracks,) object: one of :data:`REVIEW_REASONS` or None.
    """
    if not isinstance(calibration, Calibration):
        raise ParameterError(f"calibration must be a Calibration, got {type(calibration).__name__}")
    if min_confidence is not None:
        min_confidence = check_number("min_confidence", min_confidence, 0, 1)
    if isinstance(max_set, bool) or not isinstance(max_set, (int, np.integer)) or max_set < 1:
        raise ParameterError(f"max_set={max_set!r} must be a positive integer")
    probs = temperature_scale(track_probs, temperature=calibration.temperature)
    if distances is None and embeddings is not None and calibration.mahalanobis is not None:
        distances = calibration.mahalanobis.score(embeddings)
    ood_score = ood_scores(calibration, probs, distances=distances)
    shift = domain_shift(calibration, distances, len(probs))
    confidence = probs.max(axis=1)
    in_set = None
    if calibration.conformal is None:
        reason = _review_by_thresholds(calibration, confidence, ood_score, min_confidence)
    else:
        in_set = calibration.conformal.sets(probs, coverage=coverage)
        size = in_set.sum(axis=1)
        shifted = shift > 1.0 if review_domain_shift else np.zeros(len(probs), dtype=bool)
        low = np.zeros(len(probs), dtype=bool)
        if min_confidence is not None:
            low = (confidence < min_confidence) | (min_confidence >= 1.0)
        reason = _first_reason(
            {"none-fits": size == 0, "domain-shift": shifted, "ambiguous": size > max_set},
            low,
        )
    return {
        "probs": probs,
        "prediction": probs.argmax(axis=1),
        "confidence": confidence,
        "ood_score": ood_score,
        "domain_shift": shift,
        "in_set": in_set,
        "needs_review": reason.astype(bool),  # None → False, a reason → True
        "review_reason": reason,
    }


def _first_reason(reasons: dict[str, np.ndarray], low: np.ndarray) -> np.ndarray:
    """Each track's first reason of ``reasons`` (in order) that holds, else
    ``low-confidence`` where ``low``, else None."""
    reason = np.where(low, "low-confidence", None).astype(object)
    for name, hit in reversed(reasons.items()):
        reason[hit] = name
    return reason


def _review_by_thresholds(
    calibration: Calibration,
    confidence: np.ndarray,
    ood_score: np.ndarray,
    min_confidence: float | None,
) -> np.ndarray:
    """The review of a calibration without sets: below the confidence threshold (the
    card's, or ``min_confidence``), or above the out-of-taxonomy threshold (which wins)."""
    threshold = calibration.min_confidence if min_confidence is None else min_confidence
    low = (confidence < threshold) | (threshold >= 1.0)
    ood = calibration.ood
    out = np.zeros(len(confidence), dtype=bool) if ood is None else ood_score > ood["threshold"]
    return _first_reason({"out-of-taxonomy": out}, low)
