"""Features from one STFT agree with librosa's own reference functions.

Stated tolerances (float32 throughout): log-mel within 5e-3 dB, MFCC within 1e-2,
chroma within 1e-5 (chroma is max-normalised to [0, 1]).
"""

import librosa
import numpy as np
import pytest

from genre.config import FEATURES, FeatureConfig
from genre.errors import ParameterError
from genre.features import extract

TOL = {"mel": 5e-3, "mfcc": 1e-2, "chroma": 1e-5}


def _reference(y: np.ndarray, cfg: FeatureConfig) -> dict[str, np.ndarray]:
    kw = dict(sr=cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop_length)
    return {
        "mel": librosa.power_to_db(librosa.feature.melspectrogram(y=y, n_mels=cfg.n_mels, **kw)).T,
        "mfcc": librosa.feature.mfcc(y=y, n_mfcc=cfg.n_mfcc, **kw).T,
        "chroma": librosa.feature.chroma_stft(y=y, n_chroma=cfg.n_chroma, tuning=0.0, **kw).T,
    }


@pytest.fixture
def segments(rng) -> np.ndarray:
    cfg = FeatureConfig()
    t = np.arange(cfg.segment_samples) / cfg.sample_rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.18, 329.63))
    sweep = np.sin(2 * np.pi * (100 + 400 * t) * t)
    noise = rng.standard_normal(len(t))
    quiet = 1e-3 * np.sin(2 * np.pi * 1000 * t)
    clicks = np.zeros_like(t)
    clicks[:: cfg.sample_rate // 4] = 1.0
    return np.stack([0.3 * chord, 0.5 * sweep, 0.2 * noise, quiet, clicks]).astype(np.float32)


@pytest.mark.parametrize("feature", FEATURES)
def test_feature_matches_librosa(segments, feature):
    cfg = FeatureConfig()
    ours = extract(segments, cfg)[feature]
    for i, y in enumerate(segments):
        ref = _reference(y, cfg)[feature]
        assert ours[i].shape == ref.shape == cfg.shape(feature)
        np.testing.assert_allclose(ours[i], ref, atol=TOL[feature], rtol=0, err_msg=f"segment {i}")


@pytest.mark.parametrize("features", [("mfcc",), ("chroma",), ("mel",), ("mfcc", "chroma", "mel")])
def test_contract_float32_shape_finite(segments, features):
    cfg = FeatureConfig(features=features)
    out = extract(segments, cfg)
    assert tuple(out) == cfg.features
    for name, values in out.items():
        assert values.dtype == np.float32
        assert values.shape == (len(segments), *cfg.shape(name))
        assert np.isfinite(values).all()


def test_batches_larger_than_one_chunk_equal_one_by_one(rng):
    cfg = FeatureConfig()
    x = (0.1 * rng.standard_normal((37, cfg.segment_samples))).astype(np.float32)
    together = extract(x, cfg)
    alone = extract(x[30:31], cfg)
    for name in cfg.features:
        # Equal up to float32 rounding: BLAS may take another path for another batch size.
        np.testing.assert_allclose(together[name][30], alone[name][0], rtol=1e-5, atol=1e-4)


def test_pure_tone_lights_its_pitch_class():
    cfg = FeatureConfig(features=("chroma",))
    t = np.arange(cfg.segment_samples) / cfg.sample_rate
    a440 = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)[None]
    chroma = extract(a440, cfg)["chroma"][0]
    assert np.all(np.argmax(chroma[5:-5], axis=1) == 9)  # chroma bin 9 is A (C=0)


def test_silence_gives_zero_chroma_and_constant_mfcc():
    cfg = FeatureConfig()
    out = extract(np.zeros((1, cfg.segment_samples), np.float32), cfg)
    assert np.all(out["chroma"] == 0)
    # Every frame is the same, up to float32 rounding of the DCT (BLAS may take another SIMD path
    # for the last rows: one ulp of -1131 is 1.2e-4).
    c0 = out["mfcc"][0, :, 0]
    np.testing.assert_allclose(c0, c0[0], rtol=1e-5)
    np.testing.assert_allclose(out["mfcc"][0, :, 1:], 0, atol=1e-2)


def test_wrong_segment_length_is_refused():
    with pytest.raises(ParameterError, match="66150"):
        extract(np.zeros((2, 1000), np.float32), FeatureConfig())


@pytest.mark.parametrize(
    "sr, n_fft, n_mels, n_chroma",
    [(22050, 2048, 128, 12), (16000, 1024, 40, 24), (44100, 4096, 96, 12)],
)
def test_filterbanks_equal_librosas(sr, n_fft, n_mels, n_chroma):
    from genre.features import _chroma_basis, mel_basis

    np.testing.assert_allclose(
        mel_basis(sr, n_fft, n_mels),
        librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels).T,
        atol=1e-7,
    )
    np.testing.assert_allclose(
        _chroma_basis(sr, n_fft, n_chroma),
        librosa.filters.chroma(sr=sr, n_fft=n_fft, n_chroma=n_chroma, tuning=0.0).T,
        atol=1e-7,
    )


def test_feature_path_loads_neither_librosa_nor_numba():
    # Worker processes start cold: librosa's import and numba's JIT cost seconds each.
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from genre.config import FeatureConfig\nfrom genre.features import extract\n"
        "extract(np.zeros((1, 66150), np.float32) + 0.1, FeatureConfig())\n"
        "print(sorted(m for m in ('librosa', 'numba', 'scipy.signal') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"
