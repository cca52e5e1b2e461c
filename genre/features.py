"""MFCC, chroma and log-mel for a batch of segments, all from one STFT.

Every feature here reproduces a librosa reference on each segment (see
``tests/test_features.py`` for the stated tolerances):

=========  ======================================================================
``mel``    ``power_to_db(melspectrogram(y, sr, n_fft, hop, n_mels), ref=1.0, top_db=80)``
``mfcc``   ``mfcc(y, sr, n_mfcc, n_fft, hop)`` (DCT-II, ortho, of that log-mel)
``chroma`` ``chroma_stft(y, sr, n_fft, hop, tuning=0.0)`` (max-normalised per frame)
=========  ======================================================================

but the batch is framed once, windowed once and transformed with one real FFT,
and the filterbanks are applied as sparse matrix products. No numba code runs, so
a fresh worker process pays no JIT compilation (librosa's ``chroma_stft`` without
``tuning=0.0`` would also hit the numba ``localmax`` crash in librosa 0.11 + numba
0.68). Outputs are ``(segments, frames, bins)`` float32: time first, as the models
consume them.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft

from genre.config import FEATURES, FeatureConfig
from genre.errors import ParameterError

__all__ = [
    "hann_window",
    "mel_basis",
    "power_spectrogram",
    "extract",
    "log_mel_from_power",
    "mfcc_from_log_mel",
    "chroma_from_power",
]

_AMIN = 1e-10
_TOP_DB = 80.0
# Segments per FFT call: big enough to amortise Python overhead, small enough that
# the windowed frames (chunk × frames × n_fft × 4 B ≈ 4 MB at 4) stay in cache.
# Measured on one core (tests/bench/bench_extract.py): 16 → 1690×, 8 → 1880×,
# 4 → 2140×, 1 → 2030× realtime.
_CHUNK = 4


@functools.lru_cache(maxsize=8)
def hann_window(n_fft: int) -> np.ndarray:
    """The periodic Hann window of ``n_fft`` samples: ``(n_fft,)`` float32."""
    # Periodic Hann, as scipy.signal.get_window("hann", n_fft, fftbins=True) and librosa's
    # STFT use; written out because importing scipy.signal costs every worker ~0.5 s.
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)


# The two filterbanks are librosa's (``filters.mel`` with Slaney scale and norm,
# ``filters.chroma`` with its defaults and tuning=0), written out in numpy because
# importing librosa.filters pulls in scipy.signal and scipy.stats: ~0.8 s in every
# fresh worker process. tests/test_features.py checks them against librosa.


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(hz, 1e-12) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log, linear)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(
        mel >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0)), mel * (200.0 / 3)
    )


@functools.lru_cache(maxsize=8)
def mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """``librosa.filters.mel(sr, n_fft, n_mels)`` transposed: ``(1 + n_fft // 2, n_mels)`` float32.

    Dense: a BLAS sgemm beats a sparse product here although the filters overlap
    only pairwise (measured: 3.8 ms vs 5.6 ms per 16 segments).
    """
    fft_hz = np.linspace(0, sample_rate / 2, 1 + n_fft // 2)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    ramps = mel_hz[:, None] - fft_hz[None, :]
    widths = np.diff(mel_hz)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]  # Slaney: equal area per band
    return np.ascontiguousarray(weights.T, dtype=np.float32)


@functools.lru_cache(maxsize=8)
def _chroma_basis(sample_rate: int, n_fft: int, n_chroma: int) -> np.ndarray:
    """``librosa.filters.chroma(sr, n_fft, n_chroma, tuning=0)`` transposed:
    ``(1 + n_fft // 2, n_chroma)``."""
    hz = np.linspace(0, sample_rate, n_fft, endpoint=False)[1:]
    bins = n_chroma * np.log2(hz / (440.0 / 16))  # octaves above A0, in chroma bins
    bins = np.concatenate(([bins[0] - 1.5 * n_chroma], bins))
    widths = np.concatenate((np.maximum(np.diff(bins), 1.0), [1.0]))
    half = np.round(n_chroma / 2)
    d = np.subtract.outer(bins, np.arange(n_chroma, dtype=np.float64)).T
    d = np.remainder(d + half + 10 * n_chroma, n_chroma) - half
    weights = np.exp(-0.5 * (2 * d / widths[None, :]) ** 2)
    norms = np.sqrt(np.sum(weights**2, axis=0))
    weights /= np.where(norms < np.finfo(weights.dtype).tiny, 1.0, norms)[None, :]
    weights *= np.exp(-0.5 * ((bins / n_chroma - 5.0) / 2.0) ** 2)[
        None, :
    ]  # centre octave 5, width 2
    weights = np.roll(weights, -3 * (n_chroma // 12), axis=0)  # start at C, not A
    return np.ascontiguousarray(weights[:, : 1 + n_fft // 2].T, dtype=np.float32)


@functools.lru_cache(maxsize=8)
def _dct_basis(n_mels: int, n_mfcc: int) -> np.ndarray:
    # DCT-II with orthonormal scaling, as scipy.fftpack.dct(type=2, norm="ortho").
    return np.ascontiguousarray(
        scipy.fft.dct(np.eye(n_mels, dtype=np.float64), type=2, norm="ortho", axis=0)[:n_mfcc].T,
        dtype=np.float32,
    )  # (mels, mfcc)


def power_spectrogram(
    segments: np.ndarray, *, n_fft: int = 2048, hop_length: int = 512
) -> np.ndarray:
    """|STFT|² of each segment with centred, zero-padded Hann frames (librosa's defaults).

    Parameters
    ----------
    segments : np.ndarray [shape=(segments, samples)]
    n_fft, hop_length : int > 0

    Returns
    -------
    power : np.ndarray [shape=(segments, frames, 1 + n_fft // 2), dtype=float32]
        ``frames = 1 + samples // hop_length``.
    """
    x = np.asarray(segments, dtype=np.float32)
    pad = n_fft // 2
    padded = np.pad(x, ((0, 0), (pad, pad)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=-1)[:, ::hop_length]
    spectrum = scipy.fft.rfft(frames * hann_window(n_fft), axis=-1)
    # |z|² written into one float32 array: no complex temporaries (≈30 % of this function
    # otherwise).
    power = np.multiply(spectrum.real, spectrum.real, dtype=np.float32)
    power += np.square(spectrum.imag, dtype=np.float32)
    return power


def _power_to_db(power: np.ndarray) -> np.ndarray:
    """``librosa.power_to_db(ref=1.0, amin=1e-10, top_db=80)`` per segment (axis 0)."""
    db = 10.0 * np.log10(np.maximum(power, _AMIN))
    floor = db.max(axis=(1, 2), keepdims=True) - _TOP_DB
    return np.maximum(db, floor, out=db)


def log_mel_from_power(
    power: np.ndarray, *, sample_rate: int, n_fft: int, n_mels: int
) -> np.ndarray:
    """Log-mel (dB) ``(segments, frames, n_mels)`` from a power spectrogram."""
    n, t, f = power.shape
    mel = power.reshape(n * t, f) @ mel_basis(sample_rate, n_fft, n_mels)
    return _power_to_db(mel.reshape(n, t, n_mels))


def mfcc_from_log_mel(log_mel: np.ndarray, *, n_mfcc: int) -> np.ndarray:
    """MFCC ``(segments, frames, n_mfcc)`` from log-mel ``(segments, frames, n_mels)``."""
    return log_mel @ _dct_basis(log_mel.shape[-1], n_mfcc)


def chroma_from_power(
    power: np.ndarray, *, sample_rate: int, n_fft: int, n_chroma: int
) -> np.ndarray:
    """Chroma ``(segments, frames, n_chroma)``, each frame scaled to a maximum of 1."""
    raw = power @ _chroma_basis(sample_rate, n_fft, n_chroma)
    peak = raw.max(axis=-1, keepdims=True)
    peak[peak < np.finfo(np.float32).tiny] = 1.0  # silent frames stay zero, as librosa's normalize
    return raw / peak


def extract(segments: np.ndarray, cfg: FeatureConfig) -> dict[str, np.ndarray]:
    """Compute the features ``cfg.features`` for a batch of segments.

    Parameters
    ----------
    segments : np.ndarray [shape=(segments, cfg.segment_samples)]
        Mono audio at ``cfg.sample_rate``.
    cfg : FeatureConfig

    Returns
    -------
    features : dict[str, np.ndarray]
        For each hand-crafted name in ``cfg.features`` (``mfcc``, ``chroma``, ``mel``),
        float32 of shape ``(segments, cfg.frames, bins)``. Pretrained columns are
        computed elsewhere (:mod:`genre.embeddings`).
    """
    x = np.asarray(segments)
    if x.ndim != 2 or x.shape[1] != cfg.segment_samples:
        raise ParameterError(
            f"segments of shape {x.shape} do not match the config: "
            f"expected (n, {cfg.segment_samples})"
        )
    if not np.isfinite(x).all():
        raise ParameterError("segments contain non-finite samples")
    out = {
        name: np.empty((len(x), *cfg.shape(name)), dtype=np.float32)
        for name in cfg.features
        if name in FEATURES
    }
    if not out:
        return out
    want_mel = "mel" in out or "mfcc" in out
    for lo in range(0, len(x), _CHUNK):
        hi = lo + _CHUNK
        power = power_spectrogram(x[lo:hi], n_fft=cfg.n_fft, hop_length=cfg.hop_length)
        if want_mel:
            log_mel = log_mel_from_power(
                power, sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels
            )
            if "mel" in out:
                out["mel"][lo:hi] = log_mel
            if "mfcc" in out:
                out["mfcc"][lo:hi] = mfcc_from_log_mel(log_mel, n_mfcc=cfg.n_mfcc)
        if "chroma" in out:
            out["chroma"][lo:hi] = chroma_from_power(
                power, sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, n_chroma=cfg.n_chroma
            )
    return out
