"""Genre arrangements: one synthetic track of one of the ten genres.

The arrangers themselves live in :mod:`genre.synth.arrange_acoustic` (blues,
classical, country, jazz) and :mod:`genre.synth.arrange_electric` (disco, hip-hop,
metal, pop, reggae, rock); this module validates the request, seeds the track and
hands it to the genre's arranger.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from genre.config import GENRES
from genre.errors import ParameterError
from genre.synth.arrange_acoustic import _blues, _classical, _country, _jazz
from genre.synth.arrange_electric import _disco, _hiphop, _metal, _pop, _reggae, _rock
from genre.synth.render import _check_render_args, _new_track, _Track

__all__ = ["render_track"]

_ARRANGERS: dict[str, Callable[[_Track], np.ndarray]] = {
    "blues": _blues,
    "classical": _classical,
    "country": _country,
    "disco": _disco,
    "hiphop": _hiphop,
    "jazz": _jazz,
    "metal": _metal,
    "pop": _pop,
    "reggae": _reggae,
    "rock": _rock,
}


def render_track(
    genre: str, *, index: int, seed: int = 0, seconds: float = 30.0, sample_rate: int = 22050
) -> np.ndarray:
    """Render one synthetic track of ``genre``.

    Parameters
    ----------
    genre : str
        One of :data:`genre.config.GENRES`.
    index : int >= 0
        Track number within the genre; each index is a different piece.
    seed : int
        Corpus seed; the same ``(genre, index, seed)`` gives the same track.
    seconds : float > 0
        Duration in seconds.
    sample_rate : int >= 8000
        Rate in Hz to render at. The music does not depend on it.

    Returns
    -------
    y : np.ndarray [shape=(samples,), dtype=float32]
        Mono audio in [-1, 1], ``samples = round(seconds * sample_rate)``.

    Raises
    ------
    ParameterError
        For an unknown genre or an out-of-range argument.
    """
    if genre not in GENRES:
        raise ParameterError(f"genre={genre!r} is not one of {', '.join(GENRES)}")
    _check_render_args(index=index, seed=seed, seconds=seconds, sample_rate=sample_rate)
    key = f"genre.synth:{genre}:{int(index)}:{int(seed)}"
    tr = _new_track(key, seconds=seconds, sample_rate=sample_rate)
    return _ARRANGERS[genre](tr)
