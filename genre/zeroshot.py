"""Genres with no training at all: musicnn's tags mapped to a taxonomy.

A mapping (TOML) lists, for each genre, tags of either musicnn vocabulary, prefixed with
the model that knows them (``msd:Hip-Hop``, ``mtt:classical``), and how a genre's tags
combine (``max`` or ``mean`` of their probabilities). The shipped default,
``genre/data/mappings/gtzan10.toml``, covers the ten GTZAN genres as far as the
vocabularies allow (reggae is in neither; classical only in MTT's); a user writes their
own to label into their own taxonomy (``electronic``, ``latin``, ``soul/rnb``…).

Per segment a genre's score is its tags' combined probability; :func:`genre_scores`
normalises the scores to sum to one so they read like a classifier's probabilities, and
the label pipeline aggregates segments into tracks as for any model. A zero-shot model is
a :class:`genre.card.ModelCard` with no trained weights (:func:`zero_shot_card`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from genre.config import FeatureConfig
from genre.corpus import check_genre_names
from genre.errors import ParameterError

__all__ = [
    "DEFAULT_MAPPING",
    "COMBINE",
    "TagMapping",
    "load_mapping",
    "genre_scores",
    "zero_shot_card",
    "zero_shot_model",
    "calibrate_zero_shot",
]

DEFAULT_MAPPING = "gtzan10"
COMBINE = ("max", "mean")
_VOCABULARIES = {"msd": "musicnn_msd", "mtt": "musicnn_mtt"}


@dataclass(frozen=True)
class TagMapping:
    """Genre → musicnn tags, and how they combine.

    Attributes
    ----------
    name : str
    combine : {"max", "mean"}
    genres : dict
        ``genre → ((extractor, tag), …)``, e.g. ``{"jazz": (("musicnn_msd", "jazz"),)}``.
    """

    name: str
    combine: str
    genres: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from genre.pretrained import TAGS

        if self.combine not in COMBINE:
            raise ParameterError(
                f"mapping {self.name!r}: combine={self.combine!r}: choose one of max, mean"
            )
        if len(self.genres) < 2:
            raise ParameterError(
                f"mapping {self.name!r} names {len(self.genres)} genre(s): need at least two"
            )
        for genre, tags in self.genres.items():
            for extractor, tag in tags:
                if tag not in TAGS[extractor]:
                    raise ParameterError(
                        f"mapping {self.name!r}: genre {genre!r} names {tag!r}, which is not "
                        f"a tag of {extractor} (see genre.pretrained.TAGS)"
                    )
        if not any(self.genres.values()):
            raise ParameterError(f"mapping {self.name!r} lists no tag at all")

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.genres)

    @property
    def extractors(self) -> tuple[str, ...]:
        """The musicnn models whose tags the mapping reads, in canonical order."""
        used = {extractor for tags in self.genres.values() for extractor, _ in tags}
        return tuple(e for e in _VOCABULARIES.values() if e in used)

    @property
    def uncovered(self) -> tuple[str, ...]:
        """Genres with no tag: the mapping can never answer them."""
        return tuple(g for g, tags in self.genres.items() if not tags)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "combine": self.combine,
            "genres": {
                g: [f"{_prefix(e)}:{t}" for e, t in tags] for g, tags in self.genres.items()
            },
        }

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def from_dict(cls, d: Mapping, *, source: str = "mapping") -> TagMapping:
        genres = d.get("genres")
        if not isinstance(genres, Mapping):
            raise ParameterError(f'{source}: needs a [genres] table of genre = ["msd:tag", …]')
        for genre, tags in genres.items():
            if not isinstance(tags, list):
                raise ParameterError(
                    f'{source}: genre {genre!r} = {tags!r} must be a list of tags: ["msd:tag", …]'
                )
        check_genre_names(genres, source=source)
        parsed = {
            str(g): tuple(_parse_tag(t, source=source, genre=str(g)) for t in tags)
            for g, tags in genres.items()
        }
        return cls(
            name=str(d.get("name") or source), combine=str(d.get("combine", "max")), genres=parsed
        )


def _prefix(extractor: str) -> str:
    return next(k for k, v in _VOCABULARIES.items() if v == extractor)


def _parse_tag(text: object, *, source: str, genre: str) -> tuple[str, str]:
    prefix, _, tag = str(text).partition(":")
    if prefix not in _VOCABULARIES or not tag:
        raise ParameterError(
            f"{source}: genre {genre!r}: {text!r} must be 'msd:<tag>' or 'mtt:<tag>'"
        )
    return _VOCABULARIES[prefix], tag


def load_mapping(path: str | None = None) -> TagMapping:
    """The mapping in ``path`` (TOML), or the shipped default when ``None``.

    Raises
    ------
    ParameterError
        Missing or unreadable file, unknown tags, fewer than two genres.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    if path is None:
        text = (
            resources.files("genre") / "data" / "mappings" / f"{DEFAULT_MAPPING}.toml"
        ).read_text()
        source = DEFAULT_MAPPING
    else:
        if not Path(path).is_file():
            raise ParameterError(f"--mapping {path!r} does not exist")
        source = Path(path).stem
        try:
            text = Path(path).read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition
            raise ParameterError(
                f"--mapping {path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                "save it as UTF-8"
            ) from exc
        except OSError as exc:
            raise ParameterError(f"--mapping {path}: cannot be read ({exc.strerror})") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ParameterError(f"--mapping {path}: not valid TOML ({exc})") from exc
    return TagMapping.from_dict({"name": source, **data}, source=source)


def genre_scores(
    mapping: TagMapping,
    tags: Mapping[str, np.ndarray],
    *,
    labels: tuple[str, ...] | list[str] | None = None,
) -> np.ndarray:
    """Per-segment genre probabilities from tag probabilities.

    Parameters
    ----------
    mapping : TagMapping
    tags : dict
        ``extractor → (segments, 50)`` tag probabilities (``musicnn_msd``, ``musicnn_mtt``).
    labels : sequence of str, optional
        The genres to score, in this order (a trained model's labels): a label the
        mapping does not name scores 0, a genre of the mapping not among them is left
        out. Default: the mapping's genres.

    Returns
    -------
    np.ndarray [shape=(segments, genres), dtype=float32]
        Rows sum to one (uniform where no tag of any genre fires).
    """
    from genre.pretrained import TAGS

    labels = mapping.labels if labels is None else tuple(labels)
    n = len(next(iter(tags.values())))
    scores = np.zeros((n, len(labels)), np.float32)
    reduce = np.max if mapping.combine == "max" else np.mean
    for j, genre in enumerate(labels):
        members = mapping.genres.get(genre, ())
        if members:
            columns = [tags[e][:, TAGS[e].index(t)] for e, t in members]
            scores[:, j] = reduce(np.stack(columns, axis=1), axis=1)
    total = scores.sum(axis=1, keepdims=True)
    uniform = np.full_like(scores, 1.0 / scores.shape[1])
    return np.where(total > 0, scores / np.maximum(total, 1e-12), uniform).astype(np.float32)


def zero_shot_card(mapping: TagMapping, *, cfg: FeatureConfig | None = None):
    """A model card with no trained weights: the mapping over musicnn's tag columns."""
    from genre.card import ModelCard

    features = tuple(f"{e}_tags" for e in mapping.extractors)
    cfg = (cfg or FeatureConfig()).with_features(features)
    return ModelCard(
        labels=mapping.labels,
        features=features,
        feature_config=cfg,
        model_config={
            "kind": "zero-shot",
            "mapping": mapping.to_dict(),
            "mapping_hash": mapping.hash(),
        },
        aggregate="mean",
        split_method="none",
        training={"zero_shot": True, "uncovered_genres": list(mapping.uncovered)},
    )


def zero_shot_model(mapping: TagMapping):
    """A model to label with (:class:`genre.card.ResolvedModel`) that is the mapping alone:
    no Keras bytes, named ``zero-shot/<mapping>-<hash>``."""
    from genre.card import ResolvedModel

    name = f"zero-shot/{mapping.name}-{mapping.hash()[:8]}"
    return ResolvedModel(uri="zero-shot", name=name, card=zero_shot_card(mapping), keras_bytes=b"")


def calibrate_zero_shot(model, folder: str, *, settings=None):
    """The zero-shot ``model`` with a calibration fitted on a small labelled folder.

    ``folder`` holds ``<genre>/<file>`` for genres of the mapping (at least five tracks
    in all); they are labelled zero-shot, and the temperature, the review threshold and
    the out-of-taxonomy threshold are fitted on them as tune fits a head's on its
    validation tracks (:func:`genre.calibration.fit_calibration`); tracks of a genre no tag
    covers (reggae in ``gtzan10``) are left out of the fit. The returned model's
    name gains ``-cal<hash>``: labels with and without a calibration do not mix in one
    output folder.

    Raises
    ------
    ParameterError
        No such folder, fewer than five labelled tracks, a genre the mapping does not
        name, or fewer than five of the tracks could be labelled.
    """
    import dataclasses
    import tempfile

    from genre.calibration import fit_calibration
    from genre.card import ResolvedModel
    from genre.corpus import list_tracks
    from genre.labeling import LabelSettings, run_label
    from genre.results import read_results

    card = model.card
    tracks = [t for t in list_tracks(folder).tracks if t.genre is not None]
    unknown = sorted({t.genre for t in tracks} - set(card.labels))
    if unknown:
        raise ParameterError(
            f"--calibrate-on {folder}: genre folder(s) {', '.join(unknown)} are not genres of "
            f"the mapping ({', '.join(card.labels)})"
        )
    if len(tracks) < 5:
        raise ParameterError(
            f"--calibrate-on {folder}: found {len(tracks)} labelled tracks "
            "(<folder>/<genre>/<file>); need at least 5"
        )
    base = settings or LabelSettings()
    settings = dataclasses.replace(
        base, tags=0, csv=False, retry_errors=False, new_model_ok=False, min_confidence=None
    )
    genre_of = {t.path: t.genre for t in tracks}
    with tempfile.TemporaryDirectory(prefix="genre-calibrate-") as d:
        listing = Path(d) / "calibration.txt"
        listing.write_text("".join(f"{t.path}\n" for t in tracks))
        run_label(str(listing), f"{d}/labels", model=model, settings=settings)
        rows = read_results(f"{d}/labels")
    rows = rows[rows["error"].isna()]
    if len(rows) < 5:
        raise ParameterError(
            f"--calibrate-on {folder}: only {len(rows)} of {len(tracks)} tracks could be labelled"
        )
    # A genre no tag covers scores 0 on every track: its tracks can only be wrong, and
    # fitted on, they drive the temperature to its bound (every genre near 1/K).
    uncovered = set(card.training.get("uncovered_genres", ()))
    uncovered_rows = rows["path"].map(genre_of).isin(uncovered)
    left_out = int(uncovered_rows.sum())
    rows = rows[~uncovered_rows]
    if len(rows) < 5:
        raise ParameterError(
            f"--calibrate-on {folder}: only {len(rows)} tracks of genres the mapping covers "
            f"({left_out} of {', '.join(sorted(uncovered))}, which no tag covers, left out)"
        )
    probs = rows[[f"p_{g}" for g in card.labels]].to_numpy(np.float64)
    y = np.array([card.labels.index(genre_of[p]) for p in rows["path"]], dtype=np.int64)
    fitted = fit_calibration(probs / probs.sum(axis=1, keepdims=True), y, ood_method="entropy")
    digest = hashlib.sha256(json.dumps(fitted.to_dict(), sort_keys=True).encode()).hexdigest()
    training = {
        **card.training,
        "calibrated_on": str(folder),
        "calibration_tracks": len(rows),
        "calibration_left_out": left_out,
    }
    card = dataclasses.replace(card, calibration=fitted.to_dict(), training=training)
    return ResolvedModel(
        uri=model.uri, name=f"{model.name}-cal{digest[:6]}", card=card, keras_bytes=b""
    )
