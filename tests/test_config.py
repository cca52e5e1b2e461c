import pytest

from genre.config import FEATURES, OUTLIER_WEIGHT, FeatureConfig, SearchSettings
from genre.errors import ParameterError


def test_defaults_match_the_seed_projects():
    cfg = FeatureConfig()
    assert (cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.segment_samples, cfg.frames) == (
        22050,
        2048,
        512,
        66150,
        130,
    )
    assert [cfg.shape(f) for f in FEATURES] == [(130, 13), (130, 12), (130, 128)]


def test_hash_is_stable_and_ignores_feature_order():
    a = FeatureConfig(features=("mel", "mfcc"))
    b = FeatureConfig(features=("mfcc", "mel"))
    assert a == b and a.hash() == b.hash() and len(a.hash()) == 12
    assert a.hash() != FeatureConfig().hash()
    assert FeatureConfig.from_json(a.to_json()) == a


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"hop_length": 0}, "hop_length=0"),
        ({"n_fft": -2}, "n_fft=-2"),
        ({"features": ("mfcc", "tempo")}, "tempo"),
        ({"features": ()}, "features"),
        ({"n_mfcc": 200}, "n_mfcc=200"),
        ({"segment_seconds": 0}, "segment_seconds"),
    ],
)
def test_bad_settings_name_the_value(kwargs, needle):
    with pytest.raises(ParameterError, match=needle):
        FeatureConfig(**kwargs)


def test_unknown_keys_are_refused():
    with pytest.raises(ParameterError, match="bogus"):
        FeatureConfig.from_dict({"bogus": 1})


def test_search_settings_check_outlier_exposure_and_name_it_only_when_not_the_default(tmp_path):
    shards = str(tmp_path / "shards")
    for bad in (-0.1, float("nan"), True, "0.5"):
        with pytest.raises(ParameterError, match="--outlier-weight"):
            SearchSettings(shards=shards, outlier_weight=bad)
    with pytest.raises(ParameterError, match="--other .* the training shards"):
        SearchSettings(shards=shards, other=shards + "/")
    plain = SearchSettings(shards=shards).search_name()
    # Searches started before outlier exposure existed keep their names (and resume).
    assert SearchSettings(shards=shards, outlier_weight=OUTLIER_WEIGHT).search_name() == plain
    assert SearchSettings(shards=shards, outlier_weight=0.0).search_name() != plain
    assert SearchSettings(shards=shards, other=str(tmp_path / "o")).search_name() != plain


def test_refit_folds_are_zero_or_at_least_two_and_not_part_of_the_search_name(tmp_path):
    shards = str(tmp_path / "shards")
    for bad in (1, -1, 2.5, True):
        with pytest.raises(ParameterError, match="--refit-folds"):
            SearchSettings(shards=shards, refit_folds=bad)
    plain = SearchSettings(shards=shards).search_name()
    # The refit comes after the search: a finished search is not run again for it.
    assert SearchSettings(shards=shards, refit_folds=0).search_name() == plain
    assert SearchSettings(shards=shards, refit_folds=3).search_name() == plain


def test_trial_memory_is_whole_mib_and_not_part_of_the_search_name(tmp_path):
    shards = str(tmp_path / "shards")
    for bad in (-1, 2.5, True, "64"):
        with pytest.raises(ParameterError, match="--trial-memory"):
            SearchSettings(shards=shards, trial_memory_mb=bad)
    # A cap changes what a trial may hold, not what it learns: the search resumes under another.
    plain = SearchSettings(shards=shards).search_name()
    assert SearchSettings(shards=shards, trial_memory_mb=512).search_name() == plain


def test_several_shards_folders_name_a_search_and_one_keeps_its_name(tmp_path):
    one, two = str(tmp_path / "a"), str(tmp_path / "b")
    # A search started when SHARDS was one folder keeps its name (and resumes).
    assert SearchSettings(shards=(one,)).search_name() == SearchSettings(shards=one).search_name()
    assert SearchSettings(shards=one).shards == (one,)
    both = SearchSettings(shards=(one, two)).search_name()
    alone = {SearchSettings(shards=s).search_name() for s in (one, two)}
    assert both not in alone and len(alone) == 2
    with pytest.raises(ParameterError, match="given twice"):
        SearchSettings(shards=(one, one + "/"))
    with pytest.raises(ParameterError, match="--other .* the training shards"):
        SearchSettings(shards=(one, two), other=two)
