"""Pretrained musicnn features through the pipeline: config, shards, heads, extract → tune → label.

The unit tests need no weights; the rest need the musicnn wheel's checkpoints, which
``make test`` installs (on CI, ``CI=true``, a missing wheel fails instead of skipping).
The command-line tests start Ray and are marked slow.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from genre.card import LabelPlan, ModelCard
from genre.config import FEATURES, FeatureConfig, SearchSettings
from genre.embeddings import check_extractors, describe, patches
from genre.errors import ConfigMismatchError, ParameterError
from genre.models import HEAD_KINDS
from genre.musicnn_spec import (
    EMBEDDING_DIM,
    INSTALL_COMMAND,
    POOL_DIM,
    VGG_EMBEDDING_DIM,
    VGG_POOL_DIM,
    WHEEL_SHA256,
)
from genre.pretrained import TAGS
from genre.training import stack_features
from genre.tuning import default_features, default_models
from tests.conftest import run_job, tone, write_audio

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("musicnn") is None and not os.environ.get("CI"),
    reason=f"musicnn weights not installed: {INSTALL_COMMAND}",
)
MSD = ("musicnn_msd", "musicnn_msd_pool", "musicnn_msd_tags")


# ----------------------------------------------------------------------------- feature config


@pytest.mark.parametrize(
    "features, digest",
    [
        (FEATURES, "e53d27b70038"),
        (("mfcc",), "8ca74bc23c23"),
        (("mfcc", "mel"), "30c34df098b4"),
    ],
)
def test_configs_without_musicnn_keep_their_hash(features, digest):
    cfg = FeatureConfig(features=features)
    assert cfg.hash() == digest  # as before musicnn features existed: old shards still match
    assert "musicnn_weights" not in cfg.to_dict()


def test_musicnn_feature_brings_its_three_columns():
    cfg = FeatureConfig(features=("musicnn_msd", "mfcc"))
    assert cfg.features == ("mfcc", *MSD)
    assert cfg.extractors == ("musicnn_msd",)
    assert [cfg.shape(c) for c in MSD] == [(EMBEDDING_DIM,), (POOL_DIM,), (50,)]
    assert cfg.shape("mfcc") == (130, 13)


def test_vgg_feature_brings_its_three_columns_from_the_same_wheel():
    cfg = FeatureConfig(features=("vgg_mtt", "musicnn_msd_pool"))
    vgg = ("vgg_mtt", "vgg_mtt_pool", "vgg_mtt_tags")
    assert cfg.features == (*MSD, *vgg)
    assert cfg.extractors == ("musicnn_msd", "vgg_mtt")
    assert [cfg.shape(c) for c in vgg] == [(VGG_EMBEDDING_DIM,), (VGG_POOL_DIM,), (50,)]
    assert (VGG_EMBEDDING_DIM, VGG_POOL_DIM) == (256, 1280)
    assert cfg.musicnn_weights == WHEEL_SHA256


@pytest.mark.parametrize(
    "extract, tags, expected",
    [
        (("vgg_msd",), None, (5, ("musicnn_mtt", "vgg_msd"))),
        (("vgg_msd", "vgg_mtt"), None, (5, ("vgg_msd", "vgg_mtt"))),
        (("vgg_mtt",), 0, (0, ("vgg_mtt",))),
        (("musicnn_msd",), None, (5, ("musicnn_msd", "musicnn_mtt"))),
    ],
)
def test_label_plan_reads_each_vocabulary_once(extract, tags, expected):
    """Tags come from the model's own extractors; musicnn's only for a missing vocabulary."""
    cfg = FeatureConfig(features=extract)
    card = ModelCard(
        labels=("a", "b"), features=tuple(f"{e}_pool" for e in extract), feature_config=cfg
    )
    plan = LabelPlan.from_card(card, tags=tags)
    assert (plan.tags, plan.extractors) == expected
    assert plan.reads_columns and card.input_shape == (sum(cfg.bins(f) for f in card.features),)


def test_any_musicnn_column_brings_the_other_two():
    assert FeatureConfig(features=("musicnn_mtt_pool",)).features == (
        "musicnn_mtt",
        "musicnn_mtt_pool",
        "musicnn_mtt_tags",
    )


def test_musicnn_config_records_the_wheel_and_round_trips():
    cfg = FeatureConfig(features=("mfcc", "musicnn_msd"))
    assert cfg.musicnn_weights == WHEEL_SHA256
    assert cfg.to_dict()["musicnn_weights"] == WHEEL_SHA256
    assert FeatureConfig.from_json(cfg.to_json()) == cfg
    other = FeatureConfig(features=cfg.features, musicnn_weights="0" * 64)
    assert other.hash() != cfg.hash()  # other weights: other features, other shards


def test_dropping_musicnn_columns_drops_the_weights():
    cfg = FeatureConfig(features=("mfcc", "musicnn_msd")).with_features(("mfcc",))
    assert cfg.musicnn_weights == ""
    assert cfg.hash() == FeatureConfig(features=("mfcc",)).hash()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"features": ("musicnn_msd",), "segment_seconds": 2.5},
        {"features": ("musicnn_msd",), "musicnn_weights": "not-a-hash"},
        {"features": ("musicnn_msd_pooled",)},
    ],
    ids=["short-segments", "bad-weights-hash", "unknown-column"],
)
def test_bad_musicnn_settings_raise_parameter_error(kwargs):
    with pytest.raises(ParameterError):
        FeatureConfig(**kwargs)


def test_card_input_is_the_stacked_vector():
    card = ModelCard(
        labels=("a", "b"),
        features=("musicnn_msd_pool", "musicnn_mtt_pool"),
        feature_config=FeatureConfig(features=("musicnn_msd", "musicnn_mtt")),
    )
    assert card.input_shape == (2 * POOL_DIM,)


def test_stacking_refuses_to_mix_frames_and_vectors():
    features = {"mfcc": np.zeros((2, 130, 13), np.float32), "musicnn_msd": np.zeros((2, 200))}
    assert stack_features(features, ("musicnn_msd",)).shape == (2, 200)
    with pytest.raises(ParameterError, match="cannot be stacked"):
        stack_features(features, ("mfcc", "musicnn_msd"))


def test_card_extractor_names_the_models_weights_and_tags():
    entry = describe(FeatureConfig(features=("musicnn_msd",)))
    assert entry["name"] == "musicnn" and entry["models"] == ["musicnn_msd"]
    assert entry["weights_sha256"] == WHEEL_SHA256
    assert entry["tags"]["musicnn_msd"] == list(TAGS["musicnn_msd"])


def test_card_extractor_describes_vgg_columns_too():
    entry = describe(FeatureConfig(features=("mfcc", "vgg_msd")))
    assert entry["models"] == ["vgg_msd"]
    assert entry["columns"] == ["vgg_msd", "vgg_msd_pool", "vgg_msd_tags"]
    assert entry["tags"] == {"vgg_msd": list(TAGS["musicnn_msd"])}
    assert describe(FeatureConfig(features=("mfcc",))) is None


def test_features_of_other_weights_are_refused():
    cfg = FeatureConfig(features=("musicnn_msd",), musicnn_weights="0" * 64)
    with pytest.raises(ConfigMismatchError, match="same weights"):
        check_extractors(cfg)


# ----------------------------------------------------------------------------- search defaults


def test_heads_read_the_pooled_features_present():
    available = FeatureConfig(features=("mel", "musicnn_msd", "musicnn_mtt")).features
    assert default_features("linear", available) == ("musicnn_msd_pool", "musicnn_mtt_pool")
    with pytest.raises(ParameterError, match="musicnn_msd"):
        default_features("mlp_head", ("mfcc", "mel"))


def test_heads_read_vgg_pools_only_without_musicnn_ones():
    both = FeatureConfig(features=("musicnn_mtt", "vgg_msd")).features
    assert default_features("linear", both) == ("musicnn_mtt_pool",)
    vgg = FeatureConfig(features=("mel", "vgg_msd", "vgg_mtt")).features
    assert default_features("mlp_head", vgg) == ("vgg_msd_pool", "vgg_mtt_pool")


def test_default_search_adds_heads_only_for_musicnn_shards():
    assert default_models(FeatureConfig()) == SearchSettings.models
    with_musicnn = default_models(FeatureConfig(features=(*FEATURES, "musicnn_msd")))
    assert with_musicnn == SearchSettings.models + HEAD_KINDS
    assert default_models(FeatureConfig(features=("musicnn_msd",))) == HEAD_KINDS


# ----------------------------------------------------------------------------- with the weights


def test_patches_from_decoded_segments(rng):
    segments = np.stack([tone(seconds=3.0, sample_rate=22050, freq_hz=f) for f in (220, 440)])
    x = patches(segments, sample_rate=22050)
    assert x.shape == (2, 187, 96) and x.dtype == np.float32 and np.isfinite(x).all()
    assert not np.allclose(x[0], x[1])


@needs_weights
@pytest.mark.parametrize(
    "extractor, pool_dim", [("musicnn_msd", POOL_DIM), ("vgg_msd", VGG_POOL_DIM)]
)
def test_extract_batch_writes_vector_columns_without_ray(extractor, pool_dim, tmp_path):
    from genre.extraction import extract_batch

    paths = [
        write_audio(
            tmp_path / "in" / "a.wav", tone(seconds=7.0, sample_rate=22050), sample_rate=22050
        ),
        tmp_path / "in" / "empty.wav",
    ]
    paths[1].write_bytes(b"")
    batch = {
        "path": np.array([str(p) for p in paths], object),
        "track_id": np.array(["a.wav", "empty.wav"], object),
        "genre": np.array([None, None], object),
    }
    cfg = FeatureConfig(features=("mfcc", extractor))

    out = extract_batch(batch, cfg=cfg, output=str(tmp_path / "out"))

    assert list(out["segments"]) == [2, 0] and list(out["reason"]) == ["", "empty"]
    table = pq.read_table(tmp_path / "out" / out["shard"][0])
    assert table.column(f"{extractor}_pool").type.list_size == pool_dim
    tags = np.asarray(table.column(f"{extractor}_tags").to_pylist(), np.float32)
    assert tags.shape == (2, 50) and ((tags >= 0) & (tags <= 1)).all()
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert json.loads(meta[f"genre.tags.{extractor}_tags"]) == list(TAGS[extractor])


# ----------------------------------------------------------------------------- the three jobs


@pytest.fixture(scope="module")
def musicnn_shards(small_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("musicnn-shards")
    result = run_job(
        "jobs.extract",
        str(small_corpus),
        str(out),
        "--num-cpus",
        "2",
        "--features",
        "mfcc,musicnn_msd",
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def musicnn_champion(musicnn_shards, mlflow_server, tmp_path_factory) -> list[str]:
    """A linear head on the pooled musicnn features, searched and registered by jobs.tune."""
    args = [
        str(musicnn_shards),
        "--models",
        "linear",
        "--num-samples",
        "2",
        "--max-epochs",
        "3",
        "--grace-epochs",
        "1",
        "--tracking-uri",
        mlflow_server,
        "--experiment",
        "tests-musicnn",
        "--refit-folds",
        "0",
        "--register-as",
        "genre-musicnn",
        "--storage",
        str(tmp_path_factory.mktemp("ray-results-musicnn")),
        "--num-cpus",
        "2",
    ]
    result = run_job("jobs.tune", *args, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "linear" in result.stdout and "musicnn_msd_pool" in result.stdout
    return ["--model", "models:/genre-musicnn@champion", "--tracking-uri", mlflow_server]


@needs_weights
@pytest.mark.slow
def test_extract_job_writes_shards_plain_pyarrow_reads(musicnn_shards):
    files = sorted(musicnn_shards.glob("part-*.parquet"))
    table = pq.read_table(files)
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}

    assert table.num_rows == 40 * 3
    for column, dims in zip(MSD, (EMBEDDING_DIM, POOL_DIM, 50), strict=True):
        assert table.schema.field(column).type.list_size == dims
        assert json.loads(meta[f"genre.shape.{column}"]) == [dims]
    assert json.loads(meta["genre.tags.musicnn_msd_tags"]) == list(TAGS["musicnn_msd"])
    assert json.loads(meta["genre.feature_config"])["musicnn_weights"] == WHEEL_SHA256
    manifest = json.loads((musicnn_shards / "_manifest.json").read_text())
    assert manifest["shapes"]["musicnn_msd_pool"] == [POOL_DIM]


@needs_weights
@pytest.mark.slow
def test_tune_job_card_names_the_extractor(musicnn_champion):
    from genre.card import resolve

    model = resolve(musicnn_champion[1], tracking_uri=musicnn_champion[3])
    card = model.card

    assert card.features == ("musicnn_msd_pool",) and card.input_shape == (POOL_DIM,)
    assert card.model_config.kind == "linear"
    assert card.extractor["models"] == ["musicnn_msd"]
    assert card.extractor["weights_sha256"] == WHEEL_SHA256 == card.feature_config.musicnn_weights


@needs_weights
@pytest.mark.slow
def test_label_job_computes_musicnn_features_itself(small_corpus, musicnn_champion, tmp_path):
    collection = tmp_path / "collection"
    for genre in ("classical", "metal", "jazz"):
        shutil.copytree(small_corpus / genre, collection / genre)
    (collection / "broken.wav").write_bytes(b"RIFF")
    out = tmp_path / "labels"

    result = run_job("jobs.label", str(collection), str(out), *musicnn_champion, "--num-cpus", "2")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    rows = pq.read_table(sorted(str(p) for p in out.glob("part-*.parquet"))).to_pandas()
    good = rows[rows.error.isna()]
    assert len(rows) == 13 and len(good) == 12 and (good.n_segments == 3).all()
    assert good.genre.notna().all() and (good.model == "genre-musicnn/1").all()
    assert "reads no musicnn features" not in result.stdout  # a head on musicnn: no such note

    # One file through the single-file path (label_file) agrees with the batch job.
    one = good.iloc[0]
    single = run_job("jobs.label", one.path, *musicnn_champion, "--top-k", "1")
    assert single.returncode == 0, single.stderr[-3000:]
    assert one.genre in single.stdout.strip().splitlines()[1]


@needs_weights
@pytest.mark.slow
@pytest.mark.multinode
def test_musicnn_actors_go_to_the_gpu_node_when_asked(small_corpus, tmp_path):
    """A CPU head and a worker that declares one GPU: with ``--gpus-per-worker 0.5`` the
    musicnn actors (which write every shard) run on the GPU node, the decoding anywhere.
    Two genres of the corpus: where the shards are written shows on any number of tracks."""
    from ray.cluster_utils import Cluster

    corpus = tmp_path / "corpus"
    for genre in ("blues", "rock"):
        shutil.copytree(small_corpus / genre, corpus / genre)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 2, "num_gpus": 0, "include_dashboard": False},
    )
    try:
        gpu = cluster.add_node(num_cpus=2, num_gpus=1)
        cluster.wait_for_nodes()
        result = run_job(
            "jobs.extract",
            str(corpus),
            str(tmp_path / "shards"),
            "--features",
            "musicnn_msd",
            "--gpus-per-worker",
            "0.5",
            "--address",
            cluster.address,
        )
    finally:
        cluster.shutdown()
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if "node(s):" in line)
    assert line.strip().endswith(f"{gpu.node_id[:8]} 8 tracks"), line
