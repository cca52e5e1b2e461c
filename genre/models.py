"""The model zoo: one Keras builder per model kind, all from one typed config.

Every model but the heads takes one segment's features as a ``(frames, bins)``
matrix, time first: one feature (``mfcc`` 130×13, ``chroma`` 130×12, ``mel`` 130×128
by default) or several concatenated along the bins axis (they share the frames). The
heads (:data:`HEAD_KINDS`) take a vector ``(dims,)``: pretrained features, one or more
concatenated (``musicnn_msd_pool`` 1 506, ``musicnn_msd`` 200, ``musicnn_msd_tags`` 50).
Every model outputs softmax probabilities over the genres. The caller standardises the
input with statistics fitted on the training split; no layer here needs ``adapt()``.

The seed models reproduce the seed projects (GTZAN, 130×13 MFCC) as baselines:
``mlp``, ``cnn``, ``lstm``, ``gru``, ``cnn_lstm`` and ``cnn_gru``.

Two stronger models are meant for log-mel input. ``short_chunk_cnn`` follows Won et
al. (2020), "Evaluation of CNN-based automatic music tagging models" (SMC 2020,
https://arxiv.org/abs/2006.00751): on short chunks of a few seconds, a plain VGG-like
stack of 3×3 convolutions with batch norm and 2×2 max pooling, channels doubling
with depth, then global max pooling over time, matched or beat every front end with
larger or musically shaped filters. Small receptive fields over time-frequency patches
learn local timbre and onset patterns that hold across keys and tempos, and max pooling
keeps the strongest evidence wherever it occurs in the chunk. ``crnn`` follows Choi et
al. (2017), "Convolutional recurrent neural networks for music classification"
(ICASSP 2017, https://arxiv.org/abs/1609.04243): convolutions that pool mostly along
frequency, then GRUs over the remaining time steps, so the model can also use the
order of events (rhythm, phrasing) that a global pool discards.

The heads sit on frozen pretrained features (:mod:`genre.embeddings`): ``linear`` is
softmax regression with an L2 penalty, ``mlp_head`` one or two dense layers
(``ModelConfig.depth``) with dropout. On features that already summarise timbre,
rhythm and style, a small head learns genres from a few hundred segments, where the
log-mel networks need far more.

Sizes scale with ``ModelConfig.width``; at the default ``width=64`` every model except
the seed ``mlp`` (a flatten-then-dense baseline whose first layer grows with
frames × bins) stays under about a million weights on 130×128 input, small enough
to train on a couple of CPU cores.

Importing this module does not import TensorFlow: builders import Keras inside, so
``ModelConfig`` can travel in configs and Ray task arguments at no cost.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genre.config import HEAD_KINDS, MODEL_KINDS, SEED_KINDS
from genre.errors import ParameterError

__all__ = [
    "MODEL_KINDS",
    "SEED_KINDS",
    "HEAD_KINDS",
    "ModelConfig",
    "build_model",
    "compile_model",
    "count_params",
]


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and optimiser settings of one model.

    Parameters
    ----------
    kind : str
        One of :data:`MODEL_KINDS`.
    width : int
        Base unit/channel count; each kind scales its layers from it. 64 reproduces
        the seed projects' sizes (dense 512/256/64, 64-unit RNNs, 32-channel convs).
    dropout : float
        Dropout rate in ``[0, 1)`` before the dense layers and between RNN layers.
    l2 : float
        L2 penalty (≥ 0) on every convolution, dense and recurrent kernel; 0 turns it off.
    batch_norm : bool
        Batch normalisation after each convolution and hidden dense layer.
    learning_rate : float
        Adam learning rate (> 0).
    depth : int
        Hidden dense layers of ``mlp_head`` (1 or 2); the other kinds ignore it.

    Raises
    ------
    ParameterError
        If any value is out of range or ``kind`` is unknown.
    """

    kind: str
    width: int = 64
    dropout: float = 0.3
    l2: float = 1e-4
    batch_norm: bool = True
    learning_rate: float = 1e-3
    depth: int = 1

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ParameterError(
                f"model kind {self.kind!r} is unknown; choose from {', '.join(MODEL_KINDS)}"
            )
        if not isinstance(self.width, int) or isinstance(self.width, bool) or self.width < 4:
            raise ParameterError(f"width={self.width!r} must be an integer ≥ 4")
        if not _is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            raise ParameterError(f"dropout={self.dropout!r} must be in [0, 1)")
        if not _is_number(self.l2) or not 0.0 <= self.l2 < math.inf:
            raise ParameterError(f"l2={self.l2!r} must be a finite number ≥ 0")
        if not isinstance(self.batch_norm, bool):
            raise ParameterError(f"batch_norm={self.batch_norm!r} must be True or False")
        if not _is_number(self.learning_rate) or not 0.0 < self.learning_rate < math.inf:
            raise ParameterError(
                f"learning_rate={self.learning_rate!r} must be a finite number > 0"
            )
        if self.depth not in (1, 2) or isinstance(self.depth, bool):
            raise ParameterError(f"depth={self.depth!r} must be 1 or 2")

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dict of the settings."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        ParameterError
            If ``d`` has keys that are not settings, or values out of range.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ParameterError(f"unknown model-config keys: {', '.join(extra)}")
        return cls(**d)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _regulariser(cfg: ModelConfig):
    import keras

    return keras.regularizers.L2(cfg.l2) if cfg.l2 > 0 else None


def _batch_norm():
    import keras

    # Keras' default momentum 0.99 needs hundreds of steps before the moving
    # statistics match the data; a small corpus gives ~20 steps an epoch, and
    # validation (which uses the moving statistics) would stay at chance for the
    # first epochs, long enough for early stopping and ASHA to kill the trial.
    return keras.layers.BatchNormalization(momentum=0.9)


def _units(cfg: ModelConfig, factor: float) -> int:
    """``factor × width``, at least 4."""
    return max(4, int(round(cfg.width * factor)))


def _conv_bn_relu(x, cfg: ModelConfig, conv, *, filters: int):
    """Convolution (size 3, "same") → batch norm → ReLU; ``conv`` is Conv1D or Conv2D."""
    # No bias before batch norm: its shift makes the bias redundant.
    x = conv(
        filters,
        3,
        padding="same",
        use_bias=not cfg.batch_norm,
        kernel_regularizer=_regulariser(cfg),
    )(x)
    if cfg.batch_norm:
        x = _batch_norm()(x)
    import keras

    return keras.layers.Activation("relu")(x)


def _conv2d_block(
    x,
    cfg: ModelConfig,
    *,
    filters: int,
    pool: tuple[int, int],
    strides: tuple[int, int] | None = None,
):
    """3×3 Conv2D → batch norm → ReLU → max pool on ``(batch, time, freq, channels)``."""
    import keras

    x = _conv_bn_relu(x, cfg, keras.layers.Conv2D, filters=filters)
    return keras.layers.MaxPooling2D(pool, strides=strides, padding="same")(x)


def _conv1d_block(x, cfg: ModelConfig, *, filters: int):
    """Conv1D (size 3) over time → batch norm → ReLU → max pool 2 on ``(batch, time, channels)``."""
    import keras

    x = _conv_bn_relu(x, cfg, keras.layers.Conv1D, filters=filters)
    return keras.layers.MaxPooling1D(2, padding="same")(x)


def _dense_block(x, cfg: ModelConfig, *, units: int):
    """Dense → batch norm → ReLU → dropout."""
    import keras

    x = keras.layers.Dense(
        units, use_bias=not cfg.batch_norm, kernel_regularizer=_regulariser(cfg)
    )(x)
    if cfg.batch_norm:
        x = _batch_norm()(x)
    x = keras.layers.Activation("relu")(x)
    return keras.layers.Dropout(cfg.dropout)(x)


def _output(x, n_classes: int):
    import keras

    # float32 even under mixed precision: a float16 softmax can round to 0 and 1.
    return keras.layers.Dense(
        n_classes, activation="softmax", dtype="float32", name="probabilities"
    )(x)


def _rnn_layer(cell: str, cfg: ModelConfig, *, return_sequences: bool):
    import keras

    layer = keras.layers.LSTM if cell == "lstm" else keras.layers.GRU
    # Dropout goes between layers, not recurrent_dropout, which rules out cuDNN kernels.
    return layer(
        _units(cfg, 1), return_sequences=return_sequences, kernel_regularizer=_regulariser(cfg)
    )


def _image(x):
    """``(batch, time, freq)`` → ``(batch, time, freq, 1)``."""
    import keras

    return keras.layers.Reshape((*x.shape[1:], 1))(x)


def _mlp(x, cfg: ModelConfig, n_classes: int):
    import keras

    x = keras.layers.Flatten()(x)
    for factor in (8, 4, 1):  # 512, 256, 64 at width 64, as in the seed
        x = _dense_block(x, cfg, units=_units(cfg, factor))
    return _output(x, n_classes)


def _cnn(x, cfg: ModelConfig, n_classes: int):
    import keras

    x = _image(x)
    for _ in range(3):
        x = _conv2d_block(x, cfg, filters=_units(cfg, 0.5), pool=(3, 3), strides=(2, 2))
    x = keras.layers.Flatten()(x)
    x = _dense_block(x, cfg, units=_units(cfg, 1))
    return _output(x, n_classes)


def _rnn(x, cfg: ModelConfig, n_classes: int, *, cell: str):
    import keras

    x = _rnn_layer(cell, cfg, return_sequences=True)(x)
    x = keras.layers.Dropout(cfg.dropout)(x)
    x = _rnn_layer(cell, cfg, return_sequences=False)(x)
    x = _dense_block(x, cfg, units=_units(cfg, 1))
    return _output(x, n_classes)


def _cnn_rnn(x, cfg: ModelConfig, n_classes: int, *, cell: str):
    import keras

    # Bins are channels: local patterns over 3 frames, time pooled 130 → 33.
    for factor in (0.5, 1):
        x = _conv1d_block(x, cfg, filters=_units(cfg, factor))
    x = keras.layers.Dropout(cfg.dropout)(x)
    x = _rnn_layer(cell, cfg, return_sequences=False)(x)
    x = _dense_block(x, cfg, units=_units(cfg, 1))
    return _output(x, n_classes)


def _short_chunk_cnn(x, cfg: ModelConfig, n_classes: int):
    import keras

    x = _image(x)
    # Won et al.'s 7 blocks with channels c, c, 2c, 2c, 2c, 2c, 4c (c = width / 2 here,
    # 128 there) take 130×128 down to 2×1 and 130×13 to 2×1.
    for factor in (0.5, 0.5, 1, 1, 1, 1, 2):
        x = _conv2d_block(x, cfg, filters=_units(cfg, factor), pool=(2, 2))
    # The strongest evidence anywhere in the chunk (what is left of time and frequency).
    x = keras.layers.GlobalMaxPooling2D()(x)
    x = _dense_block(x, cfg, units=_units(cfg, 2))
    return _output(x, n_classes)


def _crnn(x, cfg: ModelConfig, n_classes: int):
    import keras

    x = _image(x)
    # (time, freq) pools: frequency 128 → 1, time 130 → 17 steps left for the GRUs.
    pools = ((2, 2), (2, 4), (2, 4), (1, 4))
    for factor, pool in zip((0.5, 0.5, 1, 1), pools, strict=True):
        x = _conv2d_block(x, cfg, filters=_units(cfg, factor), pool=pool)
    steps, freq, channels = x.shape[1:]
    x = keras.layers.Reshape((steps, freq * channels))(x)
    x = _rnn_layer("gru", cfg, return_sequences=True)(x)
    x = keras.layers.Dropout(cfg.dropout)(x)
    x = _rnn_layer("gru", cfg, return_sequences=False)(x)
    x = keras.layers.Dropout(cfg.dropout)(x)
    return _output(x, n_classes)


def _linear(x, cfg: ModelConfig, n_classes: int):
    import keras

    # Softmax regression: the output layer alone, its weights held back by the L2 penalty.
    return keras.layers.Dense(
        n_classes,
        activation="softmax",
        kernel_regularizer=keras.regularizers.L2(cfg.l2) if cfg.l2 > 0 else None,
        dtype="float32",
        name="probabilities",
    )(x)


def _mlp_head(x, cfg: ModelConfig, n_classes: int):
    import keras

    # Dropout on the input too: 1 506 pooled features and a few hundred training segments.
    x = keras.layers.Dropout(cfg.dropout)(x)
    for factor in (4, 2)[: cfg.depth]:  # 128 (then 64) units at width 32
        x = _dense_block(x, cfg, units=_units(cfg, factor))
    return _output(x, n_classes)


def _build(kind: str):
    return {
        "mlp": _mlp,
        "cnn": _cnn,
        "lstm": lambda x, cfg, n: _rnn(x, cfg, n, cell="lstm"),
        "gru": lambda x, cfg, n: _rnn(x, cfg, n, cell="gru"),
        "cnn_lstm": lambda x, cfg, n: _cnn_rnn(x, cfg, n, cell="lstm"),
        "cnn_gru": lambda x, cfg, n: _cnn_rnn(x, cfg, n, cell="gru"),
        "crnn": _crnn,
        "short_chunk_cnn": _short_chunk_cnn,
        "linear": _linear,
        "mlp_head": _mlp_head,
    }[kind]


def _check_shapes(kind: str, input_shape: Any, n_classes: Any) -> tuple[tuple[int, ...], int]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    if kind in HEAD_KINDS:
        rank, form = 1, "(dims,), one positive integer"
    else:
        rank, form = 2, "(frames, bins), two positive integers"
    if len(shape) != rank or not all(
        isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape
    ):
        raise ParameterError(f"input_shape={input_shape!r}: model kind {kind} takes {form}")
    if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 2:
        raise ParameterError(f"n_classes={n_classes!r} must be an integer ≥ 2")
    return shape, n_classes


def compile_model(model, config: ModelConfig, *, outlier_exposure: bool = False):
    """Compile ``model`` for training: Adam(``config.learning_rate``), sparse categorical
    cross-entropy, accuracy. The one place a genre network is compiled.

    ``outlier_exposure``: train on soft targets instead (Hendrycks, Mazeika & Dietterich,
    "Deep Anomaly Detection with Outlier Exposure", ICLR 2019, https://arxiv.org/abs/1812.04606):
    categorical cross-entropy against ``(batch, classes)`` rows, one-hot for a genre's segment
    and uniform for an out-of-taxonomy one, whose sample weight λ makes its term
    λ · CE(uniform, p) (:func:`genre.training.train_epoch` builds them). ``accuracy`` then
    counts the one-hot rows only. Its metric is not a Keras built-in: save such a network's
    weights, or compile it plainly before saving it whole.
    """
    import keras

    optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
    if not outlier_exposure:
        model.compile(
            optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        return model
    model.compile(
        optimizer=optimizer, loss="categorical_crossentropy", metrics=[_labelled_accuracy()]
    )
    return model


def _labelled_accuracy():
    """Accuracy over the rows whose target is one-hot; uniform rows (outliers) left out."""
    import keras
    from keras import ops

    class LabelledAccuracy(keras.metrics.Mean):
        def update_state(self, y_true, y_pred, sample_weight=None):
            # One-hot rows are the only ones whose largest target exceeds their smallest.
            labelled = ops.cast(ops.max(y_true, axis=-1) > ops.min(y_true, axis=-1), "float32")
            right = ops.cast(
                ops.equal(ops.argmax(y_true, axis=-1), ops.argmax(y_pred, axis=-1)), "float32"
            )
            return super().update_state(right, sample_weight=labelled)

    return LabelledAccuracy(name="accuracy")


def build_model(
    config: ModelConfig, *, input_shape: tuple[int, ...], n_classes: int, compile: bool = True
):
    """Build (and by default compile) the model ``config.kind`` for one segment's features.

    Parameters
    ----------
    config : ModelConfig
        Architecture and optimiser settings.
    input_shape : tuple of int
        ``(frames, bins)`` of one segment: one feature, or several concatenated
        along the bins axis, standardised by the caller; ``(dims,)`` for a head.
    n_classes : int
        Number of genres (≥ 2).
    compile : bool
        Compile with :func:`compile_model` (``False`` when the model becomes part of a
        larger network that is compiled instead).

    Returns
    -------
    keras.Model
        Named ``config.kind``; input ``(batch, *input_shape)`` float32, output
        ``(batch, n_classes)`` float32 softmax probabilities. Compiled with
        Adam(``config.learning_rate``), sparse categorical cross-entropy and accuracy.

    Raises
    ------
    ParameterError
        If ``input_shape`` is not two positive integers (one for a head) or
        ``n_classes < 2``.
    """
    if not isinstance(config, ModelConfig):
        raise ParameterError(f"config={config!r} must be a ModelConfig")
    shape, n_classes = _check_shapes(config.kind, input_shape, n_classes)
    import keras

    inputs = keras.Input(shape=shape, name="features")
    outputs = _build(config.kind)(inputs, config, n_classes)
    model = keras.Model(inputs, outputs, name=config.kind)
    return compile_model(model, config) if compile else model


def count_params(config: ModelConfig, *, input_shape: tuple[int, ...], n_classes: int) -> int:
    """Number of weights (trainable or not) of the model ``config`` builds.

    Parameters
    ----------
    config : ModelConfig
        Architecture settings.
    input_shape : tuple of int
        ``(frames, bins)`` of one segment, or ``(dims,)`` for a head.
    n_classes : int
        Number of genres (≥ 2).

    Returns
    -------
    int
        Weights of the built model, batch-norm statistics included.
    """
    return int(build_model(config, input_shape=input_shape, n_classes=n_classes).count_params())
