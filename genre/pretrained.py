"""Pretrained musicnn taggers (Pons & Serra, ISMIR 2019 LBD) in Keras 3.

The ``musicnn`` wheel on PyPI ships TF1 checkpoints of two taggers with the same
architecture (792 079 weights each): ``MSD_musicnn`` (Million Song Dataset,
Last.fm top-50 tags) and ``MTT_musicnn`` (MagnaTagATune top-50 tags), and of two
VGG-like taggers trained on the same data, ``MSD_vgg`` and ``MTT_vgg``
(:mod:`genre.pretrained_vgg`). Its Python code is TF1-only (it disables eager
execution on import), so it is never imported: :func:`weights_folder` only *finds*
the package, :func:`build_musicnn` (or :func:`genre.pretrained_vgg.build_vgg`)
rebuilds the network in Keras 3 and :func:`load_pretrained` fills it from the
checkpoint by variable name. ``tests/test_pretrained.py`` holds all four models' tags
and embeddings to the original TF1 graph's within 1e-5
(``tests/data/musicnn_reference.npz``, made by ``tests/bench/make_musicnn_reference.py``).

Per 3 s patch of 16 kHz audio a musicnn model gives three features (a VGG model's
are in :mod:`genre.pretrained_vgg`):

=============  ======  ========================================================
``embedding``  200     the penultimate dense layer (after its batch norm)
``pool``       1 506   the 753 mid-level features (front end 561 + mid end
                       3 × 64): their maxima over time, then their means
``tags``       50      tag probabilities, vocabulary :data:`TAGS` ``[model]``
=============  ======  ========================================================

The front end (:func:`log_mel`) is numpy and float32 throughout; see its notes
for why musicnn's own float16 cast is not reproduced. See ``docs/pretrained.md``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from importlib import resources
from pathlib import Path

import numpy as np
import scipy.fft

from genre.backend import read_tf_checkpoint
from genre.errors import GenreError, ParameterError
from genre.features import hann_window, mel_basis
from genre.frontend import FrontendSpec, with_frontend
from genre.musicnn_spec import (
    COLUMN_DIMS,
    EMBEDDING_DIM,
    HOP_LENGTH,
    INSTALL_COMMAND,
    N_FFT,
    N_MELS,
    N_PARAMS,
    PATCH_FRAMES,
    POOL_DIM,
    SAMPLE_RATE,
    VGG_N_PARAMS,
    WHEEL_SHA256,
)
from genre.pretrained_vgg import CHECKPOINT_LAYERS as VGG_CHECKPOINT_LAYERS
from genre.pretrained_vgg import build_vgg

# musicnn's shapes and weights hash live in genre.musicnn_spec; import them from there.
__all__ = [
    "MSD_TAGS",
    "MTT_TAGS",
    "MODELS",
    "TAGS",
    "weights_folder",
    "log_mel",
    "build_musicnn",
    "load_pretrained",
    "MusicnnExtractor",
]


#: The two 50-tag vocabularies, in each model's output order (from musicnn's
#: ``configuration.py``; package data ``genre/data/musicnn_tags.json``).
_VOCABULARIES = json.loads(
    (resources.files("genre") / "data" / "musicnn_tags.json").read_text(encoding="utf-8")
)
#: MagnaTagATune top-50 tags (``MTT_musicnn``, ``MTT_vgg``).
MTT_TAGS: tuple[str, ...] = tuple(_VOCABULARIES["musicnn_mtt"])
#: Million Song Dataset (Last.fm) top-50 tags (``MSD_musicnn``, ``MSD_vgg``).
MSD_TAGS: tuple[str, ...] = tuple(_VOCABULARIES["musicnn_msd"])
#: Extractor (:data:`genre.config.PRETRAINED`) → its checkpoint folder in the wheel.
MODELS = {
    "musicnn_msd": "MSD_musicnn",
    "musicnn_mtt": "MTT_musicnn",
    "vgg_msd": "MSD_vgg",
    "vgg_mtt": "MTT_vgg",
}
TAGS = {"musicnn_msd": MSD_TAGS, "musicnn_mtt": MTT_TAGS, "vgg_msd": MSD_TAGS, "vgg_mtt": MTT_TAGS}
_VGG = ("vgg_msd", "vgg_mtt")

_BN_EPSILON = 1e-3  # tf.compat.v1.layers.batch_normalization's default
_TIMBRAL = ((7, 38), (7, 67))  # (time, mel) kernels: int(0.4 × 96), int(0.7 × 96) bands
_TEMPORAL = (128, 64, 32)  # time-only kernels
_TIMBRAL_FILTERS = 204  # int(1.6 × 128)
_TEMPORAL_FILTERS = 51  # int(1.6 × 32)
_MIDEND_FILTERS = 64
_CHUNK = 8  # segments per FFT call in log_mel: 8 × 187 frames × 2 KiB ≈ 3 MB of frames

# TF1 variable scope → our Keras layer, in the order musicnn's models.py creates them;
# a front-end block holds a convolution's and a batch norm's variables.
_CHECKPOINT_LAYERS = (
    ("batch_normalization", "input_bn"),
    ("conv2d", "timbral_7x38"),
    ("batch_normalization_1", "timbral_7x38"),
    ("conv2d_1", "timbral_7x67"),
    ("batch_normalization_2", "timbral_7x67"),
    ("conv2d_2", "temporal_128"),
    ("batch_normalization_3", "temporal_128"),
    ("conv2d_3", "temporal_64"),
    ("batch_normalization_4", "temporal_64"),
    ("conv2d_4", "temporal_32"),
    ("batch_normalization_5", "temporal_32"),
    ("conv2d_5", "midend_1"),
    ("batch_normalization_6", "midend_1_bn"),
    ("conv2d_6", "midend_2"),
    ("batch_normalization_7", "midend_2_bn"),
    ("conv2d_7", "midend_3"),
    ("batch_normalization_8", "midend_3_bn"),
    ("batch_normalization_9", "pool_bn"),
    ("dense", "penultimate"),
    ("batch_normalization_10", "embedding"),
    ("dense_1", "tags"),
)
# musicnn's back end flattens (753 features, [max, mean]) into 1 506 interleaved
# values (max_0, mean_0, max_1, …); ours concatenates [max (753), mean (753)], so
# the weights that read the pool are reordered once at load time.
_POOL_ORDER = np.concatenate([np.arange(0, POOL_DIM, 2), np.arange(1, POOL_DIM, 2)])


def weights_folder(model: str, *, package_dir: str | os.PathLike | None = None) -> Path:
    """The checkpoint folder of ``model`` inside the installed musicnn package.

    Parameters
    ----------
    model : str
        A key of :data:`MODELS` (``"musicnn_msd"``, ``"musicnn_mtt"``, ``"vgg_msd"``,
        ``"vgg_mtt"``).
    package_dir : path, optional
        Where the musicnn package lies; by default found with
        ``importlib.util.find_spec("musicnn")``, which imports none of its modules.

    Returns
    -------
    folder : Path
        Holds ``.index`` and ``.data-00000-of-00001``.

    Raises
    ------
    ParameterError
        If ``model`` is unknown or its weights are not installed; the message
        names :data:`INSTALL_COMMAND`.
    """
    if model not in MODELS:
        raise ParameterError(f"model={model!r} is not one of {sorted(MODELS)}")
    if package_dir is None:
        spec = importlib.util.find_spec("musicnn")
        locations = list(spec.submodule_search_locations or []) if spec else []
        if not locations:
            raise ParameterError(
                f"musicnn weights for {model}: no musicnn package; `{INSTALL_COMMAND}`"
            )
        package_dir = locations[0]
    folder = Path(package_dir) / MODELS[model]
    if not ((folder / ".index").is_file() and (folder / ".data-00000-of-00001").is_file()):
        raise ParameterError(
            f"musicnn weights for {model} not found in {folder}: `{INSTALL_COMMAND}`"
        )
    return folder


def _valid_audio(audio: np.ndarray, *, min_samples: int) -> np.ndarray:
    if (
        not isinstance(audio, np.ndarray)
        or audio.ndim != 2
        or not np.issubdtype(audio.dtype, np.floating)
    ):
        raise ParameterError(
            f"audio must be a float array of shape (segments, samples), got "
            f"{getattr(audio, 'dtype', type(audio).__name__)} "
            f"of shape {getattr(audio, 'shape', None)}"
        )
    if audio.shape[1] < min_samples:
        raise ParameterError(
            f"audio has {audio.shape[1]} samples a segment, needs at least {min_samples}"
        )
    if not np.isfinite(audio).all():
        raise ParameterError("audio contains non-finite samples")
    return np.asarray(audio, dtype=np.float32)


def log_mel(audio: np.ndarray, *, n_frames: int = PATCH_FRAMES) -> np.ndarray:
    """musicnn's input: ``log10(10000 · mel + 1)`` of 16 kHz audio, in float32.

    The mel power spectrogram is librosa's ``melspectrogram(y, sr=16000,
    n_fft=512, hop_length=256, n_mels=96)`` as musicnn computed it with librosa
    0.7: centred frames with *reflect* padding (librosa ≥ 0.10 pads with zeros),
    periodic Hann window, power 2, Slaney mel filters with Slaney area norm.

    Notes
    -----
    musicnn's own extractor casts the mel power to float16 before the log; bins
    above 65 504 (a loud track) become ``inf``, every output of the network then
    saturates and every loud track gets the same tags. Here the whole chain stays
    in float32.

    Parameters
    ----------
    audio : np.ndarray [shape=(segments, samples)]
        Mono float audio at :data:`SAMPLE_RATE`, at least
        ``(n_frames - 1) × 256`` samples a segment (47 616 for 187 frames).
    n_frames : int > 0
        Frames kept from the start of each segment.

    Returns
    -------
    log_mel : np.ndarray [shape=(segments, n_frames, 96), dtype=float32]

    Raises
    ------
    ParameterError
        If ``audio`` is not a finite 2-D float array long enough for ``n_frames``.
    """
    if not isinstance(n_frames, int | np.integer) or n_frames < 1:
        raise ParameterError(f"n_frames={n_frames!r} must be a positive integer")
    pad = N_FFT // 2
    x = _valid_audio(audio, min_samples=max((n_frames - 1) * HOP_LENGTH, pad + 1))
    # Samples beyond the last kept frame play no part (nor in the reflection).
    x = x[:, : (n_frames - 1) * HOP_LENGTH + pad]
    out = np.empty((len(x), n_frames, N_MELS), dtype=np.float32)
    basis = mel_basis(SAMPLE_RATE, N_FFT, N_MELS)
    for lo in range(0, len(x), _CHUNK):
        padded = np.pad(x[lo : lo + _CHUNK], ((0, 0), (pad, pad)), mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT, axis=-1)[:, ::HOP_LENGTH]
        frames = frames[:, :n_frames]
        spectrum = scipy.fft.rfft(frames * hann_window(N_FFT), axis=-1)
        power = np.multiply(spectrum.real, spectrum.real, dtype=np.float32)
        power += np.square(spectrum.imag, dtype=np.float32)
        mel = power @ basis
        mel *= np.float32(10000.0)
        mel += np.float32(1.0)
        out[lo : lo + _CHUNK] = np.log10(mel, out=mel)
    return out


@functools.lru_cache(maxsize=4)
def _dft_matrices(width: int) -> tuple[np.ndarray, np.ndarray]:
    """Real DFT over the 96 mel bands ``(96, 98)`` and its inverse ``(97 - width, 98)``.

    The inverse keeps only the outputs of a "valid" correlation with a kernel of
    ``width`` bands. Columns (rows of the inverse): 49 real parts, 49 imaginary parts.
    """
    bins = np.arange(N_MELS // 2 + 1)
    angle = 2 * np.pi * np.outer(np.arange(N_MELS), bins) / N_MELS
    forward = np.concatenate([np.cos(angle), -np.sin(angle)], axis=1)
    weight = np.where((bins == 0) | (bins == N_MELS // 2), 1.0, 2.0) / N_MELS  # Hermitian symmetry
    angle = 2 * np.pi * np.outer(np.arange(N_MELS - width + 1), bins) / N_MELS
    inverse = np.concatenate([weight * np.cos(angle), -weight * np.sin(angle)], axis=1)
    return forward.astype(np.float32), inverse.astype(np.float32)


def _frontend_block(kernel_size: tuple[int, int], filters: int, *, name: str):
    """A musicnn front-end block: Conv2D(filters, kernel_size) → ReLU → batch norm → max over mel.

    ``kernel_size`` is (frames, bands). Timbral blocks (7 × 38, 7 × 67) see the
    input padded by 3 frames each side and no mel padding; temporal blocks
    (128/64/32 × 1) use "same" padding. Output: ``(batch, frames, filters)``.

    Two changes of evaluation order, exact up to float rounding, make it about
    1.5 × faster than the TF1 graph's on a CPU core:

    - The maximum over mel is taken first, on the convolution: ReLU and batch norm
      are monotonic per filter, so only the per-filter maximum (the minimum for a
      filter whose batch-norm scale is negative: its kernel is negated, then the
      maximum taken) is normalised, not all 96 or 59 bands.
    - Timbral blocks correlate along mel as a product of real DFTs over the 96
      bands (exact: their valid outputs never wrap around), about half the
      arithmetic of the direct 7 × 38 convolution, the bulk of the network
      (measured on one core: 12.7 → 8.0 ms a patch for 7 × 38, 10.9 → 6.9 for 7 × 67).
      Temporal blocks convolve directly (a DFT over time does not pay there).

    The weights keep the Conv2D's and the batch norm's names and shapes, so the
    checkpoint loads into them by name.
    """
    import keras
    from keras import ops

    frames_k, bands_k = kernel_size

    def timbral_peak(x, kernel):
        forward, inverse = _dft_matrices(bands_k)
        half = N_MELS // 2 + 1
        batch, frames = ops.shape(x)[0], x.shape[1]
        # Kernel spectra W = c + i·d, (49 bins, 7 taps, filters) each; correlation is X · conj(W).
        spectrum = ops.einsum("tmf,mj->jtf", kernel[:, :, 0, :], forward[:bands_k])
        c, d = spectrum[:half], spectrum[half:]
        # (2 [re, im], 49, 14 [a_0…a_6, b_0…b_6 of X = a + i·b], filters)
        mix = ops.stack([ops.concatenate([c, d], axis=1), ops.concatenate([-d, c], axis=1)])
        pad = frames_k // 2
        padded = ops.pad(x, ((0, 0), (pad, pad), (0, 0)))
        spec = ops.reshape(ops.matmul(padded, forward), (batch, frames + 2 * pad, 2, half))
        taps = ops.stack(
            [spec[:, t : t + frames] for t in range(frames_k)], axis=-1
        )  # (…, 2, 49, 7)
        taps = ops.transpose(taps, (3, 0, 1, 2, 4))  # (49, batch, frames, 2, 7)
        taps = ops.reshape(taps, (1, half, batch * frames, 2 * frames_k))
        product = ops.reshape(ops.matmul(taps, mix), (2 * half, -1))  # (98, batch·frames·filters)
        return ops.reshape(ops.max(ops.matmul(inverse, product), axis=0), (batch, frames, filters))

    def temporal_peak(x, kernel):
        return ops.max(ops.conv(x[..., None], kernel, padding="same"), axis=2)

    class FrontendBlock(keras.layers.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(frames_k, bands_k, 1, filters), name="kernel")
            for weight, init, trainable in (
                ("bias", "zeros", True),
                ("gamma", "ones", True),
                ("beta", "zeros", True),
                ("moving_mean", "zeros", False),
                ("moving_variance", "ones", False),
            ):
                variable = self.add_weight(
                    shape=(filters,), initializer=init, name=weight, trainable=trainable
                )
                setattr(self, weight, variable)

        def compute_output_shape(self, input_shape):
            return (input_shape[0], input_shape[1], filters)

        def call(self, x):  # (batch, frames, 96), batch-normed
            scale = self.gamma * ops.rsqrt(self.moving_variance + _BN_EPSILON)
            sign = ops.where(scale < 0, -1.0, 1.0)
            peak = (timbral_peak if bands_k > 1 else temporal_peak)(x, self.kernel * sign)
            y = ops.relu(sign * peak + self.bias)
            return y * scale + (self.beta - self.moving_mean * scale)

    return FrontendBlock(name=name)


def build_musicnn(*, n_frames: int = PATCH_FRAMES, n_tags: int = 50):
    """The musicnn architecture (``build_musicnn`` in musicnn's models.py) in Keras 3.

    Front end: batch norm of the input; two timbral convolutions (7 × 38 and
    7 × 67 time × mel, 204 filters, time-padded) and three temporal ones (128, 64
    and 32 frames × 1, 51 filters, "same"), each ReLU → batch norm → max over
    frequency. Mid end: three 1-D convolutions (7 frames, 64 filters) with
    residual connections. Back end: max and mean over time of all 753 features,
    batch norm, dense 200 ReLU, batch norm (the embedding), dense sigmoid.
    Dropout is left out: this model only predicts.

    Parameters
    ----------
    n_frames : int > 0
        Frames a patch (musicnn was trained on 187; it pools over time, so others work).
    n_tags : int > 0

    Returns
    -------
    model : keras.Model
        Input ``(batch, n_frames, 96)`` log-mel; outputs a dict: ``tags``
        ``(batch, n_tags)``, ``embedding`` ``(batch, 200)``, ``pool`` ``(batch, 1506)``.
        Its weights are random until :func:`load_pretrained` fills them.
    """
    import keras
    from keras import layers

    def norm(name):
        return layers.BatchNormalization(epsilon=_BN_EPSILON, name=name)

    spec = keras.Input((n_frames, N_MELS), name="log_mel")
    x = layers.Reshape((n_frames, N_MELS, 1), name="channel")(spec)
    x = layers.Reshape((n_frames, N_MELS), name="mel")(norm("input_bn")(x))
    front = [
        _frontend_block(size, _TIMBRAL_FILTERS, name=f"timbral_{size[0]}x{size[1]}")(x)
        for size in _TIMBRAL
    ] + [
        _frontend_block((length, 1), _TEMPORAL_FILTERS, name=f"temporal_{length}")(x)
        for length in _TEMPORAL
    ]
    front = layers.Concatenate(name="frontend")(front)  # (batch, time, 561)

    mid = [front]
    y = front
    for i in (1, 2, 3):
        conv = layers.Conv1D(
            _MIDEND_FILTERS, 7, padding="same", activation="relu", name=f"midend_{i}"
        )(y)
        conv = norm(f"midend_{i}_bn")(conv)
        y = conv if i == 1 else layers.Add(name=f"midend_{i}_residual")([conv, y])
        mid.append(y)
    mid = layers.Concatenate(name="midend")(mid)  # (batch, time, 753)

    pool = layers.Concatenate(name="pool")(
        [
            layers.GlobalMaxPooling1D(name="max_pool")(mid),
            layers.GlobalAveragePooling1D(name="mean_pool")(mid),
        ]
    )
    y = norm("pool_bn")(pool)
    y = layers.Dense(EMBEDDING_DIM, activation="relu", name="penultimate")(y)
    embedding = norm("embedding")(y)
    tags = layers.Dense(n_tags, activation="sigmoid", name="tags")(embedding)
    return keras.Model(spec, {"tags": tags, "embedding": embedding, "pool": pool}, name="musicnn")


def _read_checkpoint(folder: Path) -> dict[str, np.ndarray]:
    """Every non-optimizer variable of a TF1 checkpoint, by name."""

    return {
        name: value
        for name, value in read_tf_checkpoint(folder).items()
        if not (name.endswith(("/Adam", "/Adam_1")) or name in ("beta1_power", "beta2_power"))
    }


def _cache_file(model: str) -> Path:
    root = os.environ.get("GENRE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "genre")
    return Path(root) / f"{model}-{WHEEL_SHA256[:12]}.npz"


def _checkpoint_values(model: str, *, package_dir) -> tuple[dict[str, np.ndarray], Path]:
    """The checkpoint's variables, from the converted copy in the cache when there is one.

    Reading a TF1 checkpoint needs TensorFlow; the first read writes the variables to
    ``$GENRE_CACHE`` (default ``~/.cache/genre``) as ``.npz``, keyed by the wheel's hash,
    so later loads (every Ray worker, a machine with another Keras backend and no
    TensorFlow, given that file) need neither TensorFlow nor the wheel.
    """
    cached = _cache_file(model)
    if package_dir is None and cached.is_file():
        with np.load(cached) as data:
            return {name: data[name] for name in data.files}, cached
    folder = weights_folder(model, package_dir=package_dir)
    values = _read_checkpoint(folder)
    if package_dir is None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, **values)
            os.replace(tmp, cached)
        except OSError:  # a read-only home: no cache, same weights
            pass
    return values, folder


def load_pretrained(model: str, *, package_dir: str | os.PathLike | None = None):
    """The network of ``model`` with the weights of its pretrained checkpoint.

    Parameters
    ----------
    model : str
        A key of :data:`MODELS`.
    package_dir : path, optional
        See :func:`weights_folder`.

    Returns
    -------
    model : keras.Model
        As :func:`build_musicnn` (:data:`N_PARAMS` weights) for ``musicnn_msd`` and
        ``musicnn_mtt``, as :func:`genre.pretrained_vgg.build_vgg` (:data:`VGG_N_PARAMS`)
        for ``vgg_msd`` and ``vgg_mtt``, every weight from the checkpoint.

    Raises
    ------
    ParameterError
        If the weights are not installed.
    GenreError
        If the checkpoint's variables do not map one to one, shape for shape, onto
        the Keras weights (a different or damaged checkpoint).
    """
    values, folder = _checkpoint_values(model, package_dir=package_dir)
    vgg = model in _VGG
    net = (build_vgg if vgg else build_musicnn)(n_tags=len(TAGS[model]))
    scopes = VGG_CHECKPOINT_LAYERS if vgg else _CHECKPOINT_LAYERS
    n_params = VGG_N_PARAMS if vgg else N_PARAMS
    assigned: list[str] = []
    for scope, layer_name in scopes:
        for variable in net.get_layer(layer_name).weights:
            key = f"{scope}/{variable.name}"
            if key not in values:  # a front-end block reads two scopes: convolution, batch norm
                continue
            value = values.pop(key)
            # TF1 stores musicnn's mid-end 1-D kernels as (7, in, 1, out) 2-D ones.
            if tuple(d for d in value.shape if d != 1) != tuple(
                d for d in variable.shape if d != 1
            ):
                raise GenreError(
                    f"{folder}: {key} has shape {value.shape}, "
                    f"{variable.path} needs {variable.shape}"
                )
            value = value.reshape(variable.shape)
            # musicnn's layers that read its pool (no VGG layer has these names).
            if layer_name == "pool_bn" or (
                layer_name == "penultimate" and variable.name == "kernel"
            ):
                value = value[_POOL_ORDER]
            variable.assign(value)
            assigned.append(variable.path)
    unloaded = sorted({v.path for v in net.weights} - set(assigned))
    if values or unloaded or len(assigned) != len(set(assigned)) or net.count_params() != n_params:
        raise GenreError(
            f"{folder}: checkpoint variables not used: {sorted(values)}; "
            f"weights not loaded: {unloaded}; "
            f"{net.count_params()} weights, expected {n_params}"
        )
    return net


class MusicnnExtractor:
    """One pretrained model of the musicnn wheel (musicnn or VGG), loaded once, mapping
    audio to its features.

    Meant to be held by a Ray Data actor: construct once per process, call per
    batch. Inputs go through one compiled predict function in batches of a fixed
    ``batch_size`` (the last one padded with zeros), so the graph is traced once.

    Parameters
    ----------
    model : str
        A key of :data:`MODELS`.
    batch_size : int > 0
        Patches per compiled call.
    jit_compile : bool
        Compile the predict step with XLA.
    package_dir : path, optional
        See :func:`weights_folder`.
    waveform_samples : int or None
        ``None``: :meth:`predict` takes log-mel patches (the numpy front end runs on the
        host, in :func:`log_mel`). An int: it takes 16 kHz waveforms of that many samples
        and the log-mel is computed inside the compiled step
        (:func:`genre.frontend.device_frontend`), the path for a GPU.

    Raises
    ------
    ParameterError
        If ``batch_size`` is not positive, or see :func:`load_pretrained`.
    """

    def __init__(
        self,
        model: str = "musicnn_msd",
        *,
        batch_size: int = 32,
        jit_compile: bool = False,
        package_dir: str | os.PathLike | None = None,
        waveform_samples: int | None = None,
    ):
        if not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise ParameterError(f"batch_size={batch_size!r} must be a positive integer")
        self.model = load_pretrained(model, package_dir=package_dir)
        self.name, self.tags, self.batch_size = model, TAGS[model], int(batch_size)
        self.input_shape: tuple[int, ...] = (PATCH_FRAMES, N_MELS)
        if waveform_samples is not None:
            self.model = with_frontend(self.model, FrontendSpec.musicnn(int(waveform_samples)))
            self.input_shape = (int(waveform_samples),)
        # predict_on_batch runs model.make_predict_function()'s tf.function (jit_compile
        # chooses XLA) and returns numpy via keras.ops.convert_to_numpy.
        self.model.compile(jit_compile=jit_compile)

    @property
    def on_waveforms(self) -> bool:
        """:meth:`predict` takes waveforms (the front end runs in the compiled step)."""
        return len(self.input_shape) == 1

    def predict(self, inputs: np.ndarray) -> dict[str, np.ndarray]:
        """Features of log-mel patches, or of waveforms when :attr:`on_waveforms`.

        Parameters
        ----------
        inputs : np.ndarray [shape=(patches, 187, 96) or (segments, waveform_samples)]
            Patches as :func:`log_mel` returns them, or 16 kHz audio.

        Returns
        -------
        features : dict[str, np.ndarray]
            ``embedding`` ``(patches, 200)``, ``pool`` ``(patches, 1506)``,
            ``tags`` ``(patches, 50)``, all float32; a VGG model's embedding is
            ``(patches, 256)`` and its pool ``(patches, 1280)``
            (:data:`genre.musicnn_spec.COLUMN_DIMS`).
        """
        x = np.asarray(inputs, dtype=np.float32)
        if x.ndim != 1 + len(self.input_shape) or x.shape[1:] != self.input_shape:
            shape = ", ".join(str(d) for d in self.input_shape)
            raise ParameterError(f"inputs of shape {x.shape} are not (n, {shape})")
        if not np.isfinite(x).all():
            raise ParameterError("inputs contain non-finite values")
        dims = COLUMN_DIMS[self.name]
        sizes = {"embedding": dims[""], "pool": dims["_pool"], "tags": dims["_tags"]}
        out = {key: np.empty((len(x), size), dtype=np.float32) for key, size in sizes.items()}
        batch = np.zeros((self.batch_size, *self.input_shape), dtype=np.float32)
        for lo in range(0, len(x), self.batch_size):
            n = min(self.batch_size, len(x) - lo)
            batch[:n] = x[lo : lo + n]
            batch[n:] = 0.0
            result = self.model.predict_on_batch(batch)
            for key in out:
                out[key][lo : lo + n] = result[key][:n]
        return out

    def __call__(self, audio: np.ndarray) -> dict[str, np.ndarray]:
        """Features of 3 s segments of 16 kHz audio.

        Parameters
        ----------
        audio : np.ndarray [shape=(segments, samples)]
            Mono float audio at :data:`SAMPLE_RATE`, ``samples`` ≥ 47 616 (one
            patch from the start of each segment; :data:`PATCH_SAMPLES` is 3 s), or
            exactly ``waveform_samples`` when :attr:`on_waveforms`.

        Returns
        -------
        features : dict[str, np.ndarray]
            See :meth:`predict`.
        """
        return self.predict(audio if self.on_waveforms else log_mel(audio))
