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
from pathlib import Path
from typing import Any

from genre.errors import ParameterError
from genre.musicnn_spec import COLUMN_DIMS, MIN_SEGMENT_SAMPLES, SAMPLE_RATE, WHEEL_SHA256

__all__ = [
    "DEFAULT_COVERAGE",
    "REFIT_FOLDS",
    "FEATURES",
    "SEED_KINDS",
    "HEAD_KINDS",
    "MODEL_KINDS",
    "PRETRAINED",
    "DEFAULT_PRETRAINED",
    "COLUMNS",
    "GENRES",
    "AGGREGATES",
    "FRONTENDS",
    "SPLIT_METHODS",
    "SCHEDULERS",
    "DATA_MODES",
    "OTHER_FOLDER",
    "OUTLIER_WEIGHT",
    "FeatureConfig",
    "SearchSettings",
    "default_storage",
    "sqlite_path",
]

#: ``1 − α`` of the conformal genre sets when nothing else is asked for (:mod:`genre.conformal`).
DEFAULT_COVERAGE = 0.9

#: Hand-crafted features in canonical order: ``(frames, bins)`` matrices from one STFT.
FEATURES = ("mfcc", "chroma", "mel")

#: The folder under a corpus root for audio that is none of the genres: listed unlabelled
#: (:func:`genre.corpus.list_tracks`), written by :func:`genre.synth.write_other`, and
#: trained on as outlier exposure by a search (:func:`genre.training.prepare`).
OTHER_FOLDER = "_other"
#: λ of outlier exposure (Hendrycks, Mazeika & Dietterich, ICLR 2019): the weight of the
#: cross-entropy to the uniform distribution on out-of-taxonomy segments; 0.5 as in the paper.
OUTLIER_WEIGHT = 0.5
#: Cross-fitting folds of the champion's refit on train + val (``jobs.tune --refit-folds``).
REFIT_FOLDS = 5

#: Pretrained extractors (:mod:`genre.pretrained`): the musicnn wheel's four taggers,
#: ``musicnn_msd``, ``musicnn_mtt``, ``vgg_msd`` and ``vgg_mtt``. Each gives three vector
#: columns per segment: ``<name>`` (its embedding: 200 values for musicnn, 256 for VGG),
#: ``<name>_pool`` (pooled mid-level features: 1 506, 1 280) and ``<name>_tags`` (50 tag
#: probabilities); :data:`genre.musicnn_spec.COLUMN_DIMS` holds the widths.
PRETRAINED = tuple(COLUMN_DIMS)

#: The pretrained extractors genre uses unless told otherwise, one per tag vocabulary (MSD,
#: MagnaTagATune): a label run computes their tags where the model needs no extractor of
#: that vocabulary anyway. The VGG taggers are used where named.
DEFAULT_PRETRAINED = ("musicnn_msd", "musicnn_mtt")

#: Every feature column a shard may hold, in canonical order.
COLUMNS = FEATURES + tuple(f"{p}{suffix}" for p in PRETRAINED for suffix in COLUMN_DIMS[p])

#: The seed projects' models, meant for MFCC input.
SEED_KINDS = ("mlp", "cnn", "lstm", "gru", "cnn_lstm", "cnn_gru")

#: Heads on pretrained vector features ``(dims,)`` (the other kinds take ``(frames, bins)``).
HEAD_KINDS = ("linear", "mlp_head")

#: Every model kind :func:`genre.models.build_model` knows.
MODEL_KINDS = SEED_KINDS + ("crnn", "short_chunk_cnn") + HEAD_KINDS

#: Ways to turn segment probabilities into a track's: mean, max, or a majority vote.
AGGREGATES = ("mean", "max", "vote")

#: Where a label run computes log-mel (``--frontend``): ``host`` (numpy, in the decode
#: tasks), ``device`` (inside the predictor's compiled step, :mod:`genre.frontend`), or
#: ``auto``: device when the predictors have a GPU, host otherwise.
FRONTENDS = ("auto", "host", "device")

#: How tracks are split into train/val/test (always by track, never by segment).
SPLIT_METHODS = ("random", "gtzan-filtered", "auto")

#: Trial schedulers of a search: ASHA stops trials that fall behind; FIFO runs all.
SCHEDULERS = ("asha", "fifo")
#: How a search's trials read their data: held in memory (shared through Ray's object
#: store), streamed from the shards with Ray Data, or ``auto``: memory when the estimated
#: in-memory peak fits comfortably in the memory available (:func:`genre.tuning.choose_data`).
DATA_MODES = ("auto", "memory", "stream")

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
    """How audio becomes per-segment features.

    Defaults follow the seed projects: 22050 Hz mono, 3 s segments, n_fft 2048,
    hop 512 (130 frames per segment), 13 MFCC, 12 chroma bins, 128 mel bands.

    ``features`` names columns of :data:`COLUMNS`. A pretrained extractor is all or
    nothing: naming ``musicnn_msd`` or any of its columns gives all three of them
    (``musicnn_msd``, ``musicnn_msd_pool``, ``musicnn_msd_tags``), which one forward
    pass computes. ``musicnn_weights`` is the sha256 of the musicnn wheel whose
    checkpoints computed them (all four extractors come from it), filled in when empty;
    it is serialised (and hashed) only when pretrained columns are present, so every
    config without them keeps its hash.
    """

    sample_rate: int = 22050
    segment_seconds: float = 3.0
    n_fft: int = 2048
    hop_length: int = 512
    n_mfcc: int = 13
    n_mels: int = 128
    n_chroma: int = 12
    features: tuple[str, ...] = field(default=FEATURES)
    musicnn_weights: str = ""

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
        unknown = [f for f in features if f not in COLUMNS]
        if unknown or not features:
            raise ParameterError(
                f"features={','.join(features) or '(none)'}: "
                f"choose one or more of {','.join(FEATURES + PRETRAINED)}"
            )
        wanted = set(features) | {
            f"{p}{suffix}" for p in _extractors_of(features) for suffix in COLUMN_DIMS[p]
        }
        # Canonical order, no duplicates, so equal settings hash equally.
        object.__setattr__(self, "features", tuple(f for f in COLUMNS if f in wanted))
        self._check_pretrained()

    def _check_pretrained(self) -> None:
        if not self.extractors:
            object.__setattr__(self, "musicnn_weights", "")  # e.g. with_features(("mfcc",))
            return
        if not self.musicnn_weights:
            object.__setattr__(self, "musicnn_weights", WHEEL_SHA256)
        weights = self.musicnn_weights
        if not (
            isinstance(weights, str)
            and len(weights) == 64
            and all(c in "0123456789abcdef" for c in weights)
        ):
            raise ParameterError(f"musicnn_weights={weights!r} must be a sha256 in hex")
        # One musicnn patch is 187 frames of hop 256 at 16 kHz (47 616 samples).
        if self.segment_seconds * SAMPLE_RATE < MIN_SEGMENT_SAMPLES:
            raise ParameterError(
                f"segment_seconds={self.segment_seconds:g}: musicnn features need segments "
                "of at least 2.976 s"
            )

    @property
    def extractors(self) -> tuple[str, ...]:
        """The pretrained extractors (of :data:`PRETRAINED`) the features need."""
        return _extractors_of(self.features)

    @property
    def segment_samples(self) -> int:
        """Samples per segment (66150 by default)."""
        return int(round(self.segment_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        """STFT frames per segment with centred frames (130 by default)."""
        return 1 + self.segment_samples // self.hop_length

    def bins(self, feature: str) -> int:
        """Values per frame of ``feature`` (13, 12 or 128 by default); a vector's length."""
        fixed = {"mfcc": self.n_mfcc, "chroma": self.n_chroma, "mel": self.n_mels}
        if feature in fixed:
            return fixed[feature]
        extractor = _extractor_of(feature)
        return COLUMN_DIMS[extractor][feature[len(extractor) :]]

    def shape(self, feature: str) -> tuple[int, ...]:
        """Per-segment shape of ``feature``: ``(frames, bins)``, or ``(dims,)`` for a vector."""
        if feature in FEATURES:
            return (self.frames, self.bins(feature))
        return (self.bins(feature),)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["features"] = list(self.features)
        if not self.extractors:
            del d["musicnn_weights"]  # configs without musicnn serialise (and hash) as before
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


def _extractor_of(column: str) -> str:
    """``musicnn_msd_pool`` → ``musicnn_msd``; ``""`` for a hand-crafted feature."""
    return next((p for p in PRETRAINED if column == p or column.startswith(f"{p}_")), "")


def _extractors_of(columns: tuple[str, ...]) -> tuple[str, ...]:
    used = {_extractor_of(c) for c in columns}
    return tuple(p for p in PRETRAINED if p in used)


@dataclass(frozen=True)
class SearchSettings:
    """Everything a search needs besides the data (the tune job's and the demo's defaults).

    Validated on construction, before anything is created or started. A grace period
    longer than the epoch budget is clamped to it (ASHA could not stop anything
    earlier); ``grace_clamped`` says so.
    """

    #: The extract job's output folders, one or several of the same feature config (a
    #: collection extracted in parts); a single folder may be given as a plain string.
    shards: tuple[str, ...]
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
    storage: str = ""  # "": default_storage(tracking_uri)
    name: str | None = None
    learning_rate: tuple[float, float] = (3e-4, 3e-3)
    batch_sizes: tuple[int, ...] = (32, 64)
    widths: tuple[int, ...] = (16, 32)
    dropout: tuple[float, float] = (0.1, 0.4)
    #: Batch sizes searched instead of ``batch_sizes`` when trials get GPUs (small batches
    #: leave a GPU idle: batch 64 is overhead-bound, 256 gives 1.3-3.3x).
    gpu_batch_sizes: tuple[int, ...] = (64, 128, 256)
    mixed_precision: bool = False  # float16 compute in GPU trials
    #: Blend the champion with the zero-shot prior (weight chosen on validation, 0 allowed)
    #: when the shards hold musicnn's tag columns; ``mapping``: a TOML mapping file
    #: (default: the shipped gtzan10). Fitted after the search: not part of its name.
    blend: bool = True
    mapping: str | None = None
    #: ``1 − α`` of the champion's conformal genre sets (the card's default at label time).
    #: Fitted after the search, from scores that serve any coverage: not part of its name.
    coverage: float = DEFAULT_COVERAGE
    #: Outlier exposure: a shards folder whose every track is none of the genres (``--other``),
    #: trained on with the corpus's own ``_other/`` tracks; ``outlier_weight`` is λ, the
    #: weight of their cross-entropy to the uniform distribution (0: split and measured on,
    #: never trained on). Both change training, so both are part of the search's name.
    other: str | None = None
    outlier_weight: float = OUTLIER_WEIGHT
    #: After the search, train the best configuration again on train + val, with its
    #: calibration and genre sets cross-fitted over this many folds (0: keep the best
    #: trial's weights, calibrated on val). Not part of the search's name.
    refit_folds: int = REFIT_FOLDS
    #: Corrections files (``path,genre``, the review page's ``corrections.csv``) whose genres
    #: go over the shards' before the split (:mod:`genre.corrections`); later files win.
    #: They change training, so their contents' hashes are part of the search's name.
    labels: tuple[str, ...] = ()
    #: One of :data:`DATA_MODES`. Both read the same splits (and normalisation, to float
    #: rounding): not part of the search's name, so a search resumes in either.
    data: str = "auto"
    #: MiB a trial may take for its data beyond its framework and model (0: no cap): past
    #: it the trial fails with one line instead of meeting the OOM killer. A streamed
    #: trial's shuffle buffer is sized within it. Not part of the search's name.
    trial_memory_mb: int = 0
    grace_clamped: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "models", tuple(self.models))
        shards = (self.shards,) if isinstance(self.shards, str) else tuple(self.shards)
        object.__setattr__(self, "shards", shards)
        if not shards:
            raise ParameterError("SHARDS is required: the output folder(s) of the extract job")
        places = [_place(s) for s in shards]
        if len(set(places)) < len(places):
            again = next(s for s, p in zip(shards, places, strict=True) if places.count(p) > 1)
            raise ParameterError(f"shards folder {again!r} is given twice: give each folder once")
        if not self.storage:
            object.__setattr__(self, "storage", default_storage(self.tracking_uri))
        unknown = [m for m in self.models if m not in MODEL_KINDS]
        if unknown or not self.models:
            raise ParameterError(
                f"--models: unknown model {','.join(unknown) or '(none)'}; "
                f"choose from {','.join(MODEL_KINDS)}"
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
                f"--cpus-per-trial={self.cpus_per_trial} must be > 0 and "
                f"--gpus-per-trial={self.gpus_per_trial} ≥ 0"
            )
        _choice("--scheduler", self.scheduler, SCHEDULERS)
        _choice("--data", self.data, DATA_MODES)
        _choice("--split", self.split, SPLIT_METHODS)
        low, high = self.learning_rate
        if not 0 < low <= high:
            raise ParameterError(f"learning_rate={self.learning_rate}: need 0 < low ≤ high")
        for name in ("batch_sizes", "gpu_batch_sizes", "widths"):
            if not getattr(self, name) or any(int(v) <= 0 for v in getattr(self, name)):
                raise ParameterError(f"{name}={getattr(self, name)} must be positive integers")
        if not 0 <= self.dropout[0] <= self.dropout[1] < 1:
            raise ParameterError(f"dropout={self.dropout}: need 0 ≤ low ≤ high < 1")
        if self.mapping is not None and not os.path.isfile(self.mapping):
            raise ParameterError(f"--mapping {self.mapping!r} does not exist")
        if not self.register_as or not self.alias or not self.experiment:
            raise ParameterError("--register-as, the alias and --experiment must not be empty")
        if (
            isinstance(self.coverage, bool)
            or not isinstance(self.coverage, (int, float))
            or not 0.0 < self.coverage < 1.0
        ):
            raise ParameterError(
                f"--coverage={self.coverage} must be a number strictly between 0 and 1"
            )
        if self.other is not None and _place(self.other) in places:
            raise ParameterError(
                f"--other {self.other!r} is the training shards' folder: give a folder of "
                "shards of audio that is none of the genres"
            )
        w = self.outlier_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w <= 100.0:
            raise ParameterError(f"--outlier-weight={w!r} must be a number from 0 to 100")
        k = self.refit_folds
        if isinstance(k, bool) or not isinstance(k, int) or k < 0 or k == 1:
            raise ParameterError(f"--refit-folds={k!r} must be 0 (no refit) or an integer ≥ 2")
        m = self.trial_memory_mb
        if isinstance(m, bool) or not isinstance(m, int) or m < 0:
            raise ParameterError(f"--trial-memory={m!r} must be a whole number of MiB, ≥ 0")
        object.__setattr__(self, "labels", tuple(self.labels or ()))
        for path in self.labels:
            if not os.path.isfile(path):
                problem = "is not a file" if os.path.exists(path) else "does not exist"
                raise ParameterError(f"--labels {path!r} {problem}")
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
            "blend",
            "mapping",
            "coverage",
            "refit_folds",
            "data",
            "trial_memory_mb",
        )
        keys = {k: v for k, v in asdict(self).items() if k not in skip}
        # Settings added later stay out of the name at their defaults, so searches started
        # before they existed still resume.
        for key, default in (
            ("gpu_batch_sizes", (64, 128, 256)),
            ("mixed_precision", False),
            ("other", None),
            ("outlier_weight", OUTLIER_WEIGHT),
        ):
            if keys[key] == default:
                del keys[key]
        # One folder is named as before several could be given, so its searches still resume.
        places = [s if "://" in s else os.path.abspath(s) for s in self.shards]
        keys["shards"] = places[0] if len(places) == 1 else places
        if keys.get("other") is not None and "://" not in keys["other"]:
            keys["other"] = os.path.abspath(keys["other"])
        # The corrections by content, in order (later files win): the same files under
        # another name resume the search, an edited file starts another.
        labels = keys.pop("labels")
        if labels:
            keys["labels_sha256"] = [_sha256_file(path) for path in labels]
        digest = hashlib.sha256(json.dumps(keys, sort_keys=True, default=str).encode()).hexdigest()[
            :10
        ]
        return "search-" + digest


def default_storage(tracking_uri: str) -> str:
    """Where Ray Tune keeps a search's state when no ``--storage`` is given.

    Beside a ``sqlite:///PATH.db`` tracking database (``<its folder>/ray_results``, as
    the runs' artifacts go to ``<its folder>/mlartifacts``), so a search's state and its
    runs stay together; for any other tracking store ``~/ray_results``, Ray Tune's own
    default. The working directory only when the database is there.
    """
    database = sqlite_path(tracking_uri)
    if database is not None:
        return str(database.parent / "ray_results")
    return os.path.expanduser("~/ray_results")


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (``None`` for other URIs and
    for an in-memory database)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri[len("sqlite:///") :].split("?", 1)[0]).expanduser().resolve()


def _sha256_file(path: str) -> str:
    """The SHA-256 of a file's bytes (``--labels``' part of a search's name).

    Raises
    ------
    ParameterError
        The file cannot be read.
    """
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as exc:
        raise ParameterError(f"--labels {path!r} cannot be read ({exc.strerror})") from None


def _place(path: str) -> str:
    """A folder argument as one spelling: absolute when local, without a trailing ``/``."""
    return path.rstrip("/") if "://" in path else os.path.abspath(path)


def _positive_int(flag: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ParameterError(f"{flag}={value} must be a positive integer")


def _choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ParameterError(f"{flag}={value!r}: choose one of {', '.join(choices)}")
