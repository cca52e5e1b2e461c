"""genre.featurize: a label run's decode tasks compute what its plan reads, and nothing else.

The real decode, resampling and features run; the tests only record which sample rates
the file was decoded and resampled to and whether a hand-crafted STFT ran (wrappers
around soxr and genre.features.extract that call through).
"""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from genre import featurize as featurize_module
from genre.card import LabelPlan, ModelCard
from genre.config import FeatureConfig
from genre.errors import ParameterError
from genre.extraction import prepare_batch
from genre.featurize import featurize
from genre.labeling import LabelSettings
from tests.conftest import tone, write_audio

NATIVE = 44_100


@pytest.fixture
def song(tmp_path):
    """A 7 s 44.1 kHz WAV: two 3 s segments at any rate."""
    path = tmp_path / "song.wav"
    write_audio(path, tone(seconds=7.0, sample_rate=NATIVE, freq_hz=330.0), sample_rate=NATIVE)
    return str(path)


@pytest.fixture
def computed(monkeypatch):
    """What featurize computes: ``resampled`` (from, to) rate pairs, ``stft`` feature calls."""
    seen = {"resampled": set(), "stft": []}
    resample, stream = soxr.resample, soxr.ResampleStream

    def recording_resample(x, in_rate, out_rate, *args, **kwargs):
        seen["resampled"].add((int(in_rate), int(out_rate)))
        return resample(x, in_rate, out_rate, *args, **kwargs)

    def recording_stream(in_rate, out_rate, *args, **kwargs):
        seen["resampled"].add((int(in_rate), int(out_rate)))
        return stream(in_rate, out_rate, *args, **kwargs)

    def recording_extract(segments, cfg):
        seen["stft"].append(cfg.features)
        return extract(segments, cfg)

    extract = featurize_module.extract
    monkeypatch.setattr(soxr, "resample", recording_resample)
    monkeypatch.setattr(soxr, "ResampleStream", recording_stream)
    monkeypatch.setattr(featurize_module, "extract", recording_extract)
    return seen


def _plan(features, extract_features, **kwargs) -> LabelPlan:
    card = ModelCard(
        labels=("a", "b"),
        features=features,
        feature_config=FeatureConfig(features=extract_features),
    )
    return LabelPlan.from_card(card, **kwargs)


def _run(plan: LabelPlan, path: str) -> dict:
    out = featurize(
        {"path": np.array([path], object), "track_id": np.array(["t"], object)}, plan=plan
    )
    assert out["reason"][0] == "", out["error"][0]
    return out


def test_musicnn_head_runs_no_stft_of_its_own(song, computed):
    out = _run(_plan(("musicnn_msd_pool",), ("musicnn_msd",), tags=0), song)
    # 16 kHz through 22.05 kHz, as extract made the columns (see the last test)
    assert computed["resampled"] == {(NATIVE, 22_050), (22_050, 16_000)}
    assert computed["stft"] == []
    assert out["x"][0].shape == (2, 187, 96) and "patches" not in out


def test_mfcc_model_resamples_to_22k_only(song, computed):
    out = _run(_plan(("mfcc",), ("mfcc",), tags=0), song)
    assert computed["resampled"] == {(NATIVE, 22_050)}
    assert computed["stft"] == [("mfcc",)]
    assert out["x"][0].shape == (2, 130, 13) and "patches" not in out


def test_mfcc_model_with_tags_resamples_to_both(song, computed):
    out = _run(_plan(("mfcc",), ("mfcc",), tags=3), song)
    assert computed["resampled"] == {(NATIVE, 22_050), (22_050, 16_000)}
    assert out["x"][0].shape == (2, 130, 13) and out["patches"][0].shape == (2, 187, 96)


@pytest.mark.parametrize(
    "features, extract_features, shape",
    [(("musicnn_msd_pool",), ("musicnn_msd",), (2, 48_000)), (("mel",), ("mel",), (2, 66_150))],
    ids=["musicnn-head", "log-mel-model"],
)
def test_device_frontend_hands_on_waveforms_and_computes_no_log_mel(
    song, computed, monkeypatch, features, extract_features, shape
):
    def no_log_mel(*args, **kwargs):
        raise AssertionError("the host computed musicnn's log-mel")

    monkeypatch.setattr("genre.embeddings.log_mel", no_log_mel)
    plan = _plan(features, extract_features, tags=0, frontend="device")
    out = _run(plan, song)
    assert out["x"][0].shape == shape == (2, *plan.input_shape)
    assert computed["stft"] == []


def test_extract_still_computes_every_feature_it_is_asked(song, tmp_path):
    batch = {"path": np.array([song], object), "track_id": np.array(["t"], object)}
    batch["genre"] = np.array([None], object)
    both = FeatureConfig(features=("mfcc", "musicnn_msd"))
    (group,) = prepare_batch(batch, cfg=both, output=str(tmp_path / "a"))
    assert group["mfcc"][0].shape == (2, 130, 13) and group["patches"][0].shape == (2, 187, 96)
    only = FeatureConfig(features=("musicnn_msd",))
    (group,) = prepare_batch(batch, cfg=only, output=str(tmp_path / "b"))
    assert group["patches"][0].shape == (2, 187, 96) and "mfcc" not in group


def test_label_gives_a_musicnn_head_the_patches_extract_made(song, tmp_path):
    """Bit for bit what extract computed beside hand-crafted features. Decoding straight to
    16 kHz would skip a resampling but not give these: on ten synthetic tracks it moved the
    top band of musicnn's log-mel by up to 1.56 (of ~6) and its embedding by up to 29 % of
    its norm."""
    batch = {"path": np.array([song], object), "track_id": np.array(["t"], object)}
    (group,) = prepare_batch(
        {**batch, "genre": np.array([None], object)},
        cfg=FeatureConfig(features=("mfcc", "chroma", "mel", "musicnn_msd")),
        output=str(tmp_path / "shards"),
    )
    out = _run(_plan(("musicnn_msd_pool",), ("musicnn_msd",), tags=0), song)
    np.testing.assert_array_equal(out["x"][0], group["patches"][0])


def test_auto_frontend_follows_the_predictors_gpu():
    assert LabelSettings().frontend_for(gpu=True) == "device"
    assert LabelSettings().frontend_for(gpu=False) == "host"
    assert LabelSettings(frontend="host").frontend_for(gpu=True) == "host"
    assert LabelSettings(frontend="device").plan(_plan(("mel",), ("mel",)).card).model_on_device


def test_unknown_frontend_is_refused():
    with pytest.raises(ParameterError, match="--frontend 'gpu'"):
        LabelSettings(frontend="gpu")
    with pytest.raises(ParameterError, match="frontend='auto'"):
        _plan(("mfcc",), ("mfcc",), frontend="auto")  # the plan holds a decision, not "auto"
