"""genre: music genre classification at scale on Ray.

The library behind the jobs in ``jobs/``: everything here runs without a Ray
cluster; the Ray wrappers are thin layers in :mod:`genre.extraction`,
:mod:`genre.tuning` and :mod:`genre.labeling`.
"""

from genre.config import FEATURES, GENRES, FeatureConfig
from genre.errors import AudioFileError, ConfigMismatchError, GenreError, ParameterError

__all__ = [
    "FEATURES",
    "GENRES",
    "FeatureConfig",
    "GenreError",
    "ParameterError",
    "AudioFileError",
    "ConfigMismatchError",
]
__version__ = "0.1.0"
