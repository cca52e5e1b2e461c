"""Log-mel front ends as Keras layers, so a compiled predict step can start from waveforms.

On a GPU the network is cheap and the numpy front end on the host is the bound (musicnn
on one H200: 1 165 segments/s with the log-mel on the host, 7 600 for the network alone).
:func:`device_frontend` computes the same log-mel with ``keras.ops`` inside the step, so a
GPU predictor receives waveforms and the host only decodes and resamples. Two front ends,
each the device twin of a numpy one, with that one's constants (never re-derived):

===========  ========================================  ==================================
spec         numpy twin                                 log
===========  ========================================  ==================================
musicnn      :func:`genre.pretrained.log_mel`           ``log10(10000 · mel + 1)``
             (16 kHz, n_fft 512, hop 256, 96 mels,
             reflect padding, 187 frames)
log-mel      :func:`genre.features.extract` ``mel``     ``power_to_db(ref=1, amin=1e-10,
             (the feature config's rate, STFT, mels;    top_db=80)`` per segment
             zero padding)
===========  ========================================  ==================================

Both use the same periodic Hann window and Slaney mel matrix as the numpy path
(:func:`genre.features.hann_window`, :func:`genre.features.mel_basis`). The DFT is a
matrix product over frames cut as ``n_fft / hop`` consecutive hops (no gather, no
``keras.ops.stft``, whose padding and window differ between backends), so the layer
compiles alike under TensorFlow, JAX and torch. ``tests/test_frontend.py`` holds both to
their numpy twins in float32 (the tolerances are stated there and in the README).

On a CPU the numpy path's FFT is cheaper than a dense DFT; the label pipeline keeps it
there (:class:`genre.card.LabelPlan` ``frontend``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genre.config import FeatureConfig
from genre.errors import ParameterError
from genre.features import hann_window, mel_basis
from genre.musicnn_spec import HOP_LENGTH, N_FFT, N_MELS, PATCH_FRAMES, PATCH_SAMPLES, SAMPLE_RATE

__all__ = ["FrontendSpec", "device_frontend", "with_frontend"]

_SCALES = ("musicnn", "db")
_AMIN, _TOP_DB = 1e-10, 80.0  # librosa's power_to_db, as genre.features uses it


@dataclass(frozen=True)
class FrontendSpec:
    """One log-mel front end: what waveform it takes and what it computes.

    Attributes
    ----------
    sample_rate : int
        Of the waveforms, Hz.
    samples : int
        Samples a waveform (the compiled step's fixed input length).
    n_fft, hop_length, n_mels, n_frames : int
        ``hop_length`` must divide ``n_fft``.
    reflect : bool
        Centred frames padded by reflection (musicnn's librosa 0.7) or with zeros (ours).
    scale : str
        ``musicnn`` (``log10(10000 · mel + 1)``) or ``db`` (``power_to_db``, top 80 dB).
    """

    sample_rate: int
    samples: int
    n_fft: int
    hop_length: int
    n_mels: int
    n_frames: int
    reflect: bool
    scale: str

    def __post_init__(self) -> None:
        if self.scale not in _SCALES:
            raise ParameterError(f"scale={self.scale!r}: choose one of {', '.join(_SCALES)}")
        if self.n_fft % self.hop_length:
            raise ParameterError(
                f"hop_length={self.hop_length} must divide n_fft={self.n_fft} for the device "
                "front end"
            )
        needed = (self.n_frames - 1) * self.hop_length + self.n_fft  # padded samples read
        if self.samples + 2 * (self.n_fft // 2) < needed:
            raise ParameterError(
                f"{self.samples} samples give fewer than {self.n_frames} frames of "
                f"{self.n_fft} (hop {self.hop_length})"
            )

    @classmethod
    def musicnn(cls, samples: int = PATCH_SAMPLES) -> FrontendSpec:
        """musicnn's input (:func:`genre.pretrained.log_mel`) from ``samples`` at 16 kHz."""
        return cls(SAMPLE_RATE, samples, N_FFT, HOP_LENGTH, N_MELS, PATCH_FRAMES, True, "musicnn")

    @classmethod
    def log_mel(cls, cfg: FeatureConfig) -> FrontendSpec:
        """The ``mel`` feature of ``cfg`` (:func:`genre.features.extract`) from one segment."""
        return cls(
            cfg.sample_rate,
            cfg.segment_samples,
            cfg.n_fft,
            cfg.hop_length,
            cfg.n_mels,
            cfg.frames,
            False,
            "db",
        )

    @property
    def used_samples(self) -> int:
        """Samples the frames read: musicnn's numpy path drops the rest before padding
        (they would change its reflection); zero padding reads them all."""
        if self.reflect:
            return min(self.samples, (self.n_frames - 1) * self.hop_length + self.n_fft // 2)
        return self.samples


def _dft_window(n_fft: int) -> np.ndarray:
    """Hann-windowed real DFT ``(n_fft, 2 · (n_fft // 2 + 1))``: real parts, then imaginary."""
    k = np.arange(n_fft // 2 + 1)
    angle = 2.0 * np.pi * np.outer(np.arange(n_fft), k) / n_fft
    window = hann_window(n_fft).astype(np.float64)[:, None]
    return np.concatenate([window * np.cos(angle), -window * np.sin(angle)], axis=1).astype(
        np.float32
    )


def device_frontend(spec: FrontendSpec, *, name: str = "frontend"):
    """A Keras layer: waveforms ``(batch, spec.samples)`` → log-mel ``(batch, n_frames, n_mels)``.

    Built from ``keras.ops`` only, float32 throughout, so it runs inside a compiled predict
    step on any backend. Frames are ``n_fft / hop`` consecutive hops side by side; the
    window is folded into the DFT matrix; power, mel matrix and log follow the numpy twin
    of ``spec`` (see the module notes).

    Returns
    -------
    layer : keras.layers.Layer
        No weights; its constants are the DFT ``(n_fft, n_fft + 2)`` and mel
        ``(n_fft // 2 + 1, n_mels)`` matrices.
    """
    import keras
    from keras import ops

    dft = _dft_window(spec.n_fft)
    basis = mel_basis(spec.sample_rate, spec.n_fft, spec.n_mels)
    half, pad, hop = spec.n_fft // 2 + 1, spec.n_fft // 2, spec.hop_length
    per_frame = spec.n_fft // hop  # hops a frame spans
    blocks = spec.n_frames - 1 + per_frame  # hops the frames read, padding included

    def padded(x):
        x = x[:, : spec.used_samples]
        if spec.reflect:  # numpy's "reflect": the edge sample is not repeated
            left = ops.flip(x[:, 1 : pad + 1], axis=1)
            right = ops.flip(x[:, -pad - 1 : -1], axis=1)
            return ops.concatenate([left, x, right], axis=1)
        return ops.pad(x, ((0, 0), (pad, pad)))

    class DeviceFrontend(keras.layers.Layer):
        def compute_output_shape(self, input_shape):
            return (input_shape[0], spec.n_frames, spec.n_mels)

        def call(self, waveforms):
            x = padded(ops.cast(waveforms, "float32"))[:, : blocks * hop]
            x = ops.reshape(x, (-1, blocks, hop))
            frames = ops.concatenate(
                [x[:, j : j + spec.n_frames] for j in range(per_frame)], axis=-1
            )  # (batch, frames, n_fft)
            spectrum = ops.matmul(frames, dft)
            power = ops.square(spectrum[..., :half]) + ops.square(spectrum[..., half:])
            mel = ops.matmul(power, basis)
            if spec.scale == "musicnn":
                return ops.log10(mel * 10000.0 + 1.0)
            db = 10.0 * ops.log10(ops.maximum(mel, _AMIN))
            return ops.maximum(db, ops.max(db, axis=(1, 2), keepdims=True) - _TOP_DB)

    # float32 whatever the mixed-precision policy: a float16 waveform or power loses the
    # quiet bands.
    return DeviceFrontend(name=name, dtype="float32")


def with_frontend(model, spec: FrontendSpec):
    """``model`` (which reads log-mel) behind :func:`device_frontend`: a Keras model whose
    input is waveforms ``(batch, spec.samples)`` and whose outputs are ``model``'s.

    The weights are ``model``'s own (shared, not copied), so compiling the result compiles
    front end and network as one step.
    """
    import keras

    waveforms = keras.Input((spec.samples,), name="waveform")
    outputs = model(device_frontend(spec)(waveforms))
    return keras.Model(waveforms, outputs, name=f"{model.name}_on_waveforms")
