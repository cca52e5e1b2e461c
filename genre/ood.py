"""Out of taxonomy: how unlike every genre a model knows a track is.

Two kinds of score, higher meaning further from the taxonomy: from the model's own track
probabilities (:func:`output_ood_score`: normalised entropy, or one minus the top
probability), and from where a track's embedding lies (:class:`MahalanobisOOD`: distance
to the nearest class mean under one shared, shrunk covariance, fitted on training tracks).
:func:`ood_threshold` picks the cut from in-taxonomy validation tracks; :func:`auroc`
scores how well a score separates two sets. Also the input guards :mod:`genre.calibration`
shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from genre.errors import ParameterError

__all__ = [
    "output_ood_score",
    "MahalanobisOOD",
    "ood_threshold",
    "auroc",
    "OOD_METHODS",
    "check_probs",
    "check_labels",
    "check_number",
    "check_scores",
]


#: Out-of-taxonomy scores: two from the model's outputs, one from embeddings, and the
#: entropy and the embedding distance together (each over its own validation quantile,
#: the larger of the two: a track is flagged when either finds it unlike the taxonomy).
_EPS = float(np.finfo(np.float32).smallest_subnormal)
OOD_METHODS = ("entropy", "msp", "mahalanobis", "entropy+mahalanobis")


# Guards at the edges of the confidence functions (here and in genre.calibration), in the
# manner of librosa's valid_audio: each returns its input as a float64 (or int) array.


def check_probs(probs: Any, name: str = "probs") -> np.ndarray:
    """``probs`` as ``(tracks, classes ≥ 2)`` float64; a ``ParameterError`` otherwise."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 1 or p.shape[1] < 2:
        raise ParameterError(f"{name} must be 2-D (tracks, classes≥2), got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ParameterError(f"{name} must be finite and non-negative")
    if not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise ParameterError(f"rows of {name} must sum to 1 (normalise scores first)")
    return p


def check_labels(y: Any, n: int, k: int) -> np.ndarray:
    """``y`` as ``(n,)`` class indices in ``[0, k)``; a ``ParameterError`` otherwise."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ParameterError(f"y has shape {y.shape}, expected ({n},) to match probs")
    if not np.issubdtype(y.dtype, np.integer) or np.any(y < 0) or np.any(y >= k):
        raise ParameterError(f"y must hold integer class indices in [0, {k})")
    return y.astype(np.int64)


def check_number(
    name: str, value: Any, low: float, high: float, *, low_open: bool = False
) -> float:
    """``value`` as a float in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if (
        not ok
        or not np.isfinite(value)
        or not (low < value if low_open else low <= value)
        or not value <= high
    ):
        bracket = "(" if low_open else "["
        raise ParameterError(f"{name}={value!r} must be a finite number in {bracket}{low}, {high}]")
    return float(value)


def check_scores(scores: Any, name: str) -> np.ndarray:
    """``scores`` as a non-empty ``(n,)`` float64 array of finite numbers."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or len(s) == 0 or not np.all(np.isfinite(s)):
        raise ParameterError(f"{name} must be a non-empty 1-D array of finite numbers")
    return s


def output_ood_score(probs: np.ndarray, *, method: str = "entropy") -> np.ndarray:
    """Out-of-taxonomy score from the model's own outputs: higher = less like any genre.

    The logit-based scores (energy, max-logit) cannot be had from probabilities: with
    ``log p`` as logits the energy ``−logsumexp(log p)`` is 0 for every track, and the max
    logit ``log max p`` ranks tracks as the top probability does. So: ``msp`` is
    ``1 − max p`` (Hendrycks & Gimpel 2017); ``entropy`` is the entropy over ``log K`` (in
    [0, 1]), which also sees probability spread over several genres, as for music none of
    them fits.

    Returns
    -------
    np.ndarray [shape=(tracks,)]
    """
    p = check_probs(probs)
    if method == "msp":
        return 1.0 - p.max(axis=1)
    if method == "entropy":
        return -np.sum(p * np.log(np.maximum(p, _EPS)), axis=1) / np.log(p.shape[1])
    raise ParameterError(f"method={method!r} must be 'msp' or 'entropy'")


def _compact(a: np.ndarray) -> list:
    """Nested lists of the float32 values' shortest decimals: half the JSON, exact on reload."""
    a = np.asarray(a, dtype=np.float32)
    if a.ndim == 1:
        return [float(str(v)) for v in a]
    return [_compact(row) for row in a]


@dataclass(frozen=True, eq=False)
class MahalanobisOOD:
    """Distance of an embedding to the nearest class mean, under one shared covariance.

    The within-class covariance of the standardised training embeddings is shrunk toward
    the identity (Ledoit & Wolf 2004's analytic weight, from scikit-learn, or a fixed
    ``shrinkage``); its ``components`` largest eigen-directions are kept with their
    variances, and the rest share one variance (their mean), so the card stays small
    (``components × dims`` numbers) and the score exact when ``components`` ≥ the
    covariance's rank.
    Parameters are float32, so :meth:`to_dict`/:meth:`from_dict` give identical scores.

    Attributes
    ----------
    scale : (dims,) per-feature within-class standard deviation
    means : (classes, dims) standardised class means
    basis : (components, dims) orthonormal directions
    variances : (components,) variance along each direction
    residual_variance : float, variance in every other direction
    """

    scale: np.ndarray
    means: np.ndarray
    basis: np.ndarray
    variances: np.ndarray
    residual_variance: float

    @classmethod
    def fit(
        cls,
        embeddings: np.ndarray,
        y: np.ndarray,
        *,
        components: int = 64,
        shrinkage: float | None = None,
    ) -> MahalanobisOOD:
        """Fit on training tracks: ``embeddings`` (tracks, dims), ``y`` (tracks,) class ids."""
        from sklearn.covariance import ledoit_wolf_shrinkage  # slow to import: only here

        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2 or not np.all(np.isfinite(x)):
            raise ParameterError(f"embeddings must be finite (tracks≥2, dims), got {x.shape}")
        y = check_labels(y, len(x), np.iinfo(np.int64).max)
        if not isinstance(components, (int, np.integer)) or components < 1:
            raise ParameterError(f"components={components} must be a positive integer")
        if shrinkage is not None:
            shrinkage = check_number("shrinkage", shrinkage, 0, 1, low_open=True)
        classes, inverse = np.unique(y, return_inverse=True)
        means = np.stack([x[inverse == i].mean(axis=0) for i in range(len(classes))])
        resid = x - means[inverse]
        std = resid.std(axis=0)
        scale = np.where(std > 0, std, 1.0)
        r = resid / scale
        n, d = r.shape
        _, s, vt = np.linalg.svd(r / np.sqrt(n), full_matrices=False)
        eig = s**2  # eigenvalues of the sample covariance S = rᵀr / n
        mu = eig.sum() / d
        if shrinkage is None:
            # The weight alone (LedoitWolf(assume_centered=True).fit(r).shrinkage_): the covariance
            # itself comes from the SVD above, kept to `components` directions. The floor
            # keeps every shrunk variance above 0 where S is rank-deficient.
            lw = ledoit_wolf_shrinkage(r, assume_centered=True)
            shrinkage = float(np.clip(lw, 1e-6, 1.0))
        k = min(int(components), len(eig), d)
        shrunk = (1 - shrinkage) * eig + shrinkage * mu
        rest = d - k
        residual = ((1 - shrinkage) * eig[k:].sum() + shrinkage * mu * rest) / rest if rest else 1.0
        return cls(
            scale=scale.astype(np.float32),
            means=(means / scale).astype(np.float32),
            basis=vt[:k].astype(np.float32),
            variances=shrunk[:k].astype(np.float32),
            residual_variance=float(np.float32(max(residual, 1e-12))),
        )

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """Mahalanobis distance to the nearest class mean: ``(tracks, dims)`` → ``(tracks,)``."""
        x = np.asarray(embeddings, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.scale) or not np.all(np.isfinite(x)):
            raise ParameterError(
                f"embeddings must be finite (tracks, {len(self.scale)}), got {x.shape}"
            )
        z = x / self.scale.astype(np.float64)
        basis, variances = self.basis.astype(np.float64), self.variances.astype(np.float64)
        best = np.full(len(z), np.inf)
        for mean in self.means.astype(np.float64):  # one class at a time: (tracks, dims) only
            diff = z - mean
            proj = diff @ basis.T  # (tracks, components)
            outside = np.maximum(np.sum(diff**2, axis=1) - np.sum(proj**2, axis=1), 0.0)
            dist = np.sum(proj**2 / variances, axis=1) + outside / self.residual_variance
            best = np.minimum(best, dist)
        return np.sqrt(best)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scale": _compact(self.scale),
            "means": _compact(self.means),
            "basis": _compact(self.basis),
            "variances": _compact(self.variances),
            "residual_variance": self.residual_variance,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MahalanobisOOD:
        try:
            arrays = {
                key: np.asarray(d[key], dtype=np.float32)
                for key in ("scale", "means", "basis", "variances")
            }
            residual = float(d["residual_variance"])
        except (KeyError, TypeError, ValueError) as e:
            raise ParameterError(f"malformed Mahalanobis parameters: {e}") from None
        scale, means, basis, variances = arrays.values()
        if (
            scale.ndim != 1
            or means.ndim != 2
            or basis.ndim != 2
            or means.shape[1] != len(scale)
            or basis.shape[1] != len(scale)
            or variances.shape != basis.shape[:1]
            or not residual > 0
            or not (np.all(scale > 0) and np.all(variances > 0))
        ):
            raise ParameterError("malformed Mahalanobis parameters: inconsistent shapes or values")
        return cls(**arrays, residual_variance=residual)


def ood_threshold(scores_in_val: np.ndarray, *, quantile: float = 0.95) -> float:
    """The ``quantile`` of in-taxonomy validation scores: above it, a track is out of taxonomy."""
    quantile = check_number("quantile", quantile, 0, 1, low_open=True)
    return float(np.quantile(check_scores(scores_in_val, "scores_in_val"), quantile))


def auroc(scores_in: np.ndarray, scores_out: np.ndarray) -> float:
    """P(an out-of-taxonomy score > an in-taxonomy score), ties counting half (Mann-Whitney U).

    scikit-learn's ``roc_auc_score`` with out of taxonomy as the positive class.
    """
    from sklearn.metrics import roc_auc_score  # slow to import: only here

    s_in, s_out = check_scores(scores_in, "scores_in"), check_scores(scores_out, "scores_out")
    is_out = np.concatenate([np.zeros(len(s_in)), np.ones(len(s_out))])
    return float(roc_auc_score(is_out, np.concatenate([s_in, s_out])))
