"""Contract tests over every model in the zoo (genre.models)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from genre.backend import configure
from genre.errors import GenreError, ParameterError
from genre.models import (
    HEAD_KINDS,
    MODEL_KINDS,
    SEED_KINDS,
    ModelConfig,
    build_model,
    count_params,
)

from .conftest import REPO

#: mfcc; mfcc + chroma; mel (frames, bins) at the default feature settings.
SHAPES = [(130, 13), (130, 12 + 13), (130, 128)]

#: The heads' vectors: musicnn pool; embedding; pools of both musicnn models.
VECTOR_SHAPES = [(1506,), (200,), (1506 + 1506,)]


def shapes_for(kind: str) -> list[tuple[int, ...]]:
    """The input shapes a kind takes: vectors for the heads, (frames, bins) for the rest."""
    return VECTOR_SHAPES if kind in HEAD_KINDS else SHAPES


#: Every kind with every input shape it takes.
CASES = [(kind, shape) for kind in MODEL_KINDS for shape in shapes_for(kind)]

#: "Modest" at width 64 on 130×128 log-mel: trains on a couple of CPU cores.
PARAM_BUDGET = 1_000_000

N_CLASSES = 10


@pytest.fixture(scope="module")
def keras():
    configure()
    import keras

    return keras


@pytest.mark.parametrize(
    "kind, input_shape", CASES, ids=[f"{k}-{'x'.join(map(str, s))}" for k, s in CASES]
)
def test_model_outputs_probabilities(keras, kind, input_shape, rng):
    model = build_model(
        ModelConfig(kind=kind, width=8), input_shape=input_shape, n_classes=N_CLASSES
    )
    x = rng.standard_normal((3, *input_shape)).astype(np.float32)

    probs = np.asarray(model(x, training=False))

    assert model.name == kind
    assert model.input_shape == (None, *input_shape)
    assert probs.shape == (3, N_CLASSES)
    assert probs.dtype == np.float32
    assert np.isfinite(probs).all()
    assert (probs >= 0).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("kind", [k for k in MODEL_KINDS if k != "mlp"])
def test_model_fits_parameter_budget_on_mel(keras, kind):
    shape = (1506 + 1506,) if kind in HEAD_KINDS else (130, 128)
    assert (
        count_params(ModelConfig(kind=kind), input_shape=shape, n_classes=N_CLASSES) < PARAM_BUDGET
    )


def test_mlp_has_seed_size_on_mfcc(keras):
    # Flatten → dense 512/256/64 → 10 (+ batch-norm scales and statistics): the seed's MLP.
    dense = (130 * 13 * 512 + 512 * 256 + 256 * 64) + (64 * 10 + 10)
    batch_norm = 4 * (512 + 256 + 64)
    assert (
        count_params(ModelConfig(kind="mlp"), input_shape=(130, 13), n_classes=N_CLASSES)
        == dense + batch_norm
    )


def test_width_scales_model_size(keras):
    small, large = (
        count_params(
            ModelConfig(kind="short_chunk_cnn", width=w),
            input_shape=(130, 128),
            n_classes=N_CLASSES,
        )
        for w in (16, 64)
    )
    assert small < large


@pytest.mark.parametrize("kind", ["short_chunk_cnn", "gru"])
def test_training_reduces_loss_on_separable_toy(keras, kind, rng):
    keras.utils.set_random_seed(0)
    # Class 1 is class 0 plus a constant offset in the lower half of the bins.
    x = rng.standard_normal((64, 32, 16)).astype(np.float32)
    y = np.arange(64) % 2
    x[y == 1, :, :8] += 1.5
    model = build_model(
        ModelConfig(kind=kind, width=8, dropout=0.0, learning_rate=1e-2),
        input_shape=(32, 16),
        n_classes=2,
    )

    history = model.fit(x, y, batch_size=16, epochs=4, verbose=0)

    losses = history.history["loss"]
    assert losses[-1] < losses[0]


def test_options_change_the_model(keras):
    plain = build_model(
        ModelConfig(kind="cnn", width=8, batch_norm=False, l2=0.0),
        input_shape=(130, 13),
        n_classes=N_CLASSES,
    )
    full = build_model(ModelConfig(kind="cnn", width=8), input_shape=(130, 13), n_classes=N_CLASSES)

    def layer_types(model):
        return {type(layer).__name__ for layer in model.layers}

    assert "BatchNormalization" not in layer_types(plain)
    assert "BatchNormalization" in layer_types(full)
    assert not plain.losses
    assert full.losses  # one L2 penalty per regularised kernel


# An untrained model's optimizer has no slots yet; Keras warns that it skips them.
@pytest.mark.filterwarnings("ignore:Skipping variable loading for optimizer")
@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_saved_model_reloads_without_custom_objects(keras, kind, tmp_path, rng):
    shape = shapes_for(kind)[0]
    model = build_model(ModelConfig(kind=kind, width=8), input_shape=shape, n_classes=N_CLASSES)
    x = rng.standard_normal((2, *shape)).astype(np.float32)
    model.save(tmp_path / "model.keras")

    loaded = keras.saving.load_model(tmp_path / "model.keras")

    np.testing.assert_allclose(
        np.asarray(loaded(x, training=False)),
        np.asarray(model(x, training=False)),
        rtol=1e-5,
        atol=1e-6,
    )


def test_model_is_compiled_with_config_learning_rate(keras):
    model = build_model(
        ModelConfig(kind="gru", width=8, learning_rate=3e-4),
        input_shape=(130, 13),
        n_classes=N_CLASSES,
    )
    assert type(model.optimizer).__name__ == "Adam"
    assert float(model.optimizer.learning_rate) == pytest.approx(3e-4)


@pytest.mark.parametrize("kind", ["short_chunk_cnn", "crnn"])
def test_output_stays_float32_under_mixed_precision(keras, kind, rng):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(
            ModelConfig(kind=kind, width=8), input_shape=(130, 13), n_classes=N_CLASSES
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.layers[-1].dtype_policy.compute_dtype == "float32"
    assert model.layers[1].dtype_policy.compute_dtype == "float16"
    assert model.output.dtype == "float32"


def test_config_round_trips_through_dict():
    cfg = ModelConfig(
        kind="crnn", width=16, dropout=0.1, l2=0.0, batch_norm=False, learning_rate=3e-4
    )
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    "kwargs",
    [
        {"kind": "transformer"},
        {"kind": "cnn", "dropout": 1.0},
        {"kind": "cnn", "dropout": -0.1},
        {"kind": "cnn", "width": 0},
        {"kind": "cnn", "width": 32.0},
        {"kind": "cnn", "l2": -1e-4},
        {"kind": "cnn", "learning_rate": 0.0},
        {"kind": "cnn", "batch_norm": "yes"},
        {"kind": "mlp_head", "depth": 3},
        {"kind": "mlp_head", "depth": 0},
    ],
    ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()),
)
def test_bad_config_raises_parameter_error(kwargs):
    with pytest.raises(ParameterError):
        ModelConfig(**kwargs)


def test_unknown_kind_message_names_the_kinds():
    with pytest.raises(ParameterError, match="short_chunk_cnn"):
        ModelConfig(kind="resnet")


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ParameterError, match="batch_size"):
        ModelConfig.from_dict({"kind": "cnn", "batch_size": 32})


@pytest.mark.parametrize(
    "input_shape, n_classes",
    [((130,), 10), ((130, 13, 1), 10), ((0, 13), 10), ((130, 13), 1)],
)
def test_bad_shapes_raise_parameter_error(input_shape, n_classes):
    with pytest.raises(ParameterError):
        build_model(ModelConfig(kind="mlp", width=8), input_shape=input_shape, n_classes=n_classes)


def test_seed_kinds_are_model_kinds():
    assert set(SEED_KINDS) < set(MODEL_KINDS)
    assert set(HEAD_KINDS) < set(MODEL_KINDS)
    assert len(set(MODEL_KINDS)) == len(MODEL_KINDS)


def test_linear_is_softmax_regression(keras):
    model = build_model(ModelConfig(kind="linear"), input_shape=(1506,), n_classes=N_CLASSES)
    assert model.count_params() == 1506 * N_CLASSES + N_CLASSES
    assert model.losses  # its L2 penalty


@pytest.mark.parametrize("depth", [1, 2])
def test_mlp_head_has_depth_hidden_layers(keras, depth):
    model = build_model(
        ModelConfig(kind="mlp_head", width=16, depth=depth), input_shape=(200,), n_classes=4
    )
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    assert len(dense) == depth + 1  # hidden layers, then the softmax output
    assert "Dropout" in {type(layer).__name__ for layer in model.layers}


@pytest.mark.parametrize("kind", HEAD_KINDS)
def test_head_refuses_frames_by_bins(kind):
    with pytest.raises(ParameterError, match=r"\(dims,\)"):
        build_model(ModelConfig(kind=kind), input_shape=(130, 13), n_classes=N_CLASSES)


def test_time_model_refuses_a_vector():
    with pytest.raises(ParameterError, match=r"\(frames, bins\)"):
        build_model(ModelConfig(kind="cnn"), input_shape=(1506,), n_classes=N_CLASSES)


def test_configure_can_run_twice(keras):
    configure()
    configure()


def test_mixed_precision_is_ignored_without_gpu(keras):
    import tensorflow as tf

    if tf.config.get_visible_devices("GPU"):
        pytest.skip("a GPU is visible")
    configure(mixed_precision=True)
    assert keras.mixed_precision.global_policy().name == "float32"


def test_requiring_a_missing_gpu_raises(keras):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is present")
    with pytest.raises(GenreError, match="no GPU"):
        configure(gpus=True)


def test_import_does_not_load_tensorflow():
    code = (
        "import genre.models, sys; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
