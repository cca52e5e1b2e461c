"""genre.pretrained: musicnn and the wheel's VGG taggers in Keras 3 against the original TF1
graph, and musicnn's front end against librosa."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from genre import pretrained, pretrained_vgg
from genre.errors import ParameterError
from genre.musicnn_spec import (
    INSTALL_COMMAND,
    N_PARAMS,
    PATCH_FRAMES,
    PATCH_SAMPLES,
    SAMPLE_RATE,
    VGG_N_PARAMS,
)
from genre.pretrained import MODELS, TAGS, MusicnnExtractor, log_mel

REFERENCE = Path(__file__).parent / "data" / "musicnn_reference.npz"
# `make test` installs the weights, so CI (CI=true) fails rather than skips without them.
needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("musicnn") is None and not os.environ.get("CI"),
    reason=f"musicnn weights not installed: {INSTALL_COMMAND}",
)


def _segments(rng: np.random.Generator, n: int, *, amp: float = 0.3) -> np.ndarray:
    """``n`` distinct 3 s segments at 16 kHz: a random tone plus noise each."""
    t = np.arange(PATCH_SAMPLES) / SAMPLE_RATE
    freqs = rng.uniform(80.0, 2000.0, size=(n, 1))
    y = np.sin(2 * np.pi * freqs * t) + rng.uniform(0.0, 0.5, size=(n, 1)) * rng.standard_normal(
        (n, len(t))
    )
    return (amp * y / np.abs(y).max(axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as ref:
        return {key: ref[key] for key in ref.files}


@pytest.fixture(scope="module")
def extractors():
    """All four models, loaded once; batch size 4 so that the tests cross batch boundaries."""
    return {name: MusicnnExtractor(name, batch_size=4) for name in MODELS}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_vocabulary_has_fifty_distinct_tags(model):
    assert len(TAGS[model]) == len(set(TAGS[model])) == 50


def test_architecture_has_792079_weights():
    assert pretrained.build_musicnn().count_params() == N_PARAMS == 792_079


def test_vgg_architecture_has_607030_weights():
    # 4 (input norm) + 1 280 + 4 × 147 584 (3 × 3 convolutions) + 5 × 512 (norms) + 12 850
    assert pretrained_vgg.build_vgg().count_params() == VGG_N_PARAMS == 607_030


def test_vgg_vocabularies_are_musicnns():
    assert TAGS["vgg_msd"] == TAGS["musicnn_msd"] and TAGS["vgg_mtt"] == TAGS["musicnn_mtt"]


@pytest.mark.parametrize("size", [(7, 38), (7, 67), (128, 1), (32, 1)])
def test_frontend_block_equals_conv_relu_norm_then_max_over_mel(size, rng):
    import keras

    block = pretrained._frontend_block(size, 8, name="block")
    x = rng.standard_normal((2, 40, 96)).astype(np.float32)
    block.build(x.shape)
    kernel = rng.standard_normal(block.kernel.shape).astype(np.float32) / 10
    bias, beta, mean = (rng.standard_normal(8).astype(np.float32) for _ in range(3))
    gamma = np.array(
        [1.5, -0.7, 0.2, -2.0, 0.0, 1.0, -0.1, 0.9], np.float32
    )  # negative scales take the minimum
    variance = rng.uniform(0.5, 2.0, 8).astype(np.float32)
    for variable, value in zip(
        block.weights, (kernel, bias, gamma, beta, mean, variance), strict=True
    ):
        variable.assign(value)
    # musicnn's order: convolution (timbral: time padded by 3, mel "valid"; temporal:
    # "same") → ReLU → norm → max.
    if size[1] > 1:
        z = keras.ops.conv(np.pad(x, ((0, 0), (3, 3), (0, 0)))[..., None], kernel, padding="valid")
    else:
        z = keras.ops.conv(x[..., None], kernel, padding="same")
    normed = (np.maximum(keras.ops.convert_to_numpy(z) + bias, 0) - mean) / np.sqrt(
        variance + 1e-3
    ) * gamma + beta
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(block(x)), normed.max(axis=2), rtol=1e-5, atol=1e-5
    )


@needs_weights
@pytest.mark.parametrize("model", sorted(MODELS))
def test_outputs_match_the_original_tf1_graph(model, extractors, reference):
    out = extractors[model].predict(reference["log_mel"])
    np.testing.assert_allclose(out["tags"], reference[f"{model}_tags"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(out["embedding"], reference[f"{model}_embedding"], rtol=0, atol=1e-5)
    # Pool values reach ~115 (musicnn) and ~170 (the VGG's pool1 and pool2 maxima); they
    # are sums of ~4 000 (the 7 × 561 mid-end kernel) or 1 152 (3 × 3 × 128) float32
    # products taken in another order: 1.4e-4 and 7.6e-5 measured.
    np.testing.assert_allclose(out["pool"], reference[f"{model}_pool"], rtol=0, atol=5e-4)


@pytest.mark.parametrize("amp", [1e-3, 0.3, 1.0])
def test_log_mel_matches_librosa_melspectrogram(rng, amp):
    import librosa

    y = _segments(rng, 2, amp=amp)
    ours = log_mel(y)
    for i in range(len(y)):
        # musicnn used librosa 0.7, whose centred STFT pads by reflection (≥ 0.10: zeros).
        power = librosa.feature.melspectrogram(
            y=y[i], sr=16000, n_fft=512, hop_length=256, n_mels=96, pad_mode="reflect"
        ).T[:PATCH_FRAMES]
        expected = np.log10(np.float32(10000.0) * power + np.float32(1.0))
        assert expected.dtype == np.float32
        # log10 units over a range of ~0–7: 7.6e-6 measured.
        np.testing.assert_allclose(ours[i], expected, rtol=1e-5, atol=2e-5)


def test_log_mel_of_loud_audio_is_finite_where_float16_overflows(rng):
    y = np.clip(4.0 * _segments(rng, 1, amp=1.0), -1.0, 1.0)
    out = log_mel(y)
    assert out.dtype == np.float32 and out.shape == (1, PATCH_FRAMES, 96)
    assert np.isfinite(out).all()
    # musicnn's own front end: float16 before the log, 10000 · S overflows above S ≈ 6.6.
    mel16 = (10.0 ** out[0] - 1.0) / 10000.0
    with np.errstate(over="ignore"):
        assert np.isinf(np.log10(10000 * mel16.astype(np.float16) + 1)).any()


@pytest.mark.parametrize(
    "audio",
    [
        np.zeros((2, 40000), np.float32),
        np.zeros(48000, np.float32),
        np.zeros((2, 48000), np.int16),
        np.full((1, 48000), np.nan, np.float32),
    ],
    ids=["too-short", "1-d", "int16", "nan"],
)
def test_log_mel_rejects_malformed_audio(audio):
    with pytest.raises(ParameterError):
        log_mel(audio)


@needs_weights
@pytest.mark.parametrize(
    "model, embedding, pool",
    [
        ("musicnn_msd", 200, 1506),
        ("musicnn_mtt", 200, 1506),
        ("vgg_msd", 256, 1280),
        ("vgg_mtt", 256, 1280),
    ],
)
def test_extractor_gives_float32_finite_features(model, embedding, pool, extractors, rng):
    out = extractors[model](_segments(rng, 5))
    assert {key: value.shape for key, value in out.items()} == {
        "embedding": (5, embedding),
        "pool": (5, pool),
        "tags": (5, 50),
    }
    for value in out.values():
        assert value.dtype == np.float32 and np.isfinite(value).all()
    assert ((out["tags"] >= 0) & (out["tags"] <= 1)).all()


@needs_weights
@pytest.mark.parametrize("model", ["musicnn_msd", "vgg_msd"])
def test_padded_last_batch_equals_unpadded(model, extractors, rng):
    extractor = extractors[model]
    y = _segments(rng, 6)  # one full batch of 4, then 2 padded with 2 zero patches
    together = extractor(y)
    for i in range(len(y)):
        alone = extractor(y[i : i + 1])
        for key, value in together.items():
            np.testing.assert_allclose(value[i], alone[key][0], rtol=0, atol=1e-6)


@needs_weights
@pytest.mark.parametrize("model", sorted(MODELS))
def test_different_inputs_give_different_outputs(model, extractors, rng):
    loud = np.clip(4.0 * _segments(rng, 3, amp=1.0), -1.0, 1.0)
    out = extractors[model](np.concatenate([_segments(rng, 3), loud]))
    for key, value in out.items():
        spread = np.abs(value[:, None] - value[None, :]).max(
            axis=-1
        )  # (6, 6): pairwise max difference
        assert spread[~np.eye(6, dtype=bool)].min() > 1e-3, key


@pytest.mark.parametrize("model", ["musicnn_mtt", "vgg_mtt"])
def test_missing_weights_name_the_install_command(model, tmp_path):
    with pytest.raises(ParameterError, match="requirements-musicnn.txt") as err:
        MusicnnExtractor(model, package_dir=tmp_path)
    assert INSTALL_COMMAND in str(err.value) and "\n" not in str(err.value)


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(ParameterError, match="requirements-musicnn.txt"):
        pretrained.weights_folder("musicnn_msd")


def test_unknown_model_is_a_parameter_error():
    with pytest.raises(ParameterError, match="MSD_musicnn"):
        pretrained.weights_folder("MSD_musicnn")


def test_import_loads_neither_tensorflow_nor_keras():
    code = (
        "import sys, genre.pretrained; "
        "print(sorted({'tensorflow', 'keras', 'musicnn'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
