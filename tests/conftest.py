"""Shared fixtures: a seeded rng, real audio files in every format, a local Ray runtime."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

#: Every format the product accepts, with the libsndfile format/subtype that writes it.
FORMATS = {
    ".wav": ("WAV", "PCM_16"),
    ".flac": ("FLAC", "PCM_16"),
    ".ogg": ("OGG", "VORBIS"),
    ".mp3": ("MP3", "MPEG_LAYER_III"),
    ".au": ("AU", "PCM_16"),
    ".aiff": ("AIFF", "PCM_16"),
}


def tone(*, seconds: float, sample_rate: int, freq_hz: float = 440.0, channels: int = 1, amp: float = 0.3) -> np.ndarray:
    """A pure tone with a little noise: ``(samples,)`` or ``(samples, channels)`` float32."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    rng = np.random.default_rng(int(freq_hz * 10 + sample_rate))
    y = amp * np.sin(2 * np.pi * freq_hz * t) + 0.003 * rng.standard_normal(len(t))
    if channels > 1:
        y = np.stack([y * (1.0 - 0.1 * c) for c in range(channels)], axis=1)
    return y.astype(np.float32)


def write_audio(path: Path, y: np.ndarray, *, sample_rate: int) -> Path:
    """Write ``y`` in the format its extension names."""
    fmt, subtype = FORMATS[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, sample_rate, format=fmt, subtype=subtype)
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray runtime for the in-process tests that need one (2 CPUs)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


def run_job(module: str, *args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m <module> args…`` as a user would; capture its output."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env
    )
