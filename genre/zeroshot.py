"""Genres with no training at all: musicnn's tags mapped to a taxonomy.

A mapping (TOML) lists, for each genre, tags of either musicnn vocabulary, prefixed with
the model that knows them (``msd:Hip-Hop``, ``mtt:classical``; the wheel's VGG taggers,
with the same vocabularies, as ``vgg_msd:Hip-Hop``, ``vgg_mtt:classical``), and how a genre's tags
combine (``max`` or ``mean`` of their probabilities). The shipped default,
``genre/data/mappings/gtzan10.toml``, covers the ten GTZAN genres as far as the
vocabularies allow (reggae is in neither; classical only in MTT's); a user writes their
own to label into their own taxonomy (``electronic``, ``latin``, ``soul/rnb``…).

Per segment a genre's score is its tags' combined probability; :func:`genre_scores`
normalises the scores to sum to one so they read like a classifier's probabilities, and
the label pipeline aggregates segments into tracks as for any model. A zero-shot model is
a :class:`genre.card.ModelCard` with no trained weights (:func:`genre.card.zero_shot_card`);
:func:`fit_zero_shot_calibration` fits its calibration on tracks the label pipeline scored
(:func:`genre.labeling.calibrate_zero_shot` runs it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from genre.calibration import Calibration, fit_calibration
from genre.corpus import check_genre_names
from genre.errors import ParameterError
from genre.pretrained import TAGS

__all__ = [
    "DEFAULT_MAPPING",
    "COMBINE",
    "TagMapping",
    "load_mapping",
    "genre_scores",
    "fit_zero_shot_calibration",
]

DEFAULT_MAPPING = "gtzan10"
COMBINE = ("max", "mean")
#: Prefix of a tag in a mapping → the extractor whose tag it is (canonical order).
_VOCABULARIES = {
    "msd": "musicnn_msd",
    "mtt": "musicnn_mtt",
    "vgg_msd": "vgg_msd",
    "vgg_mtt": "vgg_mtt",
}


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
        """The pretrained models whose tags the mapping reads, in canonical order."""
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
            f"{source}: genre {genre!r}: {text!r} must be 'msd:<tag>' or 'mtt:<tag>' "
            "(musicnn's tags), or 'vgg_msd:<tag>' or 'vgg_mtt:<tag>' (the VGG taggers')"
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
        ``extractor → (segments, 50)`` tag probabilities (``musicnn_msd``, ``musicnn_mtt``,
        and the VGG taggers' when the mapping reads them).
    labels : sequence of str, optional
        The genres to score, in this order (a trained model's labels): a label the
        mapping does not name scores 0, a genre of the mapping not among them is left
        out. Default: the mapping's genres.

    Returns
    -------
    np.ndarray [shape=(segments, genres), dtype=float32]
        Rows sum to one (uniform where no tag of any genre fires).
    """
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


def fit_zero_shot_calibration(
    probs: np.ndarray,
    genres: Sequence[str],
    *,
    labels: Sequence[str],
    uncovered: Sequence[str] = (),
    source: str = "--calibrate-on",
) -> tuple[Calibration, int]:
    """A zero-shot model's calibration, fitted on tracks it labelled whose genres are known.

    The temperature, the review threshold, the genre sets (at coverage 0.9; label may ask
    for another) and the out-of-taxonomy threshold are fitted as tune fits a head's on its
    validation tracks (:func:`genre.calibration.fit_calibration`).
    Tracks of a genre no tag covers (reggae in ``gtzan10``) are left out of the fit.

    Parameters
    ----------
    probs : np.ndarray [shape=(tracks, labels)]
        The tracks' zero-shot probabilities (``p_<label>`` of the results table).
    genres : sequence of str [shape=(tracks,)]
        Each track's true genre, one of ``labels``.
    labels : the model's genres, in ``probs``' column order
    uncovered : genres the mapping has no tag for
    source : names the tracks in error messages

    Returns
    -------
    calibration : Calibration
    left_out : int
        Tracks of ``uncovered`` genres, not fitted on.

    Raises
    ------
    ParameterError
        Fewer than five tracks of covered genres.
    """
    keep = ~np.isin(np.asarray(genres, dtype=object), list(uncovered))
    left_out = int((~keep).sum())
    if keep.sum() < 5:
        raise ParameterError(
            f"{source}: only {int(keep.sum())} tracks of genres the mapping covers "
            f"({left_out} of {', '.join(sorted(uncovered))}, which no tag covers, left out)"
        )
    # A genre no tag covers scores 0 on every track: its tracks can only be wrong, and
    # fitted on, they drive the temperature to its bound (every genre near 1/K).
    p = np.asarray(probs, np.float64)[keep]
    y = np.array([list(labels).index(g) for g in np.asarray(genres)[keep]], dtype=np.int64)
    fitted = fit_calibration(
        p / p.sum(axis=1, keepdims=True), y, ood_method="entropy", fitted_on=f"tracks of {source}"
    )
    return fitted, left_out
