"""The GPU path on a real GPU; skipped on machines without one (like CI)."""

import numpy as np
import pytest


def _gpus():
    from genre.backend import configure

    configure()
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.fixture(scope="module")
def gpus():
    found = _gpus()
    if not found:
        pytest.skip("TensorFlow sees no GPU")
    return found


def test_memory_growth_is_on_for_every_gpu(gpus):
    import tensorflow as tf

    assert all(tf.config.experimental.get_memory_growth(g) for g in gpus)


def test_a_model_runs_on_the_gpu(gpus):
    import tensorflow as tf

    from genre.models import ModelConfig, build_model

    model = build_model(
        ModelConfig(kind="short_chunk_cnn", width=16), input_shape=(130, 128), n_classes=10
    )
    with tf.device("/GPU:0"):
        probs = model(np.zeros((4, 130, 128), np.float32), training=False)
    assert "GPU" in probs.device and probs.shape == (4, 10)
