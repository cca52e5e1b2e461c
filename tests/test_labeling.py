"""The label job's parts without Ray: inputs, per-file features, the predictor's aggregation."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genre.card import LabelPlan, ModelCard
from genre.config import FeatureConfig
from genre.errors import ParameterError
from genre.labeling import Predictor, featurize_batch, list_inputs
from tests.conftest import tone, write_audio


@pytest.fixture
def files(tmp_path):
    paths = [
        write_audio(
            tmp_path / "in" / "a b" / f"ü{i}.wav",
            tone(seconds=6.5, sample_rate=22050),
            sample_rate=22050,
        )
        for i in range(3)
    ]
    return tmp_path, paths


def test_a_folder_is_searched_recursively(files):
    root, paths = files
    items, kind = list_inputs(str(root / "in"))
    assert kind == "folder" and sorted(i["path"] for i in items) == sorted(map(str, paths))


def test_a_glob_lists_matching_files(files):
    root, paths = files
    items, kind = list_inputs(str(root / "in" / "*" / "*.wav"))
    assert kind == "glob" and len(items) == 3


@pytest.mark.parametrize("kind", ["txt", "csv", "parquet"])
def test_a_list_file_names_paths_relative_to_itself(files, kind):
    root, paths = files
    relative = [str(p.relative_to(root)) for p in paths]
    listing = root / f"list.{kind}"
    if kind == "txt":
        listing.write_text("# my picks\n" + "\n".join(relative) + "\n\n")
    elif kind == "csv":
        listing.write_text("path,note\n" + "".join(f'"{r}",x\n' for r in relative))
    else:
        pq.write_table(pa.table({"path": relative}), listing)
    items, got = list_inputs(str(listing))
    assert got == "list" and [i["path"] for i in items] == [str(p) for p in paths]


def test_missing_input_and_unknown_list_type_are_parameter_errors(tmp_path):
    with pytest.raises(ParameterError, match="does not exist"):
        list_inputs(str(tmp_path / "nope"))
    (tmp_path / "x.docx").write_text("?")
    with pytest.raises(ParameterError, match="not a folder, glob"):
        list_inputs(str(tmp_path / "x.docx"))
    with pytest.raises(ParameterError, match="matches no file"):
        list_inputs(str(tmp_path / "*.flac"))


def test_featurize_gives_each_file_its_segments_or_its_error(files):
    root, paths = files
    bad = root / "bad.wav"
    bad.write_bytes(b"")
    batch = {
        "path": np.array([str(paths[0]), str(bad)], object),
        "track_id": np.array(["a", "b"], object),
    }
    out = featurize_batch(batch, cfg=FeatureConfig(), features=("mfcc", "chroma"), max_segments=10)
    assert (
        out["x"][0].shape == (2, 130, 25) and out["n_segments"][0] == 2 and out["reason"][0] == ""
    )
    assert (
        out["x"][1].shape == (0, 130, 25)
        and out["reason"][1] == "empty"
        and "empty" in out["error"][1]
    )


@pytest.mark.slow
def test_predictor_aggregates_segments_and_leaves_failed_rows_empty(tmp_path):
    import keras

    inputs = keras.Input((130, 13))
    # Class 0's logit grows with the mean of the input: the test controls the prediction through x.
    mean = keras.layers.GlobalAveragePooling1D()(inputs)
    logits = keras.layers.Dense(
        2,
        kernel_initializer=keras.initializers.Constant(
            np.c_[np.ones(13), np.zeros(13)].astype("float32")
        ),
        bias_initializer="zeros",
    )(mean)
    model = keras.Model(inputs, keras.layers.Softmax()(logits))
    model.save(tmp_path / "m.keras")
    card = ModelCard(
        labels=("hi", "lo"), features=("mfcc",), feature_config=FeatureConfig(features=("mfcc",))
    )
    plan = LabelPlan.from_card(card, top_k=2)
    predictor = Predictor(plan, model_bytes=(tmp_path / "m.keras").read_bytes(), batch_size=4)
    x = np.empty(2, object)
    x[0], x[1] = np.full((3, 130, 13), 0.5, np.float32), np.zeros((0, 130, 13), np.float32)
    batch = {
        "path": np.array(["p", "q"], object),
        "track_id": np.array(["p", "q"], object),
        "x": x,
        "n_segments": np.array([3, 0]),
        "duration_s": np.array([9.0, 0.0]),
        "reason": np.array(["", "empty"], object),
        "error": np.array(["", "q: empty"], object),
        "warning_kind": np.array(["", ""], object),
        "warning": np.array(["", ""], object),
    }
    out = predictor(batch)
    expected = np.exp(6.5) / (np.exp(6.5) + 1)
    assert out["genre"][0] == "hi" and out["confidence"][0] == pytest.approx(expected, rel=1e-5)
    assert list(out["top_genres"][0]) == ["hi", "lo"]
    assert out["genre"][1] is None and np.isnan(out["p_hi"][1])


@pytest.mark.slow
def test_the_label_plan_raises_no_ray_deprecation_warning(ray_local, tmp_path):
    import warnings

    from ray.util.annotations import RayDeprecationWarning

    from genre.labeling import LabelModel, LabelSettings, _pipeline

    card = ModelCard(
        labels=("a", "b"), features=("mfcc",), feature_config=FeatureConfig(features=("mfcc",))
    )
    model = LabelModel(uri="models:/m/1", name="m/1", card=card, keras_bytes=b"")
    settings = LabelSettings()
    with warnings.catch_warnings(record=True) as caught:  # Ray warns when the plan is built
        warnings.simplefilter("always")
        _pipeline(
            [{"path": str(tmp_path / "a.wav")}],
            str(tmp_path),
            model=model,
            plan=settings.plan(card),
            settings=settings,
        )
    assert [str(w.message) for w in caught if issubclass(w.category, RayDeprecationWarning)] == []
