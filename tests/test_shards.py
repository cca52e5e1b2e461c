"""The shard format: plain Parquet that pyarrow, pandas and DuckDB read without Ray."""

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genre.config import FeatureConfig
from genre.errors import ConfigMismatchError, ParameterError
from genre.shards import ShardStore, read_config, read_segments, segments_table, write_shard


def _table(cfg, rng, track="rock/a.wav", n=3, genre="rock"):
    return segments_table(
        track_id=np.array([track] * n, object),
        path=np.array(["/x/" + track] * n, object),
        genre=[genre] * n,
        segment=np.arange(n),
        start_s=np.arange(n) * 3.0,
        duration_s=np.full(n, 9.5),
        features={
            f: rng.standard_normal((n, *cfg.shape(f))).astype(np.float32) for f in cfg.features
        },
        cfg=cfg,
    )


def test_schema_has_fixed_size_lists_and_shape_metadata(tmp_path, rng):
    cfg = FeatureConfig()
    name = write_shard(str(tmp_path), _table(cfg, rng))
    schema = pq.read_schema(tmp_path / name)
    mel = schema.field("mel").type
    assert (
        pa.types.is_fixed_size_list(mel)
        and mel.list_size == 130 * 128
        and mel.value_type == pa.float32()
    )
    assert json.loads(schema.metadata[b"genre.shape.mfcc"]) == [130, 13]
    assert schema.metadata[b"genre.feature_config_hash"].decode() == cfg.hash()
    assert not list(tmp_path.glob(".tmp-*"))


def test_round_trip_keeps_values_and_allows_null_genre(tmp_path, rng):
    cfg = FeatureConfig(features=("mfcc", "chroma"))
    table = _table(cfg, rng, genre=None)
    store = ShardStore(str(tmp_path), cfg)
    write_shard(str(tmp_path), table)
    store.write_manifest()
    back = read_segments(str(tmp_path))
    assert back.cfg == cfg and list(back.genre) == [None] * 3
    original = table.column("mfcc").combine_chunks().flatten().to_numpy().reshape(3, 130, 13)
    np.testing.assert_array_equal(back.features["mfcc"], original)
    with pytest.raises(ParameterError, match="mel"):
        read_segments(str(tmp_path), features=["mel"])


def test_other_config_is_refused_and_file_output_rejected(tmp_path, rng):
    cfg = FeatureConfig()
    ShardStore(str(tmp_path), cfg)
    write_shard(str(tmp_path), _table(cfg, rng))
    ShardStore(str(tmp_path), cfg).write_manifest()
    assert read_config(str(tmp_path)) == cfg
    with pytest.raises(ConfigMismatchError, match="new output"):
        ShardStore(str(tmp_path), FeatureConfig(features=("mfcc",)))
    (tmp_path / "f").write_text("x")
    with pytest.raises(ParameterError, match="is a file"):
        ShardStore(str(tmp_path / "f"), cfg)


def test_leftover_temp_files_are_removed_on_open(tmp_path):
    (tmp_path / ".tmp-deadbeef.parquet").write_bytes(b"half a shard")
    ShardStore(str(tmp_path), FeatureConfig())
    assert not list(tmp_path.glob(".tmp-*"))


def test_empty_store_reads_as_a_clear_error(tmp_path):
    with pytest.raises(ParameterError, match="extract"):
        read_segments(str(tmp_path))


READER = r"""
import sys, json, glob
import pyarrow.parquet as pq, pandas as pd, duckdb, numpy as np
root = sys.argv[1]
files = sorted(glob.glob(root + "/part-*.parquet"))
table = pq.read_table(files)
meta = table.schema.metadata
frames, bins = json.loads(meta[b"genre.shape.mel"])
mel = np.stack(table.column("mel").to_pylist()).reshape(len(table), frames, bins)
df = pd.read_parquet(root)  # the whole folder is one dataset: manifest and errors start with "_"
con = duckdb.connect()
parts = f"read_parquet('{root}/part-*.parquet')"
n = con.execute(f"select count(*), count(distinct track_id) from {parts}").fetchone()
first = con.execute(f"select len(mfcc) from {parts} limit 1").fetchone()[0]
assert "ray" not in sys.modules, "ray was imported"
print(json.dumps({
    "pandas_rows": len(df), "rows": len(table), "mel": list(mel.shape),
    "pandas_cols": list(df.columns), "duckdb": list(n), "mfcc_len": first,
}))
"""


def test_plain_pyarrow_pandas_duckdb_read_shards_without_ray(tmp_path, rng):
    cfg = FeatureConfig()
    write_shard(str(tmp_path), _table(cfg, rng, "rock/a.wav"))
    write_shard(str(tmp_path), _table(cfg, rng, "jazz/b.wav", genre="jazz"))
    store = ShardStore(str(tmp_path), cfg)
    store.write_errors(
        [{"path": "/x/c.wav", "track_id": "c.wav", "reason": "empty", "message": "c.wav: empty"}]
    )
    store.write_manifest()
    out = subprocess.run(
        [sys.executable, "-c", READER, str(tmp_path)], capture_output=True, text=True, check=True
    )
    got = json.loads(out.stdout)
    assert (
        got["rows"] == got["pandas_rows"] == 6
        and got["mel"] == [6, 130, 128]
        and got["duckdb"] == [6, 2]
        and got["mfcc_len"] == 130 * 13
    )
    assert got["pandas_cols"][:6] == [
        "track_id",
        "path",
        "genre",
        "segment",
        "start_s",
        "duration_s",
    ]


def _shards(root, cfg, rng, tracks) -> str:
    """A shards folder holding ``tracks`` (``(track_id, genre)``), three segments each."""
    store = ShardStore(str(root), cfg)
    for track, genre in tracks:
        write_shard(str(root), _table(cfg, rng, track=track, genre=genre))
    store.write_manifest()
    return str(root)


def test_with_other_files_every_track_of_the_other_folder_under_other_without_genre(tmp_path, rng):
    from genre.shards import OTHER_MOUNT, with_other

    cfg = FeatureConfig(features=("mfcc",))
    main = read_segments(
        _shards(tmp_path / "main", cfg, rng, [("rock/a.wav", "rock"), ("_other/x.wav", None)])
    )
    other_root = _shards(
        tmp_path / "other", cfg, rng, [("jazz/b.wav", "jazz"), ("_other/x.wav", None)]
    )
    merged = with_other(main, other_root)
    assert OTHER_MOUNT == "_other/--other"
    expected = [
        "_other/--other/_other/x.wav",
        "_other/--other/jazz/b.wav",
        "_other/x.wav",
        "rock/a.wav",
    ]
    assert list(dict.fromkeys(merged.track_id)) == expected  # sorted, as read_segments sorts
    outside = merged.track_id != "rock/a.wav"
    assert list(merged.genre[outside]) == [None] * 9 and set(merged.genre[~outside]) == {"rock"}
    assert len(merged) == 12 and merged.features["mfcc"].shape == (12, 130, 13)
    alone = read_segments(other_root)
    jazz = alone.features["mfcc"][alone.track_id == "jazz/b.wav"]
    np.testing.assert_array_equal(merged.features["mfcc"][merged.track_id == expected[1]], jazz)


def test_with_other_refuses_other_settings_or_missing_features(tmp_path, rng):
    from genre.shards import with_other

    main = read_segments(
        _shards(
            tmp_path / "main", FeatureConfig(features=("mfcc", "chroma")), rng, [("a/x.wav", "a")]
        )
    )
    longer = FeatureConfig(features=("mfcc", "chroma"), segment_seconds=4.0)
    with pytest.raises(ConfigMismatchError, match="--other"):
        with_other(main, _shards(tmp_path / "longer", longer, rng, [("b/y.wav", None)]))
    fewer = FeatureConfig(features=("mfcc",))
    with pytest.raises(ParameterError, match="--other .* lacks chroma"):
        with_other(main, _shards(tmp_path / "fewer", fewer, rng, [("b/y.wav", None)]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ParameterError, match="--other .* no segment shards"):
        with_other(main, str(tmp_path / "empty"))


def test_several_folders_read_as_one_collection_with_a_track_in_two_read_once(tmp_path, rng):
    cfg = FeatureConfig(features=("mfcc",))
    first = _shards(tmp_path / "a", cfg, rng, [("rock/a.wav", "rock"), ("jazz/b.wav", "jazz")])
    second = _shards(tmp_path / "b", cfg, rng, [("jazz/b.wav", "jazz"), ("pop/c.wav", "pop")])
    with pytest.warns(UserWarning, match="3 duplicate segments under .*'.*a', '.*b'"):
        both = read_segments((first, second))
    assert list(dict.fromkeys(both.track_id)) == ["jazz/b.wav", "pop/c.wav", "rock/a.wav"]
    assert len(both) == 9 and both.duplicates == 3 and both.cfg == cfg
    # The track both folders hold is read from the first folder given, as within a folder
    # the first shard's copy is kept.
    kept = both.features["mfcc"][both.track_id == "jazz/b.wav"]
    alone = read_segments(first)
    np.testing.assert_array_equal(kept, alone.features["mfcc"][alone.track_id == "jazz/b.wav"])


def test_folders_of_other_feature_configs_are_refused_before_any_is_read(tmp_path, rng):
    from genre.shards import common_config

    mfcc = _shards(tmp_path / "a", FeatureConfig(features=("mfcc",)), rng, [("x/a.wav", "x")])
    longer = FeatureConfig(features=("mfcc",), segment_seconds=4.0)
    other = _shards(tmp_path / "b", longer, rng, [("y/b.wav", "y")])
    for call in (common_config, read_segments):
        with pytest.raises(ConfigMismatchError, match="extracted with the same settings"):
            call((mfcc, other))
    assert common_config((mfcc, str(tmp_path / "none"))) == FeatureConfig(features=("mfcc",))
