"""Zero-shot labels: musicnn's tags mapped to a taxonomy (mapping file, scores, card)."""

from __future__ import annotations

import numpy as np
import pytest

from genre.card import zero_shot_card
from genre.errors import ParameterError
from genre.pretrained import TAGS
from genre.zeroshot import TagMapping, genre_scores, load_mapping

TWO_GENRES = """
name = "mine"
combine = "mean"
[genres]
electronic = ["msd:electronic", "mtt:techno", "msd:House"]
"soul/rnb" = ["msd:soul", "msd:rnb"]
"""


def _tags(**fired: float) -> dict[str, np.ndarray]:
    out = {e: np.zeros((1, 50), np.float32) for e in TAGS}
    for key, p in fired.items():
        extractor, tag = key.split("__")
        out[extractor][0, TAGS[extractor].index(tag.replace("_", " "))] = p
    return out


def test_the_default_mapping_covers_gtzan_but_reggae():
    mapping = load_mapping()
    assert len(mapping.labels) == 10 and mapping.uncovered == ("reggae",)
    assert mapping.extractors == ("musicnn_msd", "musicnn_mtt")


def test_a_custom_two_genre_mapping_is_read_from_toml(tmp_path):
    (tmp_path / "mine.toml").write_text(TWO_GENRES)
    mapping = load_mapping(str(tmp_path / "mine.toml"))
    assert mapping.labels == ("electronic", "soul/rnb") and mapping.combine == "mean"
    tags = _tags(musicnn_msd__electronic=0.9, musicnn_mtt__techno=0.6, musicnn_msd__soul=0.3)
    scores = genre_scores(mapping, tags)
    electronic, soul = (0.9 + 0.6 + 0.0) / 3, (0.3 + 0.0) / 2
    np.testing.assert_allclose(
        scores[0], [electronic, soul] / np.float32(electronic + soul), rtol=1e-6
    )


def test_max_combines_by_the_strongest_tag():
    scores = genre_scores(
        load_mapping(), _tags(musicnn_msd__metal=0.2, musicnn_msd__heavy_metal=0.8)
    )
    assert load_mapping().labels[int(np.argmax(scores[0]))] == "metal"
    assert scores.sum() == pytest.approx(1.0)


def test_no_tag_firing_gives_uniform_scores():
    scores = genre_scores(load_mapping(), _tags())
    np.testing.assert_allclose(scores[0], np.full(10, 0.1), rtol=1e-6)


def test_a_mapping_may_read_the_vgg_taggers_tags(tmp_path):
    (tmp_path / "vgg.toml").write_text('[genres]\na = ["vgg_msd:rock"]\nb = ["mtt:techno"]')
    mapping = load_mapping(str(tmp_path / "vgg.toml"))
    assert mapping.extractors == ("musicnn_mtt", "vgg_msd")
    tags = _tags(vgg_msd__rock=0.8, musicnn_msd__rock=0.1, musicnn_mtt__techno=0.2)
    np.testing.assert_allclose(genre_scores(mapping, tags)[0], [0.8, 0.2], rtol=1e-6)
    assert load_mapping(str(tmp_path / "vgg.toml")).to_dict()["genres"]["a"] == ["vgg_msd:rock"]


@pytest.mark.parametrize(
    "text, needle",
    [
        ('[genres]\na = ["msd:polka"]\nb = ["msd:rock"]', "polka"),
        ('[genres]\na = ["rock"]\nb = ["msd:pop"]', "msd:<tag>"),
        ('[genres]\na = ["msd:rock"]', "at least two"),
        ('combine = "median"\n[genres]\na = ["msd:rock"]\nb = ["msd:pop"]', "combine"),
        ("[genres\n", "TOML"),
    ],
)
def test_bad_mappings_are_one_line_parameter_errors(tmp_path, text, needle):
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(ParameterError, match=needle):
        load_mapping(str(tmp_path / "bad.toml"))


def test_a_zero_shot_card_reads_only_the_tag_columns_it_needs(tmp_path):
    from genre.card import ModelCard

    (tmp_path / "msd-only.toml").write_text('[genres]\na = ["msd:rock"]\nb = ["msd:jazz"]')
    card = zero_shot_card(load_mapping(str(tmp_path / "msd-only.toml")))
    assert card.features == ("musicnn_msd_tags",) and isinstance(card.model_config, TagMapping)
    assert ModelCard.from_metadata(card.to_metadata()) == card


@pytest.fixture(scope="module")
def few_tracks(tmp_path_factory):
    from genre.synth import write_corpus

    root = tmp_path_factory.mktemp("zs-corpus")
    paths = write_corpus(root, per_genre=1, seconds=6.5, seed=4)
    keep = {"rock", "jazz", "classical", "metal"}
    for path in paths:
        if path.parent.name not in keep:
            path.unlink()
    return root


@pytest.mark.slow
def test_zero_shot_labels_a_folder_into_a_taxonomy_the_user_wrote_with_tags(few_tracks, tmp_path):
    """One CLI run: a mapping the user wrote, raw confidence said so, and the tags column
    (``--tags 3``) readable by pandas, DuckDB and the CSV.

    The shipped mapping through the command line: tests/test_posthoc.py's ``--calibrate-on``
    run (and the demo's zero-shot step); ``tags=0`` leaving no tags column though zero-shot
    computes musicnn anyway: tests/test_posthoc.py's blend test.
    """
    import duckdb
    import pandas as pd

    from tests.conftest import run_job

    (tmp_path / "mine.toml").write_text(TWO_GENRES)
    mine = load_mapping(str(tmp_path / "mine.toml"))
    out = tmp_path / "mine"
    result = run_job(
        "jobs.label",
        str(few_tracks),
        str(out),
        "--model",
        "zero-shot",
        "--mapping",
        str(tmp_path / "mine.toml"),
        "--tags",
        "3",
        "--csv",
        "--num-cpus",
        "2",
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "with zero-shot/mine-" in result.stdout and "needs review:" in result.stdout
    assert "confidence: raw, not calibrated" in result.stdout
    assert "most common tags:" in result.stdout
    rows = duckdb.sql(f"select * from read_parquet('{out}/part-*.parquet')").df()
    assert len(rows) == 4 and rows.error.isna().all()
    assert set(rows.genre) <= {"electronic", "soul/rnb"} == set(mine.labels)
    assert {"p_electronic", "p_soul/rnb"} <= set(rows.columns)
    assert rows.ood_score.between(0, 1).all() and rows.needs_review.notna().all()

    assert all(len(t) == 3 for t in pd.read_parquet(out).tags)
    first = duckdb.sql(
        f"select tags[1].tag as tag, tags[1].probability as p "
        f"from read_parquet('{out}/part-*.parquet')"
    ).df()
    assert first.p.between(0, 1).all() and first.tag.str.len().gt(0).all()
    assert "tags" in pd.read_csv(out / "_results.csv").columns


def test_a_mapping_without_zero_shot_is_refused(tmp_path):
    from tests.conftest import run_job

    result = run_job(
        "jobs.label",
        str(tmp_path),
        str(tmp_path / "o"),
        "--model",
        "models:/x@y",
        "--mapping",
        "m.toml",
        "--tracking-uri",
        f"sqlite:///{tmp_path}/m.db",
        timeout=120,
    )
    assert result.returncode == 2 and "--mapping goes with --model zero-shot" in result.stderr
