"""Decode any supported audio file to mono float32 at one rate, and cut it into segments.

Decoding goes through libsndfile (``soundfile``): wav, flac, ogg/vorbis/opus, mp3,
au/snd and aiff. Other containers (m4a, aac, wma, …) fall back to librosa's
``audioread`` path when a backend such as ffmpeg is installed. Resampling uses
``soxr`` (the same library librosa uses by default) and never touches numba.

Segmenting policy
-----------------
A track of ``d`` seconds gives ``floor(d / segment_seconds)`` back-to-back segments
starting at 0 s (a 30 s clip gives ten 3 s segments). The remainder shorter than
one segment is dropped; a track shorter than one segment is rejected as
``too-short``. With ``max_segments`` set (the label job), a longer track
contributes only that many segments, spread evenly from start to end, and only
those windows are decoded.

What one file may cost
----------------------
A header is checked before any sample is decoded: a sample rate outside
4 kHz–384 kHz is ``corrupt`` (a WAV whose header says 1 Hz would otherwise be
resampled to billions of samples), and a declared duration above ``max_duration_s``
(3 hours by default; ``--max-duration`` in the jobs) is ``too-long``. Whole files are
decoded a minute at a time and resampled as a stream, so memory holds the output
and one block, not the file's native-rate, multi-channel samples.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import soundfile as sf
import soxr

from genre.errors import AudioFileError, ParameterError

__all__ = [
    "SOUNDFILE_EXTENSIONS",
    "FALLBACK_EXTENSIONS",
    "AUDIO_EXTENSIONS",
    "MIN_SAMPLE_RATE",
    "MAX_SAMPLE_RATE",
    "MAX_DURATION_S",
    "Segments",
    "load",
    "segment",
    "spread_starts",
    "load_segments",
]

#: Extensions decoded by libsndfile.
SOUNDFILE_EXTENSIONS = (
    ".wav",
    ".flac",
    ".ogg",
    ".oga",
    ".opus",
    ".mp3",
    ".au",
    ".snd",
    ".aif",
    ".aiff",
    ".aifc",
)
#: Extensions decoded through librosa/audioread when a backend (ffmpeg) is present.
FALLBACK_EXTENSIONS = (".m4a", ".aac", ".wma", ".mp4")
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS + FALLBACK_EXTENSIONS

#: Peak amplitude under which a whole track counts as silent.
SILENCE_PEAK = 1e-4

#: Native sample rates a header may declare (Hz); anything else is a corrupt header.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4_000, 384_000
#: Longest track decoded by default (s): 3 hours is ~1 GB of float32 at 22.05 kHz.
MAX_DURATION_S = 3 * 3600.0
#: Whole files are read this many seconds at a time.
_BLOCK_S = 60.0

Source = str | os.PathLike | IO[bytes]

# libsndfile's parser log says "data : 176400 (should be 88178)" when the header
# promises more bytes than the file holds: the signature of a truncated file.
_HEADER_SHOULD_BE = re.compile(
    r"^\s*(?:data|Data Size|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.M
)


@dataclass(frozen=True)
class Segments:
    """Fixed-length mono segments of one track.

    Attributes
    ----------
    audio : np.ndarray [shape=(segments, samples), dtype=float32]
    start_s : np.ndarray [shape=(segments,), dtype=float32]
        Start of each segment in the original track, in seconds.
    duration_s : float
        Duration of the whole track, in seconds.
    """

    audio: np.ndarray
    start_s: np.ndarray
    duration_s: float

    def __len__(self) -> int:
        return int(self.audio.shape[0])


def _is_uri(source: Source) -> bool:
    from genre.store import is_uri

    return is_uri(source)


def _open(source: Source) -> Source:
    """Local paths pass through; ``s3://``/``gs://`` URIs open through pyarrow."""
    if isinstance(source, (str, os.PathLike)) and _is_uri(source):
        from pyarrow import fs as pafs

        filesystem, path = pafs.FileSystem.from_uri(str(source))
        return filesystem.open_input_file(path)
    return source


def _check_local(source: Source) -> None:
    if not isinstance(source, (str, os.PathLike)) or _is_uri(source):
        return
    path = Path(source)
    if not path.exists():
        raise AudioFileError("unreadable", f"{path}: no such file")
    if not os.access(path, os.R_OK):
        raise AudioFileError("unreadable", f"{path}: permission denied")
    if path.stat().st_size == 0:
        raise AudioFileError("empty", f"{path}: file is empty (0 bytes)")


def _check_declared(native_rate: int, frames: int, name: str, max_duration_s: float) -> None:
    """Refuse a header whose rate or length would make decoding unbounded."""
    if not MIN_SAMPLE_RATE <= native_rate <= MAX_SAMPLE_RATE:
        raise AudioFileError(
            "corrupt",
            f"{name}: header declares a sample rate of {native_rate} Hz, outside "
            f"{MIN_SAMPLE_RATE}–{MAX_SAMPLE_RATE} Hz (corrupt or unsupported header)",
        )
    duration_s = frames / native_rate
    if frames > 0 and duration_s > max_duration_s:
        raise AudioFileError(
            "too-long",
            f"{name}: declares {duration_s / 3600:.1f} h of audio, over the "
            f"{max_duration_s / 3600:g} h limit (raise it with --max-duration SECONDS)",
        )


def _check_header(info_log: str, name: str) -> None:
    for declared, actual in _HEADER_SHOULD_BE.findall(info_log):
        declared, actual = int(declared), int(actual)
        # 0 and 0xFFFFFFFF are "unknown length" markers of streamed writers.
        if actual < declared and declared not in (0, 0xFFFFFFFF):
            raise AudioFileError(
                "truncated",
                f"{name}: truncated (header promises {declared} data bytes, file holds {actual})",
            )


def _classify(exc: Exception, name: str) -> AudioFileError:
    text = str(exc)
    if "Format not recognised" in text or "not a regular file" in text:
        return AudioFileError("not-audio", f"{name}: not a recognised audio file")
    if "malformed" in text or "lost sync" in text or "Unspecified internal error" in text:
        return AudioFileError(
            "corrupt", f"{name}: corrupt or truncated stream ({text.split(':')[-1].strip()})"
        )
    return AudioFileError("corrupt", f"{name}: cannot decode ({text.strip()})")


@contextlib.contextmanager
def _quiet_decoder(ext: str):
    """Silence libmpg123, which prints "Note: Illegal Audio-MPEG-Header…" to the C-level
    stderr for every damaged MP3; the error we raise says it once, in one line."""
    if ext != ".mp3":
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _to_mono(block: np.ndarray) -> np.ndarray:
    return (
        block.mean(axis=1, dtype=np.float32)
        if block.ndim == 2 and block.shape[1] > 1
        else block.reshape(-1)
    )


def _resample(y: np.ndarray, *, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return np.ascontiguousarray(y, dtype=np.float32)
    return soxr.resample(y, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


def _load_fallback(
    path: str, *, sample_rate: int, max_duration_s: float
) -> tuple[np.ndarray, float]:
    import warnings

    import librosa

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # audioread cannot say the length up front: decode at most one second more
            # than the limit, which tells a too-long file without decoding all of it.
            y, _ = librosa.load(
                path, sr=sample_rate, mono=True, res_type="soxr_hq", duration=max_duration_s + 1.0
            )
    except Exception as exc:  # audioread raises a zoo of backend-specific errors
        raise AudioFileError(
            "unsupported", f"{path}: no decoder for this format ({type(exc).__name__})"
        ) from exc
    if len(y) > max_duration_s * sample_rate:
        raise AudioFileError(
            "too-long",
            f"{path}: longer than the {max_duration_s / 3600:g} h limit "
            "(raise it with --max-duration SECONDS)",
        )
    return y.astype(np.float32, copy=False), len(y) / sample_rate


def _read_whole(f: sf.SoundFile, *, name: str, sample_rate: int) -> tuple[np.ndarray, float]:
    """Decode all of ``f`` a block at a time, mixed to mono and resampled as a stream.

    soxr's stream gives the same samples as one ``soxr.resample`` call on the whole
    signal; peak memory is the output plus one block.
    """
    native_rate, declared = f.samplerate, f.frames
    block = max(1, int(_BLOCK_S * native_rate))
    stream = None
    if native_rate != sample_rate:
        stream = soxr.ResampleStream(native_rate, sample_rate, 1, dtype="float32", quality="HQ")
    pieces, read = [], 0
    while True:
        data = f.read(block, dtype="float32", always_2d=True)
        read += len(data)
        last = len(data) < block
        mono = np.ascontiguousarray(_to_mono(data), dtype=np.float32)
        pieces.append(mono if stream is None else stream.resample_chunk(mono, last=last))
        if last:
            break
    if declared > 0 and read < declared * 0.99:
        raise AudioFileError(
            "truncated", f"{name}: truncated (decoded {read} of {declared} frames)"
        )
    y = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    return np.asarray(y, dtype=np.float32), read / native_rate


def _name(source: Source) -> str:
    return (
        str(source)
        if isinstance(source, (str, os.PathLike))
        else getattr(source, "name", "<stream>")
    )


def load(
    source: Source, *, sample_rate: int = 22050, max_duration_s: float = MAX_DURATION_S
) -> tuple[np.ndarray, float]:
    """Decode a whole file to mono float32 at ``sample_rate``.

    Parameters
    ----------
    source : path, URI or binary file object
    sample_rate : int > 0
        Target rate in Hz.
    max_duration_s : float > 0
        Refuse files whose header declares more audio than this (``too-long``).

    Returns
    -------
    y : np.ndarray [shape=(samples,), dtype=float32]
    duration_s : float
        Duration in seconds.

    Raises
    ------
    AudioFileError
        With ``reason`` one of ``empty``, ``not-audio``, ``truncated``, ``corrupt``,
        ``silent``, ``unreadable``, ``unsupported``, ``too-long``.
    """
    y, duration_s, _ = _decode(
        source, sample_rate=sample_rate, windows=None, max_duration_s=max_duration_s
    )
    return y, duration_s


def _decode(
    source: Source,
    *,
    sample_rate: int,
    windows: tuple[np.ndarray, float] | None,
    max_duration_s: float,
) -> tuple[np.ndarray, float, np.ndarray | None]:
    """Decode everything (``windows=None``) or only ``(starts_s, seconds)`` windows.

    Returns ``(y, duration_s, None)`` or ``(stack of windows, duration_s, starts_s)``.
    """
    if sample_rate <= 0:
        raise ParameterError(f"sample_rate={sample_rate} must be a positive integer")
    if not max_duration_s > 0:
        raise ParameterError(f"max_duration_s={max_duration_s} must be positive")
    name = _name(source)
    _check_local(source)
    ext = os.path.splitext(name)[1].lower()
    if isinstance(source, (str, os.PathLike)) and ext in FALLBACK_EXTENSIONS:
        y, duration_s = _load_fallback(
            str(source), sample_rate=sample_rate, max_duration_s=max_duration_s
        )
        _check_silence(y, name)
        return (
            (y, duration_s, None)
            if windows is None
            else (_cut_windows(y, sample_rate, windows), duration_s, windows[0])
        )
    try:
        with _quiet_decoder(ext), sf.SoundFile(_open(source)) as f:
            native_rate, declared = f.samplerate, f.frames
            _check_declared(native_rate, declared, name, max_duration_s)
            _check_header(f.extra_info, name)
            if windows is None:
                y, duration_s = _read_whole(f, name=name, sample_rate=sample_rate)
                _check_silence(y, name)
                return y, duration_s, None
            starts_s, seconds = windows
            duration_s = declared / native_rate
            pieces = []
            want = int(round(seconds * native_rate))
            for start in starts_s:
                f.seek(int(round(start * native_rate)))
                block = f.read(want, dtype="float32", always_2d=True)
                if len(block) < want:
                    raise AudioFileError(
                        "truncated", f"{name}: truncated (short read at {start:.1f} s)"
                    )
                pieces.append(
                    _resample(_to_mono(block), from_rate=native_rate, to_rate=sample_rate)
                )
    except AudioFileError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        if isinstance(exc, PermissionError):
            raise AudioFileError("unreadable", f"{name}: permission denied") from exc
        if ext not in SOUNDFILE_EXTENSIONS and isinstance(source, (str, os.PathLike)):
            y, duration_s = _load_fallback(
                str(source), sample_rate=sample_rate, max_duration_s=max_duration_s
            )
            _check_silence(y, name)
            return (
                (y, duration_s, None)
                if windows is None
                else (_cut_windows(y, sample_rate, windows), duration_s, windows[0])
            )
        raise _classify(exc, name) from exc
    n = int(round(seconds * sample_rate))
    audio = np.stack([_fit(p, n) for p in pieces])
    _check_silence(audio, name)
    return audio, duration_s, starts_s


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad by the sample or two a resampler may add or drop."""
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


def _cut_windows(y: np.ndarray, sample_rate: int, windows: tuple[np.ndarray, float]) -> np.ndarray:
    starts_s, seconds = windows
    n = int(round(seconds * sample_rate))
    return np.stack([_fit(y[int(round(s * sample_rate)) :][:n], n) for s in starts_s])


def _check_silence(y: np.ndarray, name: str) -> None:
    if y.size == 0:
        raise AudioFileError("empty", f"{name}: no audio frames")
    if not np.all(np.isfinite(y)):
        raise AudioFileError("corrupt", f"{name}: decoded samples are not finite")
    if float(np.max(np.abs(y))) < SILENCE_PEAK:
        raise AudioFileError("silent", f"{name}: silent (peak below {SILENCE_PEAK:g})")


def segment(y: np.ndarray, *, sample_rate: int, segment_seconds: float = 3.0) -> np.ndarray:
    """Cut ``y`` into back-to-back segments, dropping the remainder.

    Parameters
    ----------
    y : np.ndarray [shape=(samples,)]
    sample_rate : int > 0
    segment_seconds : float > 0

    Returns
    -------
    segments : np.ndarray [shape=(floor(samples / segment_samples), segment_samples), dtype=float32]
        A view of ``y`` when possible; empty first axis for a short ``y``.
    """
    if not isinstance(y, np.ndarray) or y.ndim != 1:
        raise ParameterError("y must be a one-dimensional numpy array")
    n = int(round(segment_seconds * sample_rate))
    if n <= 0:
        raise ParameterError(
            f"segment_seconds={segment_seconds} gives no samples at {sample_rate} Hz"
        )
    count = len(y) // n
    return np.asarray(y[: count * n], dtype=np.float32).reshape(count, n)


def spread_starts(duration_s: float, *, segment_seconds: float, max_segments: int) -> np.ndarray:
    """Starts (s) of ``min(max_segments, available)`` segments spread evenly over a track.

    With fewer than ``max_segments`` whole segments available this is every segment,
    back to back from 0 s. Otherwise the starts run evenly from 0 s to the last whole
    segment's start, on the segment grid.
    """
    available = int(duration_s // segment_seconds)
    if available <= max_segments:
        return np.arange(available, dtype=np.float64) * segment_seconds
    index = np.round(np.linspace(0, available - 1, max_segments)).astype(np.int64)
    return np.unique(index).astype(np.float64) * segment_seconds


def load_segments(
    source: Source,
    *,
    sample_rate: int = 22050,
    segment_seconds: float = 3.0,
    max_segments: int | None = None,
    max_duration_s: float = MAX_DURATION_S,
) -> Segments:
    """Decode a file and cut it into segments, following the module's segmenting policy.

    Parameters
    ----------
    source : path, URI or binary file object
    sample_rate : int > 0
    segment_seconds : float > 0
    max_segments : int > 0 or None
        Keep at most this many segments, spread evenly over the track; for long
        tracks only those windows are decoded.
    max_duration_s : float > 0
        Refuse files whose header declares more audio than this (``too-long``).

    Returns
    -------
    Segments
        ``audio`` of shape ``(segments, segment_samples)``.

    Raises
    ------
    AudioFileError
        As :func:`load`, plus ``too-short`` for a track shorter than one segment.
    """
    if max_segments is not None and max_segments <= 0:
        raise ParameterError(f"max_segments={max_segments} must be a positive integer")
    if max_segments is not None and isinstance(source, (str, os.PathLike)) and not _is_uri(source):
        # Long tracks: decode only the windows we keep (a 2-hour mix stays cheap).
        try:
            with _quiet_decoder(os.path.splitext(str(source))[1].lower()):
                info = sf.info(str(source))
            rate, frames = info.samplerate, info.frames
        except Exception:  # unknown to libsndfile: decode the whole file below
            rate, frames = 0, 0
        if rate:
            _check_declared(rate, frames, _name(source), max_duration_s)
        duration = frames / rate if rate else 0.0
        if duration > segment_seconds * max_segments * 2:
            starts = spread_starts(
                duration, segment_seconds=segment_seconds, max_segments=max_segments
            )
            audio, duration_s, _ = _decode(
                source,
                sample_rate=sample_rate,
                windows=(starts, segment_seconds),
                max_duration_s=max_duration_s,
            )
            return Segments(audio=audio, start_s=starts.astype(np.float32), duration_s=duration_s)
    y, duration_s = load(source, sample_rate=sample_rate, max_duration_s=max_duration_s)
    segments = segment(y, sample_rate=sample_rate, segment_seconds=segment_seconds)
    if len(segments) == 0:
        raise AudioFileError(
            "too-short",
            f"{_name(source)}: too short ({duration_s:.2f} s < one {segment_seconds:g} s segment)",
        )
    starts = np.arange(len(segments), dtype=np.float64) * segment_seconds
    if max_segments is not None and len(segments) > max_segments:
        keep = np.round(np.linspace(0, len(segments) - 1, max_segments)).astype(np.int64)
        segments, starts = segments[keep], starts[keep]
    return Segments(
        audio=np.ascontiguousarray(segments),
        start_s=starts.astype(np.float32),
        duration_s=duration_s,
    )
