"""The backend module: one home for TensorFlow, compiled inference, a Keras backend you choose."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO

GENRE = REPO / "genre"


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_tensorflow_is_imported_only_by_the_backend_module():
    importers = sorted(
        str(path.relative_to(REPO))
        for path in GENRE.rglob("*.py")
        if "tensorflow" in _imports(path)
    )
    assert importers == ["genre/backend.py"]


def test_configure_keeps_tensorflows_start_up_lines_off_the_terminal():
    code = "from genre import backend; backend.configure(); import keras; keras.ops.ones((2,))"
    env = {k: v for k, v in os.environ.items() if k != "GENRE_BACKEND_VERBOSE"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "absl::InitializeLog" not in result.stderr and "oneDNN" not in result.stderr
    assert result.stderr.strip() == ""


def test_an_unknown_backend_is_a_parameter_error(monkeypatch):
    from genre.backend import backend_name
    from genre.errors import ParameterError

    monkeypatch.setenv("KERAS_BACKEND", "theano")
    with pytest.raises(ParameterError, match="theano"):
        backend_name()


@pytest.fixture(scope="module")
def small_model():
    import keras

    from genre.backend import configure

    configure()
    keras.utils.set_random_seed(0)
    inputs = keras.Input((130, 13))
    x = keras.layers.Conv1D(8, 3, activation="relu")(inputs)
    x = keras.layers.GlobalMaxPooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(x))


@pytest.mark.parametrize("n", [1, 31, 256, 300, 513])
def test_compiled_predict_equals_model_predict_including_a_padded_last_batch(small_model, rng, n):
    from genre.labeling import compiled_predict

    x = rng.standard_normal((n, 130, 13)).astype(np.float32)
    expected = small_model.predict(x, batch_size=256, verbose=0)
    got = compiled_predict(small_model, x, batch_size=256, n_out=4)
    assert got.shape == (n, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_the_predictor_gives_model_predict_aggregated_per_track(small_model, rng, tmp_path):
    from genre.card import LabelPlan, ModelCard
    from genre.config import FeatureConfig
    from genre.predictor import Predictor

    small_model.save(tmp_path / "m.keras")
    card = ModelCard(
        labels=("a", "b", "c", "d"),
        features=("mfcc",),
        feature_config=FeatureConfig(features=("mfcc",)),
    )
    predictor = Predictor(
        LabelPlan.from_card(card, top_k=2),
        model_bytes=(tmp_path / "m.keras").read_bytes(),
        batch_size=64,
    )
    xs = [rng.standard_normal((k, 130, 13)).astype(np.float32) for k in (3, 70, 1)]
    x = np.empty(3, dtype=object)
    x[:] = xs
    batch = {
        "x": x,
        "reason": np.array(["", "", ""], object),
        "error": np.array(["", "", ""], object),
        "path": np.array(["p0", "p1", "p2"], object),
        "track_id": np.array(["t0", "t1", "t2"], object),
        "n_segments": np.array([3, 70, 1], np.int32),
        "duration_s": np.full(3, 9.0, np.float32),
        "warning_kind": np.array(["", "", ""], object),
        "warning": np.array(["", "", ""], object),
    }
    out = predictor(batch)
    for i, segments in enumerate(xs):
        mean = small_model.predict(segments, verbose=0).mean(axis=0)
        got = np.array([out[f"p_{label}"][i] for label in "abcd"])
        np.testing.assert_allclose(got, mean, rtol=1e-5, atol=1e-6)


JAX_SMOKE = """
import sys, tempfile
from pathlib import Path
import numpy as np
from genre import backend
from genre.config import FeatureConfig
from genre.extraction import extract_batch
from genre.labeling import label_file, model_from_network
from genre.models import ModelConfig
from genre.shards import read_segments
from genre.synth import write_corpus
from genre.training import fit, prepare

work = Path(tempfile.mkdtemp())
paths = [p for p in write_corpus(work / "c", per_genre=3, seconds=6.0, seed=3)
         if p.parent.name in ("rock", "jazz")]
batch = {"path": np.array([str(p) for p in paths], object),
         "track_id": np.array([f"{p.parent.name}/{p.name}" for p in paths], object),
         "genre": np.array([p.parent.name for p in paths], object)}
extract_batch(batch, cfg=FeatureConfig(features=("mfcc",)), output=str(work / "s"))
backend.configure()
data = prepare(read_segments(str(work / "s")), features=("mfcc",))
network = fit(data, ModelConfig(kind="cnn", width=8), max_epochs=1).network  # train
model = model_from_network(network, data, name="jax/1")  # save as .keras
result = label_file(str(paths[0]), model=model)  # load in the predictor, label
import keras
print(keras.backend.backend(), result["top"][0][0], round(sum(p for _, p in result["top"]), 4))
"""


@pytest.mark.slow
def test_jax_backend_trains_saves_loads_and_labels_a_file():
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-c", JAX_SMOKE],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    backend, genre, total = result.stdout.split()
    assert backend == "jax" and genre in ("rock", "jazz") and float(total) == pytest.approx(1.0)
    assert "absl::InitializeLog" not in result.stderr
