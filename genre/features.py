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
import scipy.signal
import scipy.sparse

from genre.config import FeatureConfig
from genre.errors import ParameterError

__all__ = ["power_spectrogram", "extract", "log_mel_from_power", "mfcc_from_log_mel", "chroma_from_power"]

_AMIN = 1e-10
_TOP_DB = 80.0
# Segments per FFT call: big enough to amortise Python overhead, small enough that
# the framed block (chunk × frames × n_fft × 4 B ≈ 17 MB at 16) stays near cache.
_CHUNK = 16


@functools.lru_cache(maxsize=8)
def _window(n_fft: int) -> np.ndarray:
    return scipy.signal.get_window("hann", n_fft, fftbins=True).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _mel_basis(sample_rate: int, n_fft: int, n_mels: int) -> scipy.sparse.csr_matrix:
    import librosa.filters  # pure numpy; cached per process

    basis = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, dtype=np.float32)
    return scipy.sparse.csr_matrix(basis.T)  # (freq, mels): ~2 non-zeros per row


@functools.lru_cache(maxsize=8)
def _chroma_basis(sample_rate: int, n_fft: int, n_chroma: int) -> np.ndarray:
    import librosa.filters

    return np.ascontiguousarray(
        librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, tuning=0.0, n_chroma=n_chroma, dtype=np.float32).T
    )  # (freq, chroma)


@functools.lru_cache(maxsize=8)
def _dct_basis(n_mels: int, n_mfcc: int) -> np.ndarray:
    # DCT-II with orthonormal scaling, as scipy.fftpack.dct(type=2, norm="ortho").
    return np.ascontiguousarray(
        scipy.fft.dct(np.eye(n_mels, dtype=np.float64), type=2, norm="ortho", axis=0)[:n_mfcc].T, dtype=np.float32
    )  # (mels, mfcc)


def power_spectrogram(segments: np.ndarray, *, n_fft: int = 2048, hop_length: int = 512) -> np.ndarray:
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
    spectrum = scipy.fft.rfft(frames * _window(n_fft), axis=-1)
    return (spectrum.real**2 + spectrum.imag**2).astype(np.float32, copy=False)


def _power_to_db(power: np.ndarray) -> np.ndarray:
    """``librosa.power_to_db(ref=1.0, amin=1e-10, top_db=80)`` per segment (axis 0)."""
    db = 10.0 * np.log10(np.maximum(power, _AMIN))
    floor = db.max(axis=(1, 2), keepdims=True) - _TOP_DB
    return np.maximum(db, floor, out=db)


def log_mel_from_power(power: np.ndarray, *, sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Log-mel (dB) ``(segments, frames, n_mels)`` from a power spectrogram."""
    n, t, f = power.shape
    mel = (_mel_basis(sample_rate, n_fft, n_mels).T @ power.reshape(n * t, f).T).T
    return _power_to_db(np.asarray(mel, dtype=np.float32).reshape(n, t, n_mels))


def mfcc_from_log_mel(log_mel: np.ndarray, *, n_mfcc: int) -> np.ndarray:
    """MFCC ``(segments, frames, n_mfcc)`` from log-mel ``(segments, frames, n_mels)``."""
    return log_mel @ _dct_basis(log_mel.shape[-1], n_mfcc)


def chroma_from_power(power: np.ndarray, *, sample_rate: int, n_fft: int, n_chroma: int) -> np.ndarray:
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
        For each name in ``cfg.features``, float32 of shape ``(segments, cfg.frames, bins)``.
    """
    x = np.asarray(segments)
    if x.ndim != 2 or x.shape[1] != cfg.segment_samples:
        raise ParameterError(
            f"segments of shape {x.shape} do not match the config: expected (n, {cfg.segment_samples})"
        )
    if not np.isfinite(x).all():
        raise ParameterError("segments contain non-finite samples")
    out = {name: np.empty((len(x), *cfg.shape(name)), dtype=np.float32) for name in cfg.features}
    want_mel = "mel" in out or "mfcc" in out
    for lo in range(0, len(x), _CHUNK):
        hi = lo + _CHUNK
        power = power_spectrogram(x[lo:hi], n_fft=cfg.n_fft, hop_length=cfg.hop_length)
        if want_mel:
            log_mel = log_mel_from_power(power, sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels)
            if "mel" in out:
                out["mel"][lo:hi] = log_mel
            if "mfcc" in out:
                out["mfcc"][lo:hi] = mfcc_from_log_mel(log_mel, n_mfcc=cfg.n_mfcc)
        if "chroma" in out:
            out["chroma"][lo:hi] = chroma_from_power(
                power, sample_rate=cfg.sample_rate, n_fft=cfg.n_fft, n_chroma=cfg.n_chroma
            )
    return out
