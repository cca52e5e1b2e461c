"""The one error root of genre and its few subclasses.

Command-line jobs turn any :class:`GenreError` into one line on stderr and exit
code 2; every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = ["GenreError", "ParameterError", "AudioFileError", "ConfigMismatchError", "first_line"]


class GenreError(Exception):
    """Root of every error genre raises on purpose."""


class ParameterError(GenreError):
    """A malformed argument: bad path, unknown name, out-of-range value."""


class AudioFileError(GenreError):
    """A file that cannot be turned into segments.

    ``reason`` is a short, stable keyword (``empty``, ``truncated``, ``not-audio``,
    ``too-short``, ``silent``, ``unreadable``, ``unsupported``) used to group
    failures in summaries; the message says more.
    """

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class ConfigMismatchError(GenreError):
    """Features computed with one configuration offered where another is required."""


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message (the class name when it has none): library
    errors (MLflow, SQLAlchemy) carry pages of detail under a one-line cause."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
