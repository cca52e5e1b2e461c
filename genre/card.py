"""The model card: everything a trained model needs to be fed and read, in one type.

Tune writes a :class:`ModelCard` once, as the MLflow model's metadata (key ``genre``)
and as the artifact ``genre/card.json`` beside the Keras file; label and the demo read
it back with :func:`resolve`. Nothing else parses model metadata. As in nanoGPT's
checkpoint, the consumer rebuilds what it needs from the card alone: the labels, the
feature names and the exact feature config, the segment aggregation, the splits the
model was trained and tested on, and room for what later stages add (a pretrained
extractor, a calibration).

:func:`resolve` checks the model before any work starts: the Keras file's own input
layer must take ``(frames, bins)`` as the card's feature config gives them, whatever
the MLmodel signature says (it is optional and editable), so a model fed the wrong
features fails in the driver with one line instead of inside a Ray worker.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genre.audio import MAX_DURATION_S
from genre.calibration import DEFAULT_MAX_SET, Calibration
from genre.config import AGGREGATES, DEFAULT_PRETRAINED, PRETRAINED, FeatureConfig, sqlite_path
from genre.conformal import Conformal
from genre.corpus import SPLITS
from genre.corrections import LabelCorrections
from genre.embeddings import describe, patch_shape, waveform_samples
from genre.errors import ConfigMismatchError, ParameterError, first_line
from genre.models import ModelConfig
from genre.posthoc import Blend, embedding_extractors
from genre.pretrained import TAGS
from genre.training import tracks_of
from genre.zeroshot import TagMapping

__all__ = [
    "METADATA_KEY",
    "CARD_ARTIFACT",
    "ZERO_SHOT",
    "ModelCard",
    "parse_head",
    "head_dict",
    "card_for",
    "zero_shot_card",
    "LabelPlan",
    "ResolvedModel",
    "zero_shot_model",
    "keras_input_shape",
    "resolve",
    "check_tracking_uri",
    "check_tracking_scheme",
]

#: Key of the card in the MLflow model's metadata.
METADATA_KEY = "genre"
#: Where the card is also written, beside the model (``<model>/genre/card.json``).
CARD_ARTIFACT = "genre/card.json"
_FORMAT = "genre.card/1"


@dataclass(frozen=True)
class ModelCard:
    """What a trained model is and how to feed it.

    Attributes
    ----------
    labels : tuple of str
        Class names in output order.
    features : tuple of str
        Features stacked along the bins axis, in order.
    feature_config : FeatureConfig
        The exact settings the features were extracted with.
    model_config : ModelConfig, TagMapping or None
        The head: a trained network's architecture and optimiser settings, or, for a
        zero-shot model, the tag mapping that stands in for weights.
    aggregate : str
        Segment → track aggregation (``mean``, ``max`` or ``vote``).
    split_method : str
        How tracks were split (``random``, ``gtzan-filtered``, ``given``).
    splits : dict
        ``split name → track ids`` (``train``, ``val``, ``test``; and ``other_train``,
        ``other_val``, ``other_test`` for the out-of-taxonomy tracks of outlier exposure).
    training : dict
        Summary figures (test accuracy, search name, …), for people and reports.
    extractor : dict or None
        A pretrained feature extractor the features need, with its weights' hash.
    calibration : Calibration or None
        Probability calibration fitted after training, with the conformal genre sets'
        held-out scores (:attr:`conformal`) in cards made since they exist.
    blend : Blend or None
        The zero-shot prior the head's probabilities are mixed with, and its weight.
    corrections : LabelCorrections or None
        The ``--labels`` files whose genres went over the shards' (each one's SHA-256 and
        how many labels it gave), and what they changed; ``None``: the shards' labels alone
        (and every card made before ``--labels`` existed).

    ``model_config``, ``calibration``, ``blend`` and ``corrections`` may be given as their
    serialised dicts (as :meth:`to_metadata` writes them): they are parsed here
    (:func:`parse_head`, :meth:`Calibration.from_dict`, :meth:`Blend.from_dict`,
    :meth:`LabelCorrections.from_dict`).
    """

    labels: tuple[str, ...]
    features: tuple[str, ...]
    feature_config: FeatureConfig
    model_config: ModelConfig | TagMapping | None = None
    aggregate: str = "mean"
    split_method: str = ""
    splits: dict[str, tuple[str, ...]] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    extractor: dict[str, Any] | None = None
    calibration: Calibration | None = None
    blend: Blend | None = None
    corrections: LabelCorrections | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "features", tuple(str(x) for x in self.features))
        object.__setattr__(
            self, "splits", {str(k): tuple(map(str, v)) for k, v in self.splits.items()}
        )
        if isinstance(self.model_config, Mapping):
            object.__setattr__(self, "model_config", parse_head(self.model_config))
        if isinstance(self.calibration, Mapping):
            object.__setattr__(self, "calibration", Calibration.from_dict(self.calibration))
        if isinstance(self.blend, Mapping):
            object.__setattr__(self, "blend", Blend.from_dict(self.blend))
        if isinstance(self.corrections, Mapping):
            object.__setattr__(self, "corrections", LabelCorrections.from_dict(self.corrections))
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ParameterError(
                f"a model card needs two or more distinct labels, got {list(self.labels)}"
            )
        missing = [f for f in self.features if f not in self.feature_config.features]
        if not self.features or missing:
            raise ConfigMismatchError(
                f"card features {','.join(self.features) or '(none)'} "
                "are not all in its feature config "
                f"({','.join(self.feature_config.features)})"
            )
        if self.aggregate not in AGGREGATES:
            raise ParameterError(
                f"aggregate={self.aggregate!r}: choose one of {', '.join(AGGREGATES)}"
            )

    @property
    def zero_shot(self) -> TagMapping | None:
        """The tag mapping of a zero-shot model (``None`` for a trained one)."""
        return self.model_config if isinstance(self.model_config, TagMapping) else None

    @property
    def conformal(self) -> Conformal | None:
        """The genre sets' calibration, when the card has one."""
        return self.calibration.conformal if self.calibration is not None else None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One segment's input as the feature config gives it: ``(frames, bins)`` for
        hand-crafted features, ``(dims,)`` for pretrained vectors (stacked along the
        last axis either way)."""
        cfg = self.feature_config
        *leading, _ = cfg.shape(self.features[0])
        return (*leading, sum(cfg.bins(f) for f in self.features))

    @property
    def companions(self) -> tuple[str, ...]:
        """musicnn extractors label runs besides the model's own features: for the blend's
        prior and the out-of-taxonomy score's embedding."""
        wanted = set(self.blend.extractors if self.blend is not None else ())
        column = self.calibration.ood_column if self.calibration is not None else None
        wanted |= set(embedding_extractors(column) if column else ())
        return tuple(
            p for p in PRETRAINED if p in wanted and p not in self.feature_config.extractors
        )

    @property
    def musicnn_models(self) -> tuple[str, ...]:
        """Every pretrained model (of the musicnn wheel: musicnn or VGG) this model needs
        at label time: its features' and its :attr:`companions`, in canonical order."""
        return self.label_config.extractors

    @property
    def label_config(self) -> FeatureConfig:
        """What label computes: the model's features and the :attr:`companions`' columns,
        with the musicnn weights the card names."""
        extra = self.companions
        if not extra:
            return self.feature_config
        weights = (self.extractor or {}).get(
            "weights_sha256"
        ) or self.feature_config.musicnn_weights
        return dataclasses.replace(
            self.feature_config, features=(*self.features, *extra), musicnn_weights=weights
        )

    def split_of(self) -> dict[str, str]:
        """``track id → split name``."""
        return {track: name for name, tracks in self.splits.items() for track in tracks}

    def to_metadata(self) -> dict[str, Any]:
        """The card as plain JSON-able data (MLflow metadata, ``card.json``)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["feature_config"] = self.feature_config.to_dict()
        d["feature_config_hash"] = self.feature_config.hash()
        d["labels"], d["features"] = list(self.labels), list(self.features)
        d["splits"] = {k: list(v) for k, v in self.splits.items()}
        d["model_config"] = head_dict(self.model_config)
        d["calibration"] = self.calibration.to_dict() if self.calibration else None
        d["blend"] = self.blend.to_dict() if self.blend else None
        d["corrections"] = self.corrections.to_dict() if self.corrections else None
        d["format"] = _FORMAT
        return json.loads(json.dumps(d, default=_plain))

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any] | None, *, source: str = "model") -> ModelCard:
        """Read a card written by :meth:`to_metadata`.

        Raises
        ------
        ConfigMismatchError
            ``meta`` is not a genre model card, or its feature config hash does not match.
        """
        if not meta or "feature_config" not in meta or "labels" not in meta:
            raise ConfigMismatchError(
                f"{source} carries no genre model card (labels, features, feature config): "
                "it was not made by jobs.tune"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in meta.items() if k in known}
        cfg = FeatureConfig.from_dict(meta["feature_config"])
        stated = meta.get("feature_config_hash")
        if stated and stated != cfg.hash():
            raise ConfigMismatchError(
                f"{source}: its feature config hashes to {cfg.hash()}, but the card says {stated}: "
                "the card was edited; refusing to guess which is right"
            )
        kwargs["feature_config"] = cfg
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_metadata(), indent=1, sort_keys=True)


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and arrays inside model configs and summaries."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


#: ``model_config["kind"]`` of a zero-shot model's head.
ZERO_SHOT = "zero-shot"


def parse_head(d: Mapping[str, Any] | None) -> ModelConfig | TagMapping | None:
    """The head a card's ``model_config`` dict describes: ``{"kind": "zero-shot",
    "mapping": …}`` → its :class:`TagMapping`; a trained model's settings (a tune trial's
    config: keys :class:`ModelConfig` does not know are ignored) → a :class:`ModelConfig`;
    ``{}`` → ``None``."""
    if not d:
        return None
    if d.get("kind") == ZERO_SHOT:
        return TagMapping.from_dict(d["mapping"], source="the card's zero-shot mapping")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    return ModelConfig(**{k: v for k, v in d.items() if k in known})


def head_dict(head: ModelConfig | TagMapping | None) -> dict[str, Any]:
    """A card's head as :func:`parse_head` reads it back."""
    if head is None:
        return {}
    if isinstance(head, TagMapping):
        return {"kind": ZERO_SHOT, "mapping": head.to_dict(), "mapping_hash": head.hash()}
    return dataclasses.asdict(head)


def card_for(
    data,
    *,
    model_config: ModelConfig | Mapping[str, Any] | None = None,
    aggregate: str = "mean",
    training: dict[str, Any] | None = None,
) -> ModelCard:
    """The model card of a network trained on ``data`` (a :class:`genre.training.PreparedData`
    or :class:`~genre.training.StreamedData`):
    labels, features, splits, and the pretrained extractor the features need
    (:func:`genre.embeddings.describe`)."""
    splits = {name: tuple(tracks_of(data, name)) for name in SPLITS}
    # The out-of-taxonomy tracks of outlier exposure, when there were any (``other_test``: those
    # label's review was measured on, never trained on).
    others = {name: tuple(tracks_of(data, name, other=True)) for name in SPLITS}
    splits.update((f"other_{name}", ids) for name, ids in others.items() if ids)
    return ModelCard(
        labels=tuple(data.labels),
        features=tuple(data.features),
        feature_config=data.feature_config,
        model_config=model_config,
        aggregate=aggregate,
        split_method=data.split_method,
        splits=splits,
        training=dict(training or {}),
        extractor=describe(data.feature_config),
    )


def zero_shot_card(mapping: TagMapping, *, cfg: FeatureConfig | None = None) -> ModelCard:
    """A model card with no trained weights: the mapping over musicnn's tag columns."""
    features = tuple(f"{e}_tags" for e in mapping.extractors)
    cfg = (cfg or FeatureConfig()).with_features(features)
    return ModelCard(
        labels=mapping.labels,
        features=features,
        feature_config=cfg,
        model_config=mapping,
        aggregate="mean",
        split_method="none",
        training={"zero_shot": True, "uncovered_genres": list(mapping.uncovered)},
    )


@dataclass(frozen=True)
class LabelPlan:
    """What one label run computes, decided once from the model card and the run's settings.

    The decode tasks (:func:`genre.featurize.featurize`) and the predictors
    (:class:`genre.predictor.Predictor`) both take the plan; neither looks at the card
    to decide again.

    Attributes
    ----------
    card : ModelCard
    aggregate : str
        Segment → track aggregation of this run (the card's unless overridden).
    top_k : int
        Genres kept per track (at most the card's labels).
    max_segments : int
        Segments decoded per file, spread evenly over long files.
    max_duration_s : float
        Longest file decoded.
    min_confidence : float or None
        ``--min-confidence``: flag tracks below it (with genre sets, besides them; without,
        instead of the calibration's threshold).
    coverage : float or None
        ``--coverage`` of the genre sets (``None``: the card's).
    max_set : int
        ``--max-set``: a larger genre set needs review.
    review_domain_shift : bool
        ``--review-domain-shift``: flag tracks unlike the training collection too.
    tags : int
        Top musicnn tags kept per track (0: no ``tags`` column).
    extractors : tuple of str
        The pretrained models the predictors run: the features', the
        :attr:`ModelCard.companions`' and, when tags are asked for, one model of each
        vocabulary (MSD, MagnaTagATune): the run's own, else musicnn's
        (``genre.config.DEFAULT_PRETRAINED``).
    frontend : str
        Where log-mel is computed: ``host`` (numpy, in the decode tasks) or ``device``
        (inside the predictor's compiled step, :mod:`genre.frontend`: the decode tasks
        hand on waveforms). The label driver picks ``device`` when its predictors have a
        GPU (``--frontend auto``); on CPUs numpy's FFT is cheaper.
    """

    card: ModelCard
    aggregate: str
    top_k: int = 3
    max_segments: int = 10
    max_duration_s: float = MAX_DURATION_S
    min_confidence: float | None = None
    coverage: float | None = None
    max_set: int = DEFAULT_MAX_SET
    review_domain_shift: bool = False
    tags: int = 0
    extractors: tuple[str, ...] = ()
    frontend: str = "host"

    @classmethod
    def from_card(
        cls,
        card: ModelCard,
        *,
        aggregate: str | None = None,
        top_k: int = 3,
        max_segments: int = 10,
        max_duration_s: float = MAX_DURATION_S,
        min_confidence: float | None = None,
        coverage: float | None = None,
        max_set: int = DEFAULT_MAX_SET,
        review_domain_shift: bool = False,
        tags: int | None = None,
        frontend: str = "host",
    ) -> LabelPlan:
        """The plan of a label run of ``card``.

        ``tags=None`` (the default) keeps 5 tags when the run computes pretrained features
        anyway (the model's own, or its companions'), else none; ``tags=N > 0`` asks for
        them with any model; either way both vocabularies are read, computing musicnn's
        model of a vocabulary that none of the run's models has; ``0`` turns them off.

        Raises
        ------
        ParameterError
            An unknown aggregation or front end, or a ``coverage`` for a card without
            genre sets.
        """
        if frontend not in ("host", "device"):
            raise ParameterError(f"frontend={frontend!r}: choose host or device")
        aggregate = aggregate or card.aggregate
        if aggregate not in AGGREGATES:
            raise ParameterError(
                f"--aggregate {aggregate!r}: choose one of {', '.join(AGGREGATES)}"
            )
        if coverage is not None and card.conformal is None:
            raise ParameterError(
                f"--coverage {coverage}: this model has no genre sets (its card predates them, "
                "or a zero-shot model has no --calibrate-on); leave --coverage out"
            )
        needed = card.musicnn_models
        if tags is None:
            tags = 5 if needed else 0
        extractors = set(needed)
        if tags:  # a vocabulary none of the needed models has comes from musicnn's model
            known = {TAGS[e] for e in needed}
            extractors |= {e for e in DEFAULT_PRETRAINED if TAGS[e] not in known}
        return cls(
            card=card,
            aggregate=aggregate,
            top_k=min(top_k, len(card.labels)),
            max_segments=max_segments,
            max_duration_s=max_duration_s,
            min_confidence=min_confidence,
            coverage=coverage,
            max_set=max_set,
            review_domain_shift=review_domain_shift,
            tags=tags,
            extractors=tuple(p for p in PRETRAINED if p in extractors),
            frontend=frontend,
        )

    @property
    def labels(self) -> tuple[str, ...]:
        return self.card.labels

    @property
    def features(self) -> tuple[str, ...]:
        return self.card.features

    @property
    def feature_config(self) -> FeatureConfig:
        return self.card.feature_config

    @property
    def reads_columns(self) -> bool:
        """The model reads musicnn columns: the decode tasks hand on musicnn patches as
        its input, and the predictors compute the columns."""
        return bool(self.feature_config.extractors)

    @property
    def patches_too(self) -> bool:
        """A model on hand-crafted features that needs musicnn columns besides (its
        companions, tags): the decode tasks hand on patches beside the features."""
        return bool(self.extractors) and not self.reads_columns

    @property
    def musicnn_on_device(self) -> bool:
        """musicnn's log-mel is computed in the predictor's compiled step: the decode tasks
        hand on 16 kHz waveforms in its place."""
        return self.frontend == "device" and bool(self.extractors)

    @property
    def model_on_device(self) -> bool:
        """The model's own log-mel (a model on ``mel`` alone) is computed in its compiled
        step: the decode tasks hand on the segments' waveforms. MFCC and chroma stay on the
        host, and so does a mel whose hop does not divide its window (the device front end
        frames by whole hops)."""
        cfg = self.feature_config
        return (
            self.frontend == "device"
            and self.features == ("mel",)
            and cfg.n_fft % cfg.hop_length == 0
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One decoded segment as the decode tasks hand it on: musicnn's ``(187, 96)``
        patch (or its 16 kHz waveform) when :attr:`reads_columns`, the segment's waveform
        when :attr:`model_on_device`, else the card's ``(frames, bins)``."""
        cfg = self.feature_config
        if self.reads_columns:
            return (waveform_samples(cfg),) if self.musicnn_on_device else patch_shape()
        if self.model_on_device:
            return (cfg.segment_samples,)
        return self.card.input_shape


def keras_input_shape(keras_bytes: bytes) -> tuple[int, ...]:
    """The per-example input shape declared by a ``.keras`` file, read without TensorFlow.

    Raises
    ------
    ConfigMismatchError
        Not a Keras 3 archive, or no input layer with a static shape.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(keras_bytes)) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ConfigMismatchError(f"not a Keras 3 model file ({type(exc).__name__})") from exc
    for layer in config.get("config", {}).get("layers", []):
        if layer.get("class_name") == "InputLayer":
            shape = layer.get("config", {}).get("batch_shape") or layer.get("config", {}).get(
                "batch_input_shape"
            )
            if shape:
                return tuple(int(d) if d is not None else -1 for d in shape[1:])
    raise ConfigMismatchError("the Keras model file declares no input layer with a shape")


@dataclass(frozen=True)
class ResolvedModel:
    """A model looked up and checked: its card, its Keras file's bytes and its name."""

    uri: str
    name: str  # e.g. "genre/3"
    card: ModelCard
    keras_bytes: bytes

    @property
    def labels(self) -> tuple[str, ...]:
        return self.card.labels

    @property
    def features(self) -> tuple[str, ...]:
        return self.card.features

    @property
    def feature_config(self):
        return self.card.feature_config

    @property
    def aggregate(self) -> str:
        return self.card.aggregate


def zero_shot_model(mapping: TagMapping) -> ResolvedModel:
    """A model to label with that is the mapping alone: no Keras bytes, named
    ``zero-shot/<mapping>-<hash>``."""
    name = f"zero-shot/{mapping.name}-{mapping.hash()[:8]}"
    return ResolvedModel(uri=ZERO_SHOT, name=name, card=zero_shot_card(mapping), keras_bytes=b"")


#: Tracking URI schemes MLflow builds a store for (its registry in
#: ``mlflow.tracking._tracking_service.utils``); plugins add theirs as entry points.
_TRACKING_SCHEMES = (
    "sqlite",
    "postgresql",
    "mysql",
    "mssql",
    "http",
    "https",
    "databricks",
    "databricks-uc",
    "uc",
    "file",
)
#: Seconds the first request to a tracking server may take; it is not retried.
_PROBE_TIMEOUT_S = 5
#: Bounds on every later MLflow HTTP request unless the user set them: MLflow's own defaults
#: (7 retries, backoff factor 2, 120 s) let a server that 500s hold a job for minutes.
_HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


def _tracking_scheme(uri: str) -> str:
    """``sqlite:///x`` → ``sqlite``, ``postgresql+psycopg2://…`` → ``postgresql``; a local
    path (``mlruns``, ``C:\\mlruns``) → ``file``."""
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme.lower()
    if len(scheme) <= 1:  # no scheme, or a Windows drive letter
        return "databricks" if uri.strip() == "databricks" else "file"
    return scheme.split("+", 1)[0]


def check_tracking_scheme(uri: str) -> None:
    """Refuse, in one line, a tracking URI MLflow has no store for, and MLflow 3's
    file store unless ``MLFLOW_ALLOW_FILE_STORE`` lets it be used.

    Creates nothing and contacts nothing.

    Raises
    ------
    ParameterError
    """
    from importlib.metadata import entry_points

    scheme = _tracking_scheme(uri)
    plugins = {ep.name for ep in entry_points(group="mlflow.tracking_store")}
    if scheme not in _TRACKING_SCHEMES and scheme not in plugins:
        raise ParameterError(
            f"--tracking-uri {uri!r}: MLflow has no tracking store for {scheme}://; use "
            "sqlite:///PATH.db, http(s)://HOST:PORT, postgresql://…, mysql://… or databricks"
        )
    allowed = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() in ("true", "1")
    if scheme == "file" and not allowed:
        raise ParameterError(
            f"--tracking-uri {uri!r}: MLflow 3 refuses its file store; use sqlite:///PATH.db "
            "(or set MLFLOW_ALLOW_FILE_STORE=true)"
        )


def check_tracking_uri(uri: str) -> None:
    """Fail fast, in one line, when the tracking URI is unusable.

    Checks the scheme (:func:`check_tracking_scheme`); for an HTTP server, that it answers
    ``/health`` and a real API request (search one experiment) within a few seconds,
    without retries, so a server that errors or hangs is named before any work starts.
    Later MLflow requests of this process get bounded timeouts and retries
    (``MLFLOW_HTTP_REQUEST_*``, unless already set).

    Raises
    ------
    ParameterError
    """
    check_tracking_scheme(uri)
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(
            uri.rstrip("/") + "/health", timeout=_PROBE_TIMEOUT_S
        ) as response:
            if response.status != 200:
                raise ParameterError(
                    f"MLflow tracking server at {uri} answered {response.status} on /health"
                )
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ParameterError(f"MLflow tracking server at {uri} is unreachable ({reason})") from exc
    for key, value in _HTTP_BOUNDS.items():
        os.environ.setdefault(key, value)
    _probe_api(uri)


def _probe_api(uri: str) -> None:
    """One real request through MLflow's client (its credentials, TLS settings), with a
    short timeout and no retries: ``/health`` answers even where the API fails."""
    import mlflow
    from mlflow.exceptions import MlflowException

    probe = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(_PROBE_TIMEOUT_S),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }
    saved = {key: os.environ.get(key) for key in probe}
    os.environ.update(probe)  # MLflow reads these at each request
    try:
        mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except (MlflowException, OSError) as exc:
        raise ParameterError(
            f"MLflow tracking server at {uri} fails its API ({first_line(exc)})"
        ) from exc
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _model_tag(uri: str, client) -> str:
    """``models:/genre@champion`` → ``genre/3``; other URIs (``runs:/…``, MLflow 3's
    ``models:/m-…``) stay as they are."""
    if not uri.startswith("models:/"):
        return uri
    ref = uri[len("models:/") :]
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return f"{name}/{client.get_model_version_by_alias(name, alias).version}"
    name, _, version = ref.partition("/")
    if version in ("", "latest"):
        versions = client.search_model_versions(f"name='{name}'")
        if not versions:  # MLflow 3's logged model (models:/m-…), or no such name
            return uri
        version = str(max(int(v.version) for v in versions))
    return f"{name}/{version}"


def resolve(uri: str, *, tracking_uri: str) -> ResolvedModel:
    """Look up ``uri`` (``models:/name@alias``, ``models:/name/3``, ``runs:/…``, a local
    model folder), read its card and check the Keras model's real input against it.

    Raises
    ------
    ParameterError
        Unknown model or unreachable tracking server.
    ConfigMismatchError
        Not a genre model, no Keras file, or a Keras input that the card's features
        do not fit.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    check_tracking_uri(tracking_uri)
    database = sqlite_path(tracking_uri)
    if database is not None and not database.is_file():
        # MLflow would create an empty database to look the model up in: label must
        # create nothing when the model cannot be found.
        raise ParameterError(
            f"model {uri!r} not found: there is no MLflow database at {database} "
            "(run jobs.tune first, or pass --tracking-uri)"
        )
    mlflow.set_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(tracking_uri)
    try:
        tag = _model_tag(uri, client)
        with tempfile.TemporaryDirectory() as d:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, tracking_uri=tracking_uri, dst_path=d
                )
            )
            # Read from the copy: mlflow.models.get_model_info downloads MLmodel once more,
            # into a temp folder it never removes (one left in /tmp per label run).
            metadata = mlflow.models.Model.load(local / "MLmodel").metadata
            keras_files = sorted(local.rglob("*.keras"))
            blob = keras_files[0].read_bytes() if keras_files else b""
    except (MlflowException, OSError) as exc:
        raise ParameterError(
            f"model {uri!r} not found at {tracking_uri}: {first_line(exc)}"
        ) from exc
    card = ModelCard.from_metadata((metadata or {}).get(METADATA_KEY), source=f"model {uri!r}")
    if not blob:
        raise ConfigMismatchError(f"model {uri!r} has no Keras model file")
    check_input(card, blob, source=f"model {uri!r}")
    return ResolvedModel(uri=uri, name=tag, card=card, keras_bytes=blob)


def check_input(card: ModelCard, keras_bytes: bytes, *, source: str = "model") -> None:
    """Refuse a Keras model whose input layer does not take the card's features.

    Raises
    ------
    ConfigMismatchError
    """
    actual = keras_input_shape(keras_bytes)
    expected = card.input_shape
    fits = len(actual) == len(expected) and all(
        a in (-1, e) for a, e in zip(actual, expected, strict=True)
    )
    if not fits:
        raise ConfigMismatchError(
            f"{source}: the Keras model takes input {actual} but its card's features "
            f"{'+'.join(card.features)} with feature config {card.feature_config.hash()} "
            f"give {expected}: "
            "refusing to feed it"
        )
