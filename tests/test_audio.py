"""Decoding every accepted format and odd input, and the segmenting policy."""

import numpy as np
import pytest

from genre.audio import load, load_segments, segment, spread_starts
from tests.conftest import FORMATS, tone, write_audio


def _peak_hz(y: np.ndarray, sample_rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.argmax(spectrum) * sample_rate / len(y))


@pytest.mark.parametrize("ext", sorted(FORMATS))
@pytest.mark.parametrize("sample_rate, channels", [(22050, 1), (44100, 2), (8000, 1), (48000, 2)])
def test_every_format_decodes_to_mono_22050(tmp_path, ext, sample_rate, channels):
    path = write_audio(
        tmp_path / f"x{ext}",
        tone(seconds=4.0, sample_rate=sample_rate, channels=channels),
        sample_rate=sample_rate,
    )
    y, duration_s = load(path, sample_rate=22050)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(duration_s - 4.0) < 0.1  # mp3 adds encoder delay/padding
    assert abs(len(y) / 22050 - duration_s) < 0.01
    assert abs(_peak_hz(y, 22050) - 440.0) < 3.0


def test_mp3_at_44100_stereo_gives_expected_segments(tmp_path):
    path = write_audio(
        tmp_path / "song.mp3", tone(seconds=9.5, sample_rate=44100, channels=2), sample_rate=44100
    )
    segs = load_segments(path)
    assert segs.audio.shape == (3, 66150)
    assert list(segs.start_s) == [0.0, 3.0, 6.0]


@pytest.mark.parametrize("seconds, expected", [(30.0, 10), (29.9, 9), (3.0, 1), (7.5, 2)])
def test_segment_drops_the_remainder(seconds, expected):
    y = np.zeros(int(round(seconds * 22050)), dtype=np.float32)
    assert segment(y, sample_rate=22050).shape == (expected, 66150)


def test_spread_starts_cover_a_long_track_evenly():
    starts = spread_starts(600.0, segment_seconds=3.0, max_segments=10)
    assert len(starts) == 10 and starts[0] == 0.0 and starts[-1] == 597.0
    assert np.all(np.diff(starts) > 0)
    assert list(spread_starts(7.0, segment_seconds=3.0, max_segments=10)) == [0.0, 3.0]


def test_long_track_decodes_only_spread_windows_and_matches_full_decode(tmp_path, rng):
    sr = 22050
    y = (0.1 * rng.standard_normal(sr * 120)).astype(np.float32)
    path = write_audio(tmp_path / "long.wav", y, sample_rate=sr)
    windowed = load_segments(path, max_segments=5)
    assert windowed.audio.shape == (5, 66150)
    assert abs(windowed.duration_s - 120.0) < 1e-6
    full = segment(load(path)[0], sample_rate=sr)
    index = (windowed.start_s / 3.0).astype(int)
    np.testing.assert_allclose(windowed.audio, full[index], atol=1e-4)
