"""After the search: the blend with the zero-shot prior, the combined out-of-taxonomy score,
tags for any model, and zero-shot calibrated on a labelled folder.

The unit tests run on made-up probabilities and embeddings. The pipeline tests share one
extracted corpus whose shards hold MFCCs and both musicnn models' columns (the real
weights), one small CNN trained on the MFCCs, and its post-hoc fit, then label through
the real Ray Data pipeline."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pandas as pd
import pytest

from genre.calibration import Calibration, apply, fit_calibration, output_ood_score
from genre.card import LabelPlan, ModelCard
from genre.config import FeatureConfig
from genre.conformal import fit_conformal
from genre.errors import ParameterError
from genre.ood import MahalanobisOOD
from genre.posthoc import Blend, embedding, fit_blend_weight, review_figures
from genre.pretrained import TAGS
from genre.report import track_mean
from genre.zeroshot import genre_scores, load_mapping
from tests.conftest import run_job

LABELS = ("blues", "classical", "reggae")


def _softmax_rows(rng, n: int, k: int, scale: float) -> np.ndarray:
    z = rng.normal(size=(n, k)) * scale
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_review_figures_count_empty_and_wide_sets_as_label_flags_them():
    """Sets fitted on validation tracks that are right with 0.9: a uniform track has an empty
    set (none-fits), a track split over all three genres too, a sure one a set of one."""
    y = np.arange(30) % 3
    val = np.full((30, 3), 0.05)
    val[np.arange(30), y] = 0.9
    cal = Calibration(temperature=1.0, conformal=fit_conformal(val, y, coverage=0.9))  # q̂ 0.1
    sure = np.array([[0.95, 0.025, 0.025]] * 3 + [[0.025, 0.95, 0.025]])
    uniform = np.full((3, 3), 1 / 3)
    review = review_figures(cal, sure, {"test": uniform, "val": np.vstack([uniform, sure[:1]])})
    assert review["test_flagged"] == 0.0 and review["n_test"] == 4
    assert review["test_other_flagged"] == 1.0 and review["test_other_empty"] == 1.0
    assert review["val_other_flagged"] == 0.75 and review["n_val_other"] == 4
    assert review["test_other_confidence"] == pytest.approx(1 / 3)
    assert review_figures(Calibration(), sure, {}) == {}  # no sets, no figures


def test_a_sure_and_right_head_keeps_weight_zero(rng):
    y = rng.integers(0, 3, 60)
    head = np.full((60, 3), 0.01)
    head[np.arange(60), y] = 0.98
    prior = _softmax_rows(rng, 60, 3, 1.0)
    weight, nll = fit_blend_weight(head, prior, y)
    assert weight == 0.0
    assert nll[0.0] == min(nll.values()) and len(nll) == 21


def test_a_useless_head_leans_on_an_informative_prior(rng):
    y = rng.integers(0, 3, 80)
    head = _softmax_rows(rng, 80, 3, 2.0)  # confident noise
    prior = np.full((80, 3), 0.15)
    prior[np.arange(80), y] = 0.7
    weight, _ = fit_blend_weight(head, prior, y)
    assert weight >= 0.5
    mixed = Blend(weight=weight, mapping=load_mapping()).mix(head, prior)
    np.testing.assert_allclose(mixed.sum(axis=1), 1.0)
    assert np.mean(mixed.argmax(axis=1) == y) > np.mean(head.argmax(axis=1) == y)


def test_blend_round_trips_and_refuses_nonsense():
    blend = Blend(weight=0.35, mapping=load_mapping(), report={"weight": 0.35})
    again = Blend.from_dict(blend.to_dict())
    assert again.weight == 0.35 and again.mapping == blend.mapping
    assert again.extractors == ("musicnn_msd", "musicnn_mtt")
    with pytest.raises(ParameterError, match="weight"):
        Blend(weight=1.5, mapping=load_mapping())
    with pytest.raises(ParameterError, match="format"):
        Blend.from_dict({**blend.to_dict(), "format": "other/9"})


def test_the_prior_follows_the_models_labels():
    tags = {e: np.zeros((2, 50), np.float32) for e in TAGS}
    tags["musicnn_msd"][0, TAGS["musicnn_msd"].index("blues")] = 0.6
    tags["musicnn_mtt"][0, TAGS["musicnn_mtt"].index("classical")] = 0.2
    tags["musicnn_msd"][0, TAGS["musicnn_msd"].index("jazz")] = 0.9  # not among LABELS
    scores = genre_scores(load_mapping(), tags, labels=LABELS)
    np.testing.assert_allclose(scores[0], [0.75, 0.25, 0.0], rtol=1e-6)  # reggae: no tag
    np.testing.assert_allclose(scores[1], np.full(3, 1 / 3), rtol=1e-6)  # nothing fired


def _combined_calibration(rng) -> tuple[Calibration, MahalanobisOOD, np.ndarray, np.ndarray]:
    x = rng.normal(size=(120, 6))
    y = rng.integers(0, 3, 120)
    x[np.arange(120), y] += 4.0
    model = MahalanobisOOD.fit(x, y, components=6)
    probs = _softmax_rows(rng, 40, 3, 3.0)
    val_y = probs.argmax(axis=1)
    distances = model.score(x[:40])
    cal = fit_calibration(
        probs,
        val_y,
        ood_method="entropy+mahalanobis",
        mahalanobis=model,
        val_distances=distances,
        ood_column="musicnn_msd",
    )
    return cal, model, probs, distances


def test_the_combined_score_flags_either_kind_of_stranger(rng):
    cal, model, probs, distances = _combined_calibration(rng)
    scale = cal.ood["scale"]
    assert cal.ood["column"] == "musicnn_msd" and set(scale) == {"entropy", "mahalanobis"}
    sure = np.array([[0.98, 0.01, 0.01]])
    legacy = dataclasses.replace(cal, conformal=None)  # a card from before genre sets
    far = apply(legacy, sure, distances=np.array([50.0 * scale["mahalanobis"]]))
    near = apply(legacy, sure, distances=np.array([0.1 * scale["mahalanobis"]]))
    assert far["review_reason"][0] == "out-of-taxonomy" and far["needs_review"][0]
    assert near["ood_score"][0] < far["ood_score"][0]
    # With genre sets the distance is a column, domain_shift, and a reason only when asked.
    shifted = {"distances": np.array([50.0 * scale["mahalanobis"]])}
    assert apply(cal, sure, **shifted)["domain_shift"][0] == pytest.approx(50.0)
    assert apply(cal, sure, **shifted)["review_reason"][0] != "out-of-taxonomy"
    asked = apply(cal, sure, review_domain_shift=True, **shifted)
    assert asked["review_reason"][0] == "domain-shift" and asked["needs_review"][0]
    unsure = apply(cal, np.full((1, 3), 1 / 3), distances=np.array([0.0]))
    entropy_ratio = output_ood_score(np.full((1, 3), 1 / 3))[0] / scale["entropy"]
    assert unsure["ood_score"][0] == pytest.approx(entropy_ratio)
    # The card's JSON gives the same scores, from embeddings or from their distances.
    again = Calibration.from_dict(cal.to_dict())
    emb, probs = rng.normal(size=(5, 6)) * 3, _softmax_rows(rng, 5, 3, 1.0)
    from_json = apply(again, probs, embeddings=emb)["ood_score"]
    direct = apply(cal, probs, distances=model.score(emb))["ood_score"]
    np.testing.assert_allclose(from_json, direct, rtol=1e-5)


def test_a_combined_score_without_its_scale_is_refused(rng):
    cal, *_ = _combined_calibration(rng)
    broken = {**cal.to_dict(), "ood": {k: v for k, v in cal.ood.items() if k != "scale"}}
    with pytest.raises(ParameterError, match="scale"):
        Calibration.from_dict(broken)


def _card(**extra) -> ModelCard:
    return ModelCard(
        labels=LABELS,
        features=("mfcc",),
        feature_config=FeatureConfig(features=("mfcc",)),
        **extra,
    )


def test_a_blended_card_round_trips_and_names_its_companions(rng):
    cal, *_ = _combined_calibration(rng)
    blend = Blend(weight=0.4, mapping=load_mapping())
    card = _card(calibration=cal, blend=blend)
    again = ModelCard.from_metadata(card.to_metadata())
    assert again.blend.weight == 0.4 and again.blend.mapping == blend.mapping
    assert again.calibration.ood == cal.ood
    assert again == card
    assert _card(calibration=cal.to_dict(), blend=blend.to_dict()) == card  # dicts are parsed
    assert again.companions == ("musicnn_msd", "musicnn_mtt")
    assert again.label_config.extractors == ("musicnn_msd", "musicnn_mtt")
    assert again.label_config.musicnn_weights  # the weights the companions need are named
    assert _card().companions == () and _card().label_config == _card().feature_config


def test_an_embedding_of_two_columns_sits_side_by_side(rng):
    columns = {"musicnn_msd": np.ones((3, 2)), "musicnn_mtt": np.zeros((3, 4))}
    assert embedding(columns, "musicnn_msd").shape == (3, 2)
    both = embedding(columns, "musicnn_msd+musicnn_mtt")
    assert both.shape == (3, 6) and both[:, :2].all() and not both[:, 2:].any()
    cal, *_ = _combined_calibration(rng)
    ood = {**cal.ood, "column": "musicnn_mtt+musicnn_msd"}
    card = _card(calibration={**cal.to_dict(), "ood": ood})
    assert card.companions == ("musicnn_msd", "musicnn_mtt")  # no blend: the OOD column's


@pytest.mark.parametrize(
    ("blended", "tags", "expected"),
    [
        (False, None, (0, ())),
        (False, 3, (3, ("musicnn_msd", "musicnn_mtt"))),
        (True, None, (5, ("musicnn_msd", "musicnn_mtt"))),
        (True, 0, (0, ("musicnn_msd", "musicnn_mtt"))),
    ],
)
def test_the_label_plan_computes_musicnn_only_when_asked_or_present(blended, tags, expected):
    card = _card(blend=Blend(weight=0.1, mapping=load_mapping()) if blended else None)
    plan = LabelPlan.from_card(card, tags=tags)
    assert (plan.tags, plan.extractors) == expected
    assert plan.patches_too == bool(expected[1]) and not plan.reads_columns
    assert plan.input_shape == card.input_shape


def test_track_mean_averages_each_tracks_segments():
    tracks, means = track_mean(np.array(["b", "a", "b"]), np.array([1.0, 5.0, 3.0]))
    assert list(tracks) == ["a", "b"] and list(means) == [5.0, 2.0]


# ---------------------------------------------------------------- the real pipeline


@pytest.fixture(scope="module")
def fitted(tmp_path_factory, ray_local):
    """Shards with MFCCs and both musicnn models, a small CNN on the MFCCs, and its post-hoc
    fit (blend, calibration, Mahalanobis on musicnn_msd)."""
    from genre.card import card_for
    from genre.extraction import run_extract
    from genre.labeling import model_from_network
    from genre.models import ModelConfig
    from genre.posthoc import fit_posthoc
    from genre.shards import read_segments
    from genre.synth import write_corpus, write_other
    from genre.training import fit, prepare
    from genre.tuning import card_with_posthoc

    root = tmp_path_factory.mktemp("posthoc")
    corpus = root / "corpus"
    write_corpus(corpus, per_genre=4, seconds=9.0, seed=5)
    write_other(corpus, per_style=1, seconds=9.0, seed=5)
    cfg = FeatureConfig(features=("mfcc", "musicnn_msd", "musicnn_mtt"))
    run_extract(str(corpus), str(root / "shards"), cfg=cfg)
    segments = read_segments(str(root / "shards"))
    data = prepare(segments, features=("mfcc",), seed=0)
    network = fit(data, ModelConfig(kind="cnn", width=16), max_epochs=6, batch_size=16).network
    post = fit_posthoc(network, data, segments, mapping=load_mapping())
    model = model_from_network(network, data)
    card = card_with_posthoc(card_for(data), post, segments)
    return {"root": root, "corpus": corpus, "post": post, "model": model, "card": card}


def _label(fitted, name: str, model, paths: list[str], **settings) -> pd.DataFrame:
    from genre.labeling import LabelSettings, run_label

    listing = fitted["root"] / f"{name}.txt"
    listing.write_text("".join(f"{p}\n" for p in paths))
    out = fitted["root"] / name
    shutil.rmtree(out, ignore_errors=True)
    run_label(str(listing), str(out), model=model, settings=LabelSettings(**settings))
    return pd.read_parquet(out).sort_values("path").reset_index(drop=True)


@pytest.mark.slow
def test_the_fit_blends_calibrates_and_scores_embeddings(fitted):
    post, card = fitted["post"], fitted["card"]
    assert post.blend is not None and 0.0 <= post.blend.weight <= 1.0
    report = post.blend.report
    assert report["val_tracks"] == len(card.splits["val"]) and "test_accuracy_prior" in report
    assert post.calibration.ood["method"] == "entropy+mahalanobis"
    assert post.calibration.ood_column == "musicnn_msd+musicnn_mtt"  # both, side by side
    assert card.companions == ("musicnn_msd", "musicnn_mtt")
    assert card.extractor["weights_sha256"] == card.label_config.musicnn_weights


@pytest.mark.slow
def test_label_applies_the_cards_blend_and_tags_a_model_that_reads_no_musicnn(fitted):
    """A card whose blend weight is 0.6 labels with 0.4 · head + 0.6 · zero-shot, each
    measured by labelling the same files with the head alone and with zero-shot.

    The head alone reads no musicnn column; asked for three tags, label computes musicnn
    for them, and they come from its vocabularies. (Without ``tags`` such a model gets no
    tags column: ``tests/test_label.py``, on the session's champion.)
    """
    from genre.card import zero_shot_model
    from genre.labeling import LabelSettings

    model, card = fitted["model"], fitted["card"]
    paths = [str(fitted["corpus"] / t) for t in sorted(card.splits["test"])[:6]]
    forced = Blend(weight=0.6, mapping=load_mapping())
    blended = dataclasses.replace(
        model, name="blend/1", card=dataclasses.replace(card, blend=forced, calibration=None)
    )
    head = dataclasses.replace(model, name="head/1", card=dataclasses.replace(card, blend=None))
    head = dataclasses.replace(head, card=dataclasses.replace(head.card, calibration=None))
    mixed = _label(fitted, "blended", blended, paths, tags=0)
    alone = _label(fitted, "head", head, paths, tags=3)
    prior = _label(fitted, "prior", zero_shot_model(load_mapping()), paths, tags=0)
    columns = [f"p_{g}" for g in card.labels]
    expected = 0.4 * alone[columns].to_numpy() + 0.6 * prior[columns].to_numpy()
    np.testing.assert_allclose(mixed[columns].to_numpy(), expected, atol=2e-5)
    assert "tags" not in mixed.columns and "tags" not in prior.columns  # tags=0
    assert LabelSettings().tags is None  # the default: 5 when musicnn is computed anyway
    assert all(len(t) == 3 for t in alone["tags"])
    vocabulary = {t.lower() for e in TAGS for t in TAGS[e]}
    assert {t["tag"] for ts in alone["tags"] for t in ts} <= vocabulary


@pytest.mark.slow
def test_an_out_of_taxonomy_synthetic_track_is_flagged(fitted):
    model, card, corpus = fitted["model"], fitted["card"], fitted["corpus"]
    real = dataclasses.replace(model, card=card)
    inside = [str(corpus / t) for t in sorted(card.splits["test"])]
    outside = sorted(str(p) for p in (corpus / "_other").iterdir())
    rows = _label(fitted, "ood", real, inside + outside, review_domain_shift=True)
    rows["other"] = rows["path"].str.contains("/_other/")
    speech = rows[rows["path"].str.contains("/_other/speech")]
    assert len(speech) == 1 and speech["needs_review"].all()
    assert speech["review_reason"].isin(["none-fits", "domain-shift", "ambiguous"]).all()
    other, known = rows[rows["other"]], rows[~rows["other"]]
    assert other["ood_score"].mean() > known["ood_score"].mean()
    assert other["domain_shift"].mean() > known["domain_shift"].mean()
    assert known["ood_score"].notna().all() and known["genres"].notna().all()


@pytest.mark.slow
def test_zero_shot_calibrated_on_a_folder_through_the_cli(fitted):
    corpus, root = fitted["corpus"], fitted["root"]
    folder = root / "calibrate-on"
    for genre in ("blues", "classical", "jazz", "metal", "reggae"):
        for src in sorted((corpus / genre).iterdir())[:2]:
            (folder / genre).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, folder / genre / src.name)
    out = root / "zs-cal"
    inputs = corpus / "rock"
    result = run_job(
        "jobs.label",
        str(inputs),
        str(out),
        "--model",
        "zero-shot",
        "--calibrate-on",
        str(folder),
        "--num-cpus",
        "2",
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "zero-shot calibrated on 8 tracks" in result.stdout
    # reggae is in neither vocabulary: fitted on, its tracks would drive T to its bound
    assert "2 tracks of reggae left out" in result.stdout
    assert "confidence: calibrated (temperature" in result.stdout
    rows = pd.read_parquet(out)
    # the shipped mapping (gtzan10), its name extended by the calibration's hash
    assert len(rows) == 4 and set(rows.genre) <= set(load_mapping().labels)
    assert {f"p_{g}" for g in load_mapping().labels} <= set(rows.columns)
    assert rows["model"].str.fullmatch(r"zero-shot/gtzan10-[0-9a-f]{8}-cal[0-9a-f]{6}").all()


def test_calibrate_on_refuses_genres_the_mapping_lacks(tmp_path):
    (tmp_path / "cal" / "polka").mkdir(parents=True)
    (tmp_path / "cal" / "polka" / "a.wav").write_bytes(b"")
    (tmp_path / "in").mkdir()
    result = run_job(
        "jobs.label",
        str(tmp_path / "in"),
        str(tmp_path / "out"),
        "--model",
        "zero-shot",
        "--calibrate-on",
        str(tmp_path / "cal"),
    )
    assert result.returncode == 2
    assert "polka" in result.stderr and "not genres of the mapping" in result.stderr
    assert not (tmp_path / "out").exists()
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_log_mel_head_without_musicnn_shards_is_not_blended():
    from genre.posthoc import _fit_blend

    class Segments:
        features = {"mfcc": np.zeros((1, 2, 13))}

    notes: list[str] = []
    assert _fit_blend(load_mapping(), Segments(), list(LABELS), {}, {}, "mean", notes) is None
    assert "musicnn_msd_tags" in notes[0]


@pytest.mark.slow
def test_the_blended_card_survives_the_registry(fitted, tmp_path):
    """Logged as tune logs it (MLflow model metadata + genre/card.json), then resolved as
    label resolves it: the blend's weight and mapping, and the combined OOD score, intact."""
    import keras
    import mlflow

    from genre.card import resolve
    from genre.predictor import load_keras
    from genre.tracking import _log_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("posthoc", artifact_location=str(tmp_path / "art"))
    card = dataclasses.replace(fitted["card"], blend=Blend(weight=0.45, mapping=load_mapping()))
    network = load_keras(fitted["model"].keras_bytes)
    assert isinstance(network, keras.Model)
    with mlflow.start_run(experiment_id=experiment):
        info = _log_model(network, card)
    again = resolve(info.model_uri, tracking_uri=uri).card
    assert again.blend.weight == 0.45
    assert again.blend.mapping == load_mapping()
    assert again.calibration == card.calibration
    assert again.companions == ("musicnn_msd", "musicnn_mtt")
