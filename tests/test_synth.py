"""The synthetic demo corpus: deterministic, GTZAN-named, mixed formats, and musically varied.

Also the styles outside the taxonomy (``write_other``): written to ``_other/``, deterministic,
decodable, unlabelled by ``list_tracks``, and unlike any of the ten genres.
"""

import re

import numpy as np
import pytest
import soundfile as sf

from genre.audio import load_segments
from genre.config import GENRES, OTHER_FOLDER
from genre.corpus import list_tracks
from genre.errors import ParameterError
from genre.synth import (
    CORPUS_EXTENSIONS,
    CORPUS_SAMPLE_RATES,
    OTHER_STYLES,
    WRITE_FORMATS,
    render_other,
    render_track,
    write_audio,
    write_corpus,
    write_other,
)
from jobs.synth import main

SR = 22050


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    return root, write_corpus(root, per_genre=2, seconds=3.0, seed=5)


def test_same_arguments_render_identical_audio():
    a = render_track("jazz", index=3, seed=7, seconds=3.0)
    b = render_track("jazz", index=3, seed=7, seconds=3.0)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("other", [dict(seed=8), dict(index=4)])
def test_another_seed_or_index_renders_another_track(other):
    base = dict(index=3, seed=7, seconds=3.0)
    a = render_track("jazz", **base)
    b = render_track("jazz", **{**base, **other})
    assert a.shape == b.shape and not np.allclose(a, b)


@pytest.mark.parametrize("genre", GENRES)
def test_every_genre_renders_float32_mono_audio_in_range(genre):
    y = render_track(genre, index=0, seconds=3.0)
    assert y.dtype == np.float32 and y.shape == (3 * SR,)
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0
    assert np.sqrt(np.mean(y**2)) > 0.005


@pytest.mark.parametrize("sample_rate", [16000, 48000])
def test_sample_rate_sets_the_length(sample_rate):
    assert render_track("pop", index=0, seconds=2.5, sample_rate=sample_rate).shape == (
        int(2.5 * sample_rate),
    )


def test_corpus_follows_gtzan_layout(corpus):
    root, paths = corpus
    assert len(paths) == 2 * len(GENRES) and all(p.exists() for p in paths)
    for path in paths:
        genre, name = path.relative_to(root).parts
        assert genre in GENRES
        assert re.fullmatch(rf"{genre}\.0000[01]\.(wav|flac|ogg)", name)
    assert sorted(p.name for p in (root / "blues").iterdir())[0].startswith("blues.00000.")


def test_corpus_mixes_formats_rates_and_channels(corpus):
    _, paths = corpus
    infos = [sf.info(str(p)) for p in paths]
    assert {p.suffix for p in paths} == set(CORPUS_EXTENSIONS)
    assert {i.format for i in infos} == {"WAV", "FLAC", "OGG"}
    assert {i.samplerate for i in infos} == set(CORPUS_SAMPLE_RATES)
    assert {i.channels for i in infos} == {1, 2}
    stereo, _ = sf.read(str(paths[[i.channels for i in infos].index(2)]))
    assert not np.allclose(stereo[:, 0], stereo[:, 1], atol=1e-3)  # a pan and a delay apart


def test_corpus_files_decode_to_audible_audio(corpus):
    _, paths = corpus
    for path in paths:
        y, rate = sf.read(str(path), dtype="float32")
        assert abs(len(y) / rate - 3.0) < 0.05, path.name
        assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0
        assert np.sqrt(np.mean(y**2)) > 0.005, path.name


def test_corpus_is_deterministic_with_one_process_or_several(tmp_path):
    a = write_corpus(tmp_path / "a", per_genre=1, seconds=1.0, seed=3, workers=1)
    b = write_corpus(tmp_path / "b", per_genre=1, seconds=1.0, seed=3, workers=2)
    assert [p.relative_to(tmp_path / "a") for p in a] == [p.relative_to(tmp_path / "b") for p in b]
    for pa, pb in zip(a, b, strict=True):
        if pa.suffix != ".ogg":  # lossless files are bit-identical
            assert pa.read_bytes() == pb.read_bytes()
        else:  # Ogg streams carry a random serial number; the decoded audio is identical
            np.testing.assert_array_equal(sf.read(str(pa))[0], sf.read(str(pb))[0])


@pytest.mark.parametrize("ext", sorted(WRITE_FORMATS))
@pytest.mark.parametrize("channels", [1, 2])
def test_write_audio_writes_every_format(tmp_path, ext, channels):
    y = render_track("rock", index=0, seconds=1.0, sample_rate=44100)
    if channels == 2:
        y = np.stack([y, 0.5 * y], axis=1)
    path = write_audio(tmp_path / "sub" / f"x{ext}", y, sample_rate=44100)
    info = sf.info(str(path))
    assert (info.samplerate, info.channels) == (44100, channels)
    assert (info.format, info.subtype) == WRITE_FORMATS[ext]


@pytest.mark.parametrize(
    "call",
    [
        lambda tmp: write_corpus(tmp, per_genre=0),
        lambda tmp: write_corpus(tmp, seconds=0),
        lambda tmp: write_corpus(tmp, seconds=-1.0),
        lambda tmp: render_track("polka", index=0),
        lambda tmp: render_track("pop", index=-1),
        lambda tmp: render_track("pop", index=0, sample_rate=100),
        lambda tmp: write_audio(tmp / "x.m4a", np.zeros(10, np.float32), sample_rate=8000),
        lambda tmp: write_audio(tmp / "x.wav", np.array([0.0, np.nan]), sample_rate=8000),
        lambda tmp: render_other("polka", index=0),
        lambda tmp: render_other("drone", index=-1),
        lambda tmp: write_other(tmp, per_style=0),
        lambda tmp: write_other(tmp, seconds=0),
    ],
    ids=[
        "per_genre=0",
        "seconds=0",
        "seconds<0",
        "unknown genre",
        "index<0",
        "rate too low",
        "m4a",
        "nan",
        "unknown style",
        "other index<0",
        "per_style=0",
        "other seconds=0",
    ],
)
def test_bad_arguments_are_parameter_errors(tmp_path, call):
    with pytest.raises(ParameterError):
        call(tmp_path)


def test_corpus_into_a_file_is_a_parameter_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ParameterError, match="is a file"):
        write_corpus(tmp_path / "file", per_genre=1, seconds=1.0)


def test_job_on_an_existing_file_exits_2(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main([str(tmp_path / "file"), "--per-genre", "1", "--seconds", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


def test_job_smoke_test_writes_a_small_corpus(tmp_path, capsys):
    assert main([str(tmp_path / "c"), "--smoke-test"]) == 0
    assert len(list((tmp_path / "c").rglob("*.*"))) == 2 * len(GENRES)
    assert "20 tracks" in capsys.readouterr().out


# Styles outside the taxonomy: the out-of-distribution probe.


@pytest.fixture(scope="module")
def with_other(tmp_path_factory):
    """A corpus root with one track per genre and two per extra style, 3 s each."""
    root = tmp_path_factory.mktemp("with-other")
    write_corpus(root, per_genre=1, seconds=3.0, seed=5)
    return root, write_other(root, per_style=2, seconds=3.0, seed=5)


def test_extra_styles_are_none_of_the_genres():
    assert OTHER_STYLES and not set(OTHER_STYLES) & set(GENRES)
    assert OTHER_FOLDER.startswith("_")


@pytest.mark.parametrize("style", OTHER_STYLES)
def test_every_extra_style_renders_float32_mono_audio_in_range(style):
    y = render_other(style, index=0, seconds=3.0)
    assert y.dtype == np.float32 and y.shape == (3 * SR,)
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0
    assert np.sqrt(np.mean(y**2)) > 0.005


@pytest.mark.parametrize("other", [dict(seed=8), dict(index=4)])
def test_extra_styles_are_deterministic_per_seed_and_index(other):
    base = dict(index=3, seed=7, seconds=3.0)
    a = render_other("speech", **base)
    np.testing.assert_array_equal(a, render_other("speech", **base))
    assert not np.allclose(a, render_other("speech", **{**base, **other}))


def test_extra_styles_go_into_the_other_folder(with_other):
    root, paths = with_other
    assert len(paths) == 2 * len(OTHER_STYLES)
    names = [p.relative_to(root / OTHER_FOLDER).as_posix() for p in paths]
    for style in OTHER_STYLES:
        pattern = rf"{style}\.0000[01]\.(wav|flac|ogg)"
        assert sum(re.fullmatch(pattern, n) is not None for n in names) == 2
    assert sorted(p.name for p in root.iterdir()) == sorted([*GENRES, OTHER_FOLDER])


def test_extra_styles_mix_formats_rates_and_channels_like_the_corpus(with_other):
    _, paths = with_other
    infos = [sf.info(str(p)) for p in paths]
    assert {p.suffix for p in paths} == set(CORPUS_EXTENSIONS)
    assert {i.samplerate for i in infos} == set(CORPUS_SAMPLE_RATES)
    assert {i.channels for i in infos} == {1, 2}


def test_extra_styles_are_written_the_same_with_one_process_or_several(tmp_path):
    a = write_other(tmp_path / "a", per_style=1, seconds=1.0, seed=3, workers=1)
    b = write_other(tmp_path / "b", per_style=1, seconds=1.0, seed=3, workers=2)
    assert [p.relative_to(tmp_path / "a") for p in a] == [p.relative_to(tmp_path / "b") for p in b]
    for pa, pb in zip(a, b, strict=True):
        if pa.suffix != ".ogg":
            assert pa.read_bytes() == pb.read_bytes()
        else:  # Ogg streams carry a random serial number; the decoded audio is identical
            np.testing.assert_array_equal(sf.read(str(pa))[0], sf.read(str(pb))[0])


def test_every_extra_style_file_decodes_into_audible_segments(with_other):
    _, paths = with_other
    for path in paths:
        segments = load_segments(str(path), sample_rate=SR, segment_seconds=3.0)
        assert segments.audio.shape == (1, 3 * SR), path.name
        assert np.all(np.isfinite(segments.audio))
        assert np.sqrt(np.mean(segments.audio**2)) > 0.005, path.name


def test_list_tracks_leaves_extra_styles_unlabelled_and_labels_the_genres(with_other):
    root, paths = with_other
    listing = list_tracks(str(root))
    labels = {t.track_id: t.genre for t in listing.tracks}
    other = {f"{OTHER_FOLDER}/{p.name}" for p in paths}
    assert other <= set(labels) and all(labels[t] is None for t in other)
    genres = {t: g for t, g in labels.items() if t not in other}
    assert len(genres) == len(GENRES) and all(t.split("/")[0] == g for t, g in genres.items())


def test_job_extra_styles_flag_writes_the_other_folder(tmp_path, capsys):
    assert main([str(tmp_path / "a"), "--per-genre", "1", "--seconds", "1", "--extra-styles"]) == 0
    # As many per style as per genre unless told otherwise.
    assert len(list((tmp_path / "a" / OTHER_FOLDER).iterdir())) == len(OTHER_STYLES)
    assert (
        main(
            [
                str(tmp_path / "b"),
                "--per-genre",
                "1",
                "--seconds",
                "1",
                "--extra-styles",
                "--extra-per-style",
                "2",
            ]
        )
        == 0
    )
    assert len(list((tmp_path / "b" / OTHER_FOLDER).iterdir())) == 2 * len(OTHER_STYLES)
    assert f"{2 * len(OTHER_STYLES)} extra-style tracks" in capsys.readouterr().out


def test_job_without_the_flag_writes_no_other_folder(tmp_path):
    assert main([str(tmp_path / "c"), "--per-genre", "1", "--seconds", "1"]) == 0
    assert not (tmp_path / "c" / OTHER_FOLDER).exists()


def test_job_extra_per_style_without_extra_styles_exits_2(tmp_path, capsys):
    assert main([str(tmp_path / "c"), "--extra-per-style", "2"]) == 2
    assert "--extra-styles" in capsys.readouterr().err


# Realism: simple descriptors, numpy only, over 6 tracks per genre of 6 s.

_N_FFT, _HOP = 2048, 512


def _spectrogram(y: np.ndarray) -> np.ndarray:
    """Magnitude STFT ``(frames, bins)``, Hann window, no padding."""
    n = 1 + (len(y) - _N_FFT) // _HOP
    idx = np.arange(_N_FFT)[None, :] + _HOP * np.arange(n)[:, None]
    return np.abs(np.fft.rfft(y[idx] * np.hanning(_N_FFT), axis=1))


def _describe(y: np.ndarray, mel_basis: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    S = _spectrogram(y)
    freqs = np.fft.rfftfreq(_N_FFT, 1 / SR)
    logmel = np.log(mel_basis @ (S.T**2) + 1e-6)  # (bands, frames)
    flux = np.maximum(np.diff(logmel, axis=1), 0).sum(axis=0)
    peaks = (
        (flux[1:-1] > flux[:-2])
        & (flux[1:-1] >= flux[2:])
        & (flux[1:-1] > flux.mean() + 0.5 * flux.std())
    )
    fps = SR / _HOP
    ac = np.correlate(flux - flux.mean(), flux - flux.mean(), mode="full")[len(flux) - 1 :]
    lags = np.arange(int(fps * 60 / 200), int(fps * 60 / 60) + 1)  # 60-200 BPM
    scalars = {
        "rms": float(np.sqrt(np.mean(y**2))),
        "centroid_hz": float(np.mean((S @ freqs) / (S.sum(axis=1) + 1e-9))),
        "zcr": float(np.mean(np.signbit(y[1:]) != np.signbit(y[:-1]))),
        "onset_rate": float(peaks.sum() / (len(y) / SR)),
        "tempo_bpm": float(60 * fps / lags[np.argmax(ac[lags])]),
    }
    return scalars, np.concatenate([logmel.mean(axis=1), logmel.std(axis=1)])


def _nearest_mean_accuracy(x: np.ndarray, labels: np.ndarray) -> float:
    """Leave-one-out accuracy of a nearest-class-mean classifier on standardised features."""
    x = x.reshape(len(x), -1)
    hits = 0
    for i in range(len(x)):
        rest = np.arange(len(x)) != i
        z = (x - x[rest].mean(axis=0)) / (x[rest].std(axis=0) + 1e-12)
        means = np.stack([z[rest & (labels == c)].mean(axis=0) for c in range(len(GENRES))])
        hits += int(np.argmin(((means - z[i]) ** 2).sum(axis=1)) == labels[i])
    return hits / len(x)


def test_the_music_does_not_depend_on_the_sample_rate():
    import librosa
    import soxr

    mel_basis = librosa.filters.mel(sr=SR, n_fft=_N_FFT, n_mels=40)

    def logmel(y):
        return np.log(mel_basis @ (_spectrogram(y).T ** 2) + 1e-6).ravel()

    y = render_track("reggae", index=2, seconds=4.0)
    at_48k = render_track("reggae", index=2, seconds=4.0, sample_rate=48000)
    same = soxr.resample(at_48k, 48000, SR)[: len(y)]
    other = render_track("reggae", index=3, seconds=4.0)
    assert np.corrcoef(logmel(y), logmel(same))[0, 1] > 0.95
    assert np.corrcoef(logmel(y), logmel(other))[0, 1] < 0.8


@pytest.fixture(scope="module")
def descriptors():
    import librosa

    mel_basis = librosa.filters.mel(sr=SR, n_fft=_N_FFT, n_mels=40)
    scalars, rich, labels = [], [], []
    for g, genre in enumerate(GENRES):
        for i in range(6):
            s, r = _describe(render_track(genre, index=i, seconds=6.0), mel_basis)
            scalars.append(s)
            rich.append(r)
            labels.append(g)
    return scalars, np.array(rich), np.array(labels)


@pytest.mark.parametrize("name", ["rms", "centroid_hz", "zcr", "onset_rate", "tempo_bpm"])
def test_no_single_scalar_separates_the_genres(descriptors, name):
    scalars, _, labels = descriptors
    accuracy = _nearest_mean_accuracy(np.array([s[name] for s in scalars]), labels)
    assert accuracy < 0.7, f"{name} alone classifies {accuracy:.0%} of the tracks"


def test_log_mel_statistics_separate_the_genres_well_above_chance(descriptors):
    _, rich, labels = descriptors
    accuracy = _nearest_mean_accuracy(rich, labels)
    assert accuracy > 0.5, f"log-mel mean+std classifies only {accuracy:.0%} (chance: 10%)"


def test_extra_styles_lie_outside_the_genres(descriptors):
    """Nearest-neighbour distance to the genre tracks tells the extra styles apart (AUROC)."""
    import librosa

    _, rich, _ = descriptors
    mel_basis = librosa.filters.mel(sr=SR, n_fft=_N_FFT, n_mels=40)
    other = np.array(
        [
            _describe(render_other(s, index=i, seconds=6.0), mel_basis)[1]
            for s in OTHER_STYLES
            for i in range(3)
        ]
    )
    mu, sd = rich.mean(axis=0), rich.std(axis=0) + 1e-9
    z, z_other = (rich - mu) / sd, (other - mu) / sd
    inside = np.sqrt(((z[:, None] - z[None]) ** 2).sum(axis=2))
    np.fill_diagonal(inside, np.inf)  # leave one out
    d_in = inside.min(axis=1)
    d_out = np.sqrt(((z_other[:, None] - z[None]) ** 2).sum(axis=2)).min(axis=1)
    auroc = np.mean(d_out[:, None] > d_in[None, :])
    assert auroc > 0.9, f"nearest-genre distance separates the extra styles with AUROC {auroc:.2f}"
