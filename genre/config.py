"""Typed, frozen settings: the single source of truth for feature extraction and search.

The feature config travels with the data: its dict and hash are written into every
shard's schema metadata and into every model artifact, and downstream code reads it
from there rather than from flags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from genre.errors import ParameterError

__all__ = [
    "FEATURES",
    "GENRES",
    "AGGREGATES",
    "SPLIT_METHODS",
    "SCHEDULERS",
    "FeatureConfig",
    "SearchSettings",
]

#: Feature names in canonical order.
FEATURES = ("mfcc", "chroma", "mel")

#: Ways to turn segment probabilities into a track's: mean, max, or a majority vote.
AGGREGATES = ("mean", "max", "vote")

#: How tracks are split into train/val/test (always by track, never by segment).
SPLIT_METHODS = ("random", "gtzan-filtered", "auto")

#: Trial schedulers of a search: ASHA stops trials that fall behind; FIFO runs all.
SCHEDULERS = ("asha", "fifo")

#: The ten GTZAN genres, in the order GTZAN lists them.
GENRES = (
    "blues",
    "classical",
    "country",
    "disco",
    "hiphop",
    "jazz",
    "metal",
    "pop",
    "reggae",
    "rock",
)


@dataclass(frozen=True)
class FeatureConfig:
    """How audio becomes per-segment feature matrices.

    Defaults follow the seed projects: 22050 Hz mono, 3 s segments, n_fft 2048,
    hop 512 (130 frames per segment), 13 MFCC, 12 chroma bins, 128 mel bands.
    """

    sample_rate: int = 22050
    segment_seconds: float = 3.0
    n_fft: int = 2048
    hop_length: int = 512
    n_mfcc: int = 13
    n_mels: int = 128
    n_chroma: int = 12
    features: tuple[str, ...] = field(default=FEATURES)

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "n_mfcc", "n_mels", "n_chroma"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ParameterError(f"{name}={value!r} must be a positive integer")
        if not self.segment_seconds > 0:
            raise ParameterError(f"segment_seconds={self.segment_seconds!r} must be positive")
        if self.n_mfcc > self.n_mels:
            raise ParameterError(f"n_mfcc={self.n_mfcc} must not exceed n_mels={self.n_mels}")
        features = tuple(self.features)
        unknown = [f for f in features if f not in FEATURES]
        if unknown or not features:
            raise ParameterError(
                f"features={','.join(features) or '(none)'}: "
                f"choose one or more of {','.join(FEATURES)}"
            )
        # Canonical order, no duplicates, so equal settings hash equally.
        object.__setattr__(self, "features", tuple(f for f in FEATURES if f in features))

    @property
    def segment_samples(self) -> int:
        """Samples per segment (66150 by default)."""
        return int(round(self.segment_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        """STFT frames per segment with centred frames (130 by default)."""
        return 1 + self.segment_samples // self.hop_length

    def bins(self, feature: str) -> int:
        """Number of bins of ``feature`` (13, 12 or 128 by default)."""
        return {"mfcc": self.n_mfcc, "chroma": self.n_chroma, "mel": self.n_mels}[feature]

    def shape(self, feature: str) -> tuple[int, int]:
        """Per-segment shape ``(frames, bins)`` of ``feature``."""
        return (self.frames, self.bins(feature))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeatureConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ParameterError(f"unknown feature-config keys: {', '.join(extra)}")
        kwargs = dict(d)
        if "features" in kwargs:
            kwargs["features"] = tuple(kwargs["features"])
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FeatureConfig:
        return cls.from_dict(json.loads(text))

    def hash(self) -> str:
        """Short, stable hash of the settings (12 hex digits)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    def with_features(self, features: tuple[str, ...] | list[str]) -> FeatureConfig:
        return dataclasses.replace(self, features=tuple(features))


@dataclass(frozen=True)
class SearchSettings:
    """Everything a search needs besides the data (the tune job's and the demo's defaults).

    Validated on construction, before anything is created or started. A grace period
    longer than the epoch budget is clamped to it (ASHA could not stop anything
    earlier); ``grace_clamped`` says so.
    """

    shards: str
    models: tuple[str, ...] = ("short_chunk_cnn", "crnn", "cnn")
    features: tuple[str, ...] | None = None  # None: default_features(kind) per trial
    num_samples: int = 8
    max_epochs: int = 20
    grace_epochs: int = 3
    reduction_factor: int = 3  # ASHA keeps the best 1/reduction_factor of trials at each rung
    patience: int = 6
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    scheduler: str = "asha"  # or "fifo"
    split: str = "auto"
    seed: int = 0
    tracking_uri: str = ""
    experiment: str = "genre"
    register_as: str = "genre"
    alias: str = "champion"
    storage: str = "ray_results"
    name: str | None = None
    learning_rate: tuple[float, float] = (3e-4, 3e-3)
    batch_sizes: tuple[int, ...] = (32, 64)
    widths: tuple[int, ...] = (16, 32)
    dropout: tuple[float, float] = (0.1, 0.4)
    grace_clamped: bool = False

    def __post_init__(self) -> None:
        from genre.models import MODEL_KINDS

        object.__setattr__(self, "models", tuple(self.models))
        unknown = [m for m in self.models if m not in MODEL_KINDS]
        if unknown or not self.models:
            raise ParameterError(
                f"--models: unknown model {','.join(unknown) or '(none)'}; choose from {','.join(MODEL_KINDS)}"
            )
        if self.features is not None:
            object.__setattr__(self, "features", tuple(self.features))
            FeatureConfig(features=self.features)  # names known, raises otherwise
        for flag, value in (
            ("--num-samples", self.num_samples),
            ("--max-epochs", self.max_epochs),
            ("--grace-epochs", self.grace_epochs),
            ("--patience", self.patience),
        ):
            _positive_int(flag, value)
        if (
            isinstance(self.reduction_factor, bool)
            or not isinstance(self.reduction_factor, int)
            or self.reduction_factor < 2
        ):
            raise ParameterError(
                f"--reduction-factor={self.reduction_factor} must be an integer of at least 2"
            )
        if not self.cpus_per_trial > 0 or not self.gpus_per_trial >= 0:
            raise ParameterError(
                f"--cpus-per-trial={self.cpus_per_trial} must be > 0 and --gpus-per-trial={self.gpus_per_trial} ≥ 0"
            )
        _choice("--scheduler", self.scheduler, SCHEDULERS)
        _choice("--split", self.split, SPLIT_METHODS)
        low, high = self.learning_rate
        if not 0 < low <= high:
            raise ParameterError(f"learning_rate={self.learning_rate}: need 0 < low ≤ high")
        for name in ("batch_sizes", "widths"):
            if not getattr(self, name) or any(int(v) <= 0 for v in getattr(self, name)):
                raise ParameterError(f"{name}={getattr(self, name)} must be positive integers")
        if not 0 <= self.dropout[0] <= self.dropout[1] < 1:
            raise ParameterError(f"dropout={self.dropout}: need 0 ≤ low ≤ high < 1")
        if not self.register_as or not self.alias or not self.experiment:
            raise ParameterError("--register-as, the alias and --experiment must not be empty")
        if self.grace_epochs > self.max_epochs:
            object.__setattr__(self, "grace_epochs", self.max_epochs)
            object.__setattr__(self, "grace_clamped", True)

    def search_name(self) -> str:
        """A name stable for the same search, so re-running the command resumes it.

        Where the result is registered (name, alias) and logged is not part of it: a
        re-run with another ``--register-as`` registers the finished search's champion
        under the new name instead of searching again.
        """
        if self.name:
            return self.name
        skip = (
            "tracking_uri",
            "storage",
            "name",
            "experiment",
            "register_as",
            "alias",
            "grace_clamped",
        )
        keys = {k: v for k, v in asdict(self).items() if k not in skip}
        keys["shards"] = self.shards if "://" in self.shards else os.path.abspath(self.shards)
        digest = hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[
            :10
        ]
        return "search-" + digest


def _positive_int(flag: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ParameterError(f"{flag}={value} must be a positive integer")


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ParameterError(f"{flag}={value!r}: choose one of {', '.join(choices)}")
