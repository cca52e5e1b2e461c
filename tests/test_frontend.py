"""genre.frontend: the log-mel front ends as Keras layers against their numpy twins, in float32.

Stated tolerances (max abs difference over every frame and band of noise, a tone, silence
and loud noise; float32 DFT as a matrix product vs scipy's float32 FFT):

- musicnn's ``log10(10000 · mel + 1)`` (values 0 … ~6): :data:`MUSICNN_ATOL`;
- our log-mel in dB (``power_to_db``, 80 dB range): :data:`DB_ATOL` dB;
- musicnn's outputs from waveforms vs from numpy patches: embedding :data:`EMBEDDING_ATOL`,
  pool (values up to ~100) :data:`POOL_ATOL`, tags :data:`TAGS_ATOL`;
- a label run's probabilities, device front end vs host (a head on musicnn's pool, a
  model on log-mel): :data:`PROBS_ATOL`.

Under TensorFlow (this process) and JAX (a subprocess: the backend is chosen at import).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from genre.card import LabelPlan, ModelCard
from genre.config import FeatureConfig
from genre.errors import ParameterError
from genre.features import extract
from genre.featurize import featurize
from genre.frontend import FrontendSpec, device_frontend
from genre.musicnn_spec import INSTALL_COMMAND, PATCH_SAMPLES, POOL_DIM, SAMPLE_RATE
from genre.predictor import Predictor
from genre.pretrained import MusicnnExtractor, log_mel
from tests.conftest import REPO, tone, write_audio

# Measured (TensorFlow 2 cores): musicnn log-mel 2.7e-5, dB 3.3e-3 (the tone's quiet bands),
# embedding 8.1e-6, pool 1.1e-4, tags 1.1e-6.
MUSICNN_ATOL = 1e-4
DB_ATOL = 1e-2
EMBEDDING_ATOL = 5e-5
POOL_ATOL = 5e-4
TAGS_ATOL = 1e-5
PROBS_ATOL = 1e-4

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("musicnn") is None and not os.environ.get("CI"),
    reason=f"musicnn weights not installed: {INSTALL_COMMAND}",
)


def signals(samples: int, sample_rate: int, seed: int = 7) -> np.ndarray:
    """``(4, samples)`` float32: noise, a 440 Hz tone, silence, loud noise (peaks near 1)."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / sample_rate
    return np.stack(
        [
            0.1 * rng.standard_normal(samples),
            0.5 * np.sin(2 * np.pi * 440.0 * t),
            np.zeros(samples),
            np.clip(0.4 * rng.standard_normal(samples), -1.0, 1.0),
        ]
    ).astype(np.float32)


def on_device(spec: FrontendSpec, x: np.ndarray) -> np.ndarray:
    import keras

    return keras.ops.convert_to_numpy(device_frontend(spec)(x))


@pytest.mark.parametrize("samples", [PATCH_SAMPLES, 47_616], ids=["3s", "shortest"])
def test_musicnn_frontend_matches_numpy_log_mel(samples):
    x = signals(samples, SAMPLE_RATE)
    ours = on_device(FrontendSpec.musicnn(samples), x)
    reference = log_mel(x)
    assert ours.shape == reference.shape == (4, 187, 96) and ours.dtype == np.float32
    assert np.abs(ours - reference).max() <= MUSICNN_ATOL
    assert np.all(ours[2] == 0.0)  # silence is exactly log10(1)


def test_log_mel_frontend_matches_features_mel():
    cfg = FeatureConfig(features=("mel",))
    x = signals(cfg.segment_samples, cfg.sample_rate)
    ours = on_device(FrontendSpec.log_mel(cfg), x)
    reference = extract(x, cfg)["mel"]
    assert ours.shape == reference.shape == (4, cfg.frames, cfg.n_mels)
    assert np.abs(ours - reference).max() <= DB_ATOL


def test_hop_that_does_not_divide_the_window_is_refused():
    with pytest.raises(ParameterError, match="must divide"):
        FrontendSpec.log_mel(FeatureConfig(features=("mel",), n_fft=2048, hop_length=500))


@needs_weights
def test_musicnn_on_waveforms_matches_numpy_patches():
    """The compiled step from waveforms (front end inside) gives the host path's columns."""
    x = signals(PATCH_SAMPLES, SAMPLE_RATE)
    host = MusicnnExtractor("musicnn_msd", batch_size=4)(x)
    device = MusicnnExtractor("musicnn_msd", batch_size=4, waveform_samples=PATCH_SAMPLES)(x)
    for key, atol in (("embedding", EMBEDDING_ATOL), ("pool", POOL_ATOL), ("tags", TAGS_ATOL)):
        assert np.abs(device[key] - host[key]).max() <= atol, key


def _label_both_ways(
    tmp_path, card: ModelCard, input_shape: tuple[int, ...], *, stddev: float
) -> dict:
    """``p_a`` of one 7 s file labelled with the host and with the device front end, by a
    fixed random dense head (mean over time first for frame inputs), weights small enough
    that the probability is not saturated (a saturated one could not tell them apart)."""
    import keras

    inputs = keras.Input(input_shape)
    x = keras.layers.GlobalAveragePooling1D()(inputs) if len(input_shape) == 2 else inputs
    init = keras.initializers.RandomNormal(stddev=stddev, seed=3)
    outputs = keras.layers.Dense(2, activation="softmax", kernel_initializer=init)(x)
    keras.Model(inputs, outputs).save(tmp_path / "head.keras")
    song = tmp_path / "song.wav"
    write_audio(song, tone(seconds=7.0, sample_rate=44_100, freq_hz=523.0), sample_rate=44_100)
    files = {"path": np.array([str(song)], object), "track_id": np.array(["s"], object)}
    probs = {}
    for frontend in ("host", "device"):
        plan = LabelPlan.from_card(card, tags=0, frontend=frontend)
        batch = featurize(files, plan=plan)
        assert batch["x"][0].shape == (2, *plan.input_shape)
        predictor = Predictor(plan, model_bytes=(tmp_path / "head.keras").read_bytes())
        probs[frontend] = predictor(batch)["p_a"][0]
    assert 0.02 < probs["host"] < 0.98
    return probs


@needs_weights
def test_label_run_on_waveforms_matches_host_for_a_musicnn_head(tmp_path):
    card = ModelCard(
        labels=("a", "b"),
        features=("musicnn_msd_pool",),
        feature_config=FeatureConfig(features=("musicnn_msd",)),
    )
    probs = _label_both_ways(tmp_path, card, (POOL_DIM,), stddev=0.02)
    assert abs(probs["device"] - probs["host"]) <= PROBS_ATOL


def test_label_run_on_waveforms_matches_host_for_a_log_mel_model(tmp_path):
    cfg = FeatureConfig(features=("mel",))
    card = ModelCard(labels=("a", "b"), features=("mel",), feature_config=cfg)
    probs = _label_both_ways(tmp_path, card, (cfg.frames, cfg.n_mels), stddev=2e-3)
    assert abs(probs["device"] - probs["host"]) <= PROBS_ATOL


_JAX_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import keras
    from genre.config import FeatureConfig
    from genre.frontend import FrontendSpec, device_frontend

    data = dict(np.load(sys.argv[1]))
    cfg = FeatureConfig(features=("mel",))
    for name, spec in (("musicnn", FrontendSpec.musicnn()), ("db", FrontendSpec.log_mel(cfg))):
        data[name] = keras.ops.convert_to_numpy(device_frontend(spec)(data[f"{name}_x"]))
    data["backend"] = np.array(keras.backend.backend())
    np.savez(sys.argv[1], **data)
    """
)


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="jax not installed")
def test_both_frontends_match_under_jax(tmp_path):
    cfg = FeatureConfig(features=("mel",))
    musicnn_x = signals(PATCH_SAMPLES, SAMPLE_RATE)
    db_x = signals(cfg.segment_samples, cfg.sample_rate)
    np.savez(tmp_path / "io.npz", musicnn_x=musicnn_x, db_x=db_x)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", _JAX_SCRIPT, str(tmp_path / "io.npz")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    with np.load(tmp_path / "io.npz") as out:
        assert str(out["backend"]) == "jax"
        assert np.abs(out["musicnn"] - log_mel(musicnn_x)).max() <= MUSICNN_ATOL
        assert np.abs(out["db"] - extract(db_x, cfg)["mel"]).max() <= DB_ATOL
