"""Decode any audio file a music player plays to mono float32 at one rate, and cut it into segments.

Two decoders
------------
libsndfile (``soundfile``) reads the PCM containers (wav, aiff, au/snd), whose lengths
follow from their byte counts: exact frame counts and sample-exact seeks, the fastest
path. FFmpeg, through PyAV (its wheels bundle FFmpeg's libraries: nothing to install
by hand), reads everything compressed — mp3, ogg/vorbis, opus, flac, m4a/aac/alac,
wma, webm, mka — and any file libsndfile refuses. FLAC goes to FFmpeg too: a FLAC
whose total-samples field is wrong makes libsndfile stop early without an error.
Resampling uses ``soxr`` (the library librosa uses by default) and never touches numba.

Lengths come from what decodes
------------------------------
A compressed file's length in its header is an estimate (an mp3 without a Xing/LAME
header has its length computed from the first frame's bit rate and the file size, tags
included). Segment positions therefore come from the samples actually decoded, never
from a header alone. A file whose tail (or a stretch in the middle) does not decode is
used as far as it decodes, with a :class:`DecodeWarning`:

``partial``
    the decoder stopped, or skipped damaged packets, before the end
    (``decoded 220.0 of 248.5 s (…)``);
``estimated-length``
    nothing failed, but clearly less decoded than the header said
    (``header length was an estimate: it said 32.5 s, 32.1 s decoded``).

A file with less than one segment of decodable audio is ``truncated`` when its header
promised more, ``too-short`` when it did not.

Segmenting policy
-----------------
A track of ``d`` seconds gives ``floor(d / segment_seconds)`` back-to-back segments
starting at 0 s (a 30 s clip gives ten 3 s segments). The remainder shorter than
one segment is dropped. With ``max_segments`` set (the label job), a longer track
contributes only that many segments, spread evenly from start to end, and only those
windows are resampled: libsndfile seeks to each window; FFmpeg counts the file's
packets first (no decoding) and then decodes once from the start, keeping the windows'
samples, so every window starts where its ``start_s`` says, to the sample, on every
format.

What one file may cost
----------------------
Before any sample is decoded: the file must be a regular file (a named pipe or a device
is never opened), its sample rate within 4 kHz–384 kHz (a WAV whose header says 1 Hz
would otherwise be resampled to billions of samples) and its declared duration at most
``max_duration_s`` (3 hours by default; ``--max-duration`` in the jobs), ``too-long``
otherwise; decoding stops as soon as more than that has decoded, whatever the header
said. Whole files are decoded and resampled as a stream, a minute at a time, so memory
holds the output and one block, not the file's native-rate, multi-channel samples.
Samples that are not finite, or far outside audio's ±1 range, make the file ``corrupt``:
every feature computed from a decoded file is finite.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import numpy as np
import soundfile as sf
import soxr

from genre.errors import AudioFileError, ParameterError

__all__ = [
    "SOUNDFILE_EXTENSIONS",
    "FFMPEG_EXTENSIONS",
    "AUDIO_EXTENSIONS",
    "MIN_SAMPLE_RATE",
    "MAX_SAMPLE_RATE",
    "MAX_DURATION_S",
    "MAX_PEAK",
    "DecodeWarning",
    "Segments",
    "load",
    "segment",
    "spread_starts",
    "load_segments",
]

#: Extensions decoded by libsndfile (FFmpeg takes over when libsndfile refuses a file).
SOUNDFILE_EXTENSIONS = (".wav", ".wave", ".au", ".snd", ".aif", ".aiff", ".aifc")
#: Extensions decoded by FFmpeg (PyAV).
FFMPEG_EXTENSIONS = (
    ".flac",
    ".mp3",
    ".ogg",
    ".oga",
    ".opus",
    ".m4a",
    ".m4b",
    ".mp4",
    ".aac",
    ".alac",
    ".caf",
    ".wma",
    ".asf",
    ".webm",
    ".mka",
)
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS + FFMPEG_EXTENSIONS

#: Peak amplitude under which a whole track counts as silent.
SILENCE_PEAK = 1e-4
#: Peak amplitude above which decoded samples are corrupt data, not audio: full scale
#: is 1.0 and float files rarely exceed a few units; 1e20 would overflow every power.
MAX_PEAK = 1e3

#: Native sample rates a header may declare (Hz); anything else is a corrupt header.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4_000, 384_000
#: Longest track decoded by default (s): 3 hours is ~1 GB of float32 at 22.05 kHz.
MAX_DURATION_S = 3 * 3600.0
#: Whole files are read this many seconds at a time.
_BLOCK_S = 60.0
#: A decoded length this much under the header's (s, or this fraction of it) earns a
#: warning; an mp3 decoder trims up to ~2 frames (0.05 s) of encoder delay and padding.
_SHORT_S, _SHORT_FRACTION = 0.2, 0.005
#: FFmpeg skips a damaged packet and goes on; this many in a row means the rest is gone.
_MAX_BAD_PACKETS = 50
#: Bytes read at a time from an object store (one ranged GET each): a minute of CD audio
#: is some forty requests, and a 3 s window of 22.05 kHz PCM (132 kB) one or two.
_URI_READ_BYTES = 256 * 1024

Source = str | os.PathLike | IO[bytes]

# libsndfile's parser log says "data : 176400 (should be 88178)" when the header
# promises more bytes than the file holds: the signature of a truncated file.
_HEADER_SHOULD_BE = re.compile(
    r"^\s*(?:data|Data Size|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", re.M
)


@dataclass(frozen=True)
class DecodeWarning:
    """Less audio decoded than the file's header promised; what decoded was used.

    Attributes
    ----------
    kind : str
        ``partial`` (the decoder stopped or skipped damaged stretches) or
        ``estimated-length`` (nothing failed; the header's length was an estimate).
    message : str
        One line for people, e.g. ``decoded 220.0 of 248.5 s (…)``.
    """

    kind: str
    message: str


@dataclass(frozen=True)
class Segments:
    """Fixed-length mono segments of one track.

    Attributes
    ----------
    audio : np.ndarray [shape=(segments, samples), dtype=float32]
    start_s : np.ndarray [shape=(segments,), dtype=float32]
        Start of each segment in the decoded track, in seconds.
    duration_s : float
        Duration of what decoded, in seconds.
    warning : DecodeWarning or None
        Set when less decoded than the header promised.
    """

    audio: np.ndarray
    start_s: np.ndarray
    duration_s: float
    warning: DecodeWarning | None = None

    def __len__(self) -> int:
        return int(self.audio.shape[0])


# --------------------------------------------------------------------------- opening


def _is_uri(source: Source) -> bool:
    # As genre.store.is_uri: "s3://…", "gs://…", "file://…" (the store sits above audio).
    return "://" in str(source)


def _name(source: Source) -> str:
    return (
        str(source)
        if isinstance(source, (str, os.PathLike))
        else getattr(source, "name", "<stream>")
    )


def _open(source: Source) -> Source:
    """Local paths pass through; ``s3://``/``gs://`` URIs open through pyarrow, as a
    random-access file behind a read buffer.

    Every read of pyarrow's object-store file is one ranged GET, and the decoders read
    a few bytes (a header field) or 8 KiB (libsndfile's PCM) at a time: unbuffered, a
    minute of CD audio is over a thousand requests. Through a buffer of
    :data:`_URI_READ_BYTES` it is about forty, and a seek (the label job's windows)
    still fetches only the ranges around where it lands.
    """
    if isinstance(source, (str, os.PathLike)) and _is_uri(source):
        from pyarrow import fs as pafs

        filesystem, path = pafs.FileSystem.from_uri(str(source))
        return io.BufferedReader(filesystem.open_input_file(path), buffer_size=_URI_READ_BYTES)
    return source


_NOT_REGULAR = {
    stat.S_IFIFO: "a named pipe",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


def _check_local(source: Source) -> None:
    """Refuse what is not a readable, non-empty regular file, without opening it
    (opening a named pipe blocks until someone writes to it)."""
    if not isinstance(source, (str, os.PathLike)) or _is_uri(source):
        return
    path = Path(source)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise AudioFileError("unreadable", f"{path}: no such file") from None
    except OSError as exc:
        raise AudioFileError("unreadable", f"{path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = _NOT_REGULAR.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise AudioFileError("unreadable", f"{path}: {kind}, not a file: skipped unopened")
    if not os.access(path, os.R_OK):
        raise AudioFileError("unreadable", f"{path}: permission denied")
    if st.st_size == 0:
        raise AudioFileError("empty", f"{path}: file is empty (0 bytes)")


def _check_declared(native_rate: int, frames: int, name: str, max_duration_s: float) -> None:
    """Refuse a header whose rate or length would make decoding unbounded."""
    if not MIN_SAMPLE_RATE <= native_rate <= MAX_SAMPLE_RATE:
        raise AudioFileError(
            "corrupt",
            f"{name}: header declares a sample rate of {native_rate} Hz, outside "
            f"{MIN_SAMPLE_RATE}–{MAX_SAMPLE_RATE} Hz (corrupt or unsupported header)",
        )
    if frames > 0 and frames / native_rate > max_duration_s:
        _too_long(name, frames / native_rate, max_duration_s)


def _too_long(name: str, seconds: float, max_duration_s: float, *, declared: bool = True):
    hours = max_duration_s >= 3600
    limit = f"{max_duration_s / 3600:g} h" if hours else f"{max_duration_s:g} s"
    amount = f"{seconds / 3600:.1f} h" if hours else f"{seconds:.1f} s"
    said = f"declares {amount} of audio" if declared else "decodes to more"
    raise AudioFileError(
        "too-long",
        f"{name}: {said}, over the {limit} limit (raise it with --max-duration SECONDS)",
    )


def _mono(block: np.ndarray) -> np.ndarray:
    """``(samples, channels)`` → ``(samples,)`` float32, the mean of the channels."""
    if block.ndim == 2 and block.shape[1] > 1:
        return block.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(block.reshape(-1), dtype=np.float32)


def _resample(y: np.ndarray, *, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return np.ascontiguousarray(y, dtype=np.float32)
    return soxr.resample(y, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


# --------------------------------------------------------------------------- decoders


class _Reader:
    """One open file: its native rate, the header's length, and its samples in order.

    ``blocks()`` yields mono float32 blocks at the native rate from the start; after
    it ends, ``stopped`` holds why it ended early (``""`` when it reached the end) and
    ``skipped`` why packets were left out on the way (``""`` when none were).
    """

    native_rate: int
    declared_frames: int  # 0 when the header says nothing
    exact: bool  # declared_frames is what decodes, and seek() lands on the sample
    stopped: str = ""
    skipped: str = ""

    def blocks(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class _SndfileReader(_Reader):
    def __init__(self, source: Source, name: str):
        self._file = sf.SoundFile(_open(source))
        self.native_rate, frames = self._file.samplerate, self._file.frames
        self.declared_frames = frames
        self.exact = True
        self._short = self.stopped = ""
        # A truncated PCM file: libsndfile reads what is there; the header said more.
        for declared, actual in _HEADER_SHOULD_BE.findall(self._file.extra_info):
            declared, actual = int(declared), int(actual)
            # 0 and 0xFFFFFFFF are "unknown length" markers of streamed writers.
            if 0 < actual < declared and declared != 0xFFFFFFFF:
                self.declared_frames = int(round(frames * declared / actual))
                self._short = self.stopped = (
                    f"the file ends early: its header promises {declared} data bytes, "
                    f"it holds {actual}"
                )

    def blocks(self) -> Iterator[np.ndarray]:
        block = max(1, int(_BLOCK_S * self.native_rate))
        self._file.seek(0)
        while True:
            try:
                data = self._file.read(block, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                self.stopped = f"libsndfile: {str(exc).strip()}"
                return
            if len(data):
                yield _mono(data)
            if len(data) < block:
                self.stopped = self._short
                return

    def window(self, start: int, frames: int) -> np.ndarray:
        self._file.seek(start)
        return _mono(self._file.read(frames, dtype="float32", always_2d=True))

    def close(self) -> None:
        self._file.close()


class _FFmpegReader(_Reader):
    def __init__(self, source: Source, name: str):
        import av

        self._av, self._source, self._name = av, source, name
        self.exact = False
        self._container = self._open_container()
        stream = self._stream
        self.native_rate = int(stream.codec_context.sample_rate or 0)
        if stream.duration and stream.time_base:
            seconds = float(stream.duration * stream.time_base)
        elif self._container.duration:
            seconds = self._container.duration / av.time_base
        else:
            seconds = 0.0
        self.declared_frames = int(round(seconds * self.native_rate))

    def _open_container(self):
        source = _open(self._source)
        if hasattr(source, "seek"):
            source.seek(0)
        try:
            container = self._av.open(
                source if not isinstance(source, os.PathLike) else os.fspath(source)
            )
        except (self._av.FFmpegError, UnicodeDecodeError) as exc:
            raise AudioFileError(
                "not-audio", f"{self._name}: not a recognised audio file ({_av_reason(exc)})"
            ) from exc
        if not container.streams.audio:
            container.close()
            raise AudioFileError("not-audio", f"{self._name}: holds no audio stream")
        self._stream = container.streams.audio[0]
        return container

    def packet_frames(self) -> int:
        """The stream's length counted from its packets' durations, decoding nothing;
        the file is read again from its start afterwards."""
        total, tb = 0, self._stream.time_base
        try:
            for packet in self._container.demux(self._stream):
                if packet.duration:
                    total += packet.duration
        except self._av.FFmpegError:
            pass  # the decode pass says where and why
        self.rewind()
        return int(round(float(total * tb) * self.native_rate)) if tb else 0

    def rewind(self) -> None:
        """Start again from the first packet (reopening is exact; seeking may not be)."""
        self._container.close()
        self._container = self._open_container()
        self.stopped = self.skipped = ""

    def blocks(self) -> Iterator[np.ndarray]:
        av, bad, first_error = self._av, 0, ""
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.FFmpegError as exc:
                self.stopped = f"FFmpeg stopped reading: {_av_reason(exc)}"
                return
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                bad += 1
                first_error = first_error or _av_reason(exc)
                if bad >= _MAX_BAD_PACKETS:
                    self.stopped = f"FFmpeg: {first_error}"
                    return
                continue
            if frames:
                bad = 0
            for frame in frames:
                yield _frame_mono(frame)
        if first_error:
            self.skipped = f"FFmpeg skipped damaged packets: {first_error}"

    def close(self) -> None:
        self._container.close()


def _av_reason(exc: Exception) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).strip().rstrip(".")


_PCM_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2147483648.0, "s64": 9223372036854775808.0}


def _frame_mono(frame) -> np.ndarray:
    """One decoded PyAV frame → mono float32 at its own rate (mean of the channels)."""
    a = frame.to_ndarray()
    name = frame.format.name.rstrip("p")
    channels = len(frame.layout.channels) or 1
    if not frame.format.is_planar:
        a = a.reshape(-1, channels).T
    if name in _PCM_SCALE:
        a = a.astype(np.float32)
        if name == "u8":
            a -= 128.0
        a /= _PCM_SCALE[name]
    a = a[:, : frame.samples]
    return a.mean(axis=0, dtype=np.float32) if a.shape[0] > 1 else a[0].astype(np.float32)


@contextlib.contextmanager
def _reader(source: Source, name: str) -> Iterator[_Reader]:
    """Open ``source`` with the decoder for its kind; FFmpeg when libsndfile refuses it."""
    # A URI may end with its store's options (``x.wav?endpoint_override=…``).
    ext = os.path.splitext(urlsplit(name).path if _is_uri(name) else name)[1].lower()
    reader: _Reader | None = None
    if ext in SOUNDFILE_EXTENSIONS:
        try:
            reader = _SndfileReader(source, name)
        except PermissionError as exc:
            raise AudioFileError("unreadable", f"{name}: permission denied") from exc
        except (sf.LibsndfileError, RuntimeError, ValueError, OSError):
            reader = None  # FFmpeg reads more kinds of WAV (ADPCM, mp3 inside RIFF…)
    if reader is None:
        reader = _FFmpegReader(source, name)
    try:
        yield reader
    finally:
        reader.close()


# --------------------------------------------------------------------------- decoding


@dataclass(frozen=True)
class _Decoded:
    y: np.ndarray  # (samples,) for a whole file; (windows, samples) for windows
    duration_s: float  # of what decoded
    starts_s: np.ndarray | None
    warning: DecodeWarning | None


def _warning(reader: _Reader, decoded: int, name: str) -> DecodeWarning | None:
    """What a user should know about how much of the file decoded, or ``None``.

    A decoder that stopped early always earns a warning; damaged packets skipped on the
    way only when they add up to more than a rounding of the length (FFmpeg reads the
    APE or ID3v1 tag at the end of many mp3s as one bad packet).
    """
    rate, declared = reader.native_rate, reader.declared_frames
    said = f"decoded {decoded / rate:.1f} of {declared / rate:.1f} s" if declared else ""
    if reader.stopped:
        said = said or f"decoded {decoded / rate:.1f} s"
        return DecodeWarning("partial", f"{said} ({reader.stopped})")
    if not declared or declared - decoded <= max(_SHORT_S * rate, _SHORT_FRACTION * declared):
        return None
    if reader.skipped:
        return DecodeWarning("partial", f"{said} ({reader.skipped})")
    return DecodeWarning(
        "estimated-length",
        f"header length was an estimate: it said {declared / rate:.1f} s, "
        f"{decoded / rate:.1f} s decoded",
    )


def _decode_whole(reader: _Reader, *, name: str, sample_rate: int, max_frames: int):
    """Every sample, mixed to mono and resampled as a stream (soxr's stream gives the
    same samples as one ``soxr.resample`` call on the whole signal)."""
    rate = reader.native_rate
    stream = None
    if rate != sample_rate:
        stream = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="HQ")
    pieces, pending, decoded = [], [], 0
    chunk = int(_BLOCK_S * rate)

    def flush(last: bool) -> None:
        mono = np.concatenate(pending) if len(pending) != 1 else pending[0]
        pending.clear()
        pieces.append(mono if stream is None else stream.resample_chunk(mono, last=last))

    pending_n = 0
    for block in reader.blocks():
        decoded += len(block)
        if decoded > max_frames:
            _too_long(name, decoded / rate, max_frames / rate - 1.0, declared=False)
        pending.append(block)
        pending_n += len(block)
        if pending_n >= chunk:
            flush(False)
            pending_n = 0
    pending.append(np.zeros(0, np.float32))
    flush(True)
    y = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    return np.asarray(y, dtype=np.float32), decoded


def _collect_windows(reader: _Reader, starts: np.ndarray, frames: int, max_frames: int, name):
    """One pass from the start keeping ``frames`` native samples at each of ``starts``
    (sorted sample offsets). Returns the windows that completed and the decoded length."""
    windows = [np.empty(frames, np.float32) for _ in starts]
    filled = [0] * len(starts)
    position, first = 0, 0
    for block in reader.blocks():
        end = position + len(block)
        if end > max_frames:
            rate = reader.native_rate
            _too_long(name, end / rate, max_frames / rate - 1.0, declared=False)
        for k in range(first, len(starts)):
            lo, hi = starts[k] + filled[k], starts[k] + frames
            if lo >= end:
                break
            take = block[max(lo - position, 0) : min(hi, end) - position]
            windows[k][filled[k] : filled[k] + len(take)] = take
            filled[k] += len(take)
            if filled[k] == frames and k == first:
                first += 1
        position = end
    done = [k for k in range(len(starts)) if filled[k] == frames]
    return [windows[k] for k in done], done, position


def _decode_windows(
    reader: _Reader,
    *,
    name: str,
    sample_rate: int,
    max_frames: int,
    segment_seconds: float,
    max_segments: int,
) -> _Decoded | None:
    """The spread windows of a long file, or ``None`` when it is not long enough to
    need them (the caller then decodes it whole)."""
    rate = reader.native_rate
    frames = int(round(segment_seconds * rate))
    needed = segment_seconds * max_segments * 2 * rate
    if not reader.exact and 0 < reader.declared_frames <= needed:
        # Short by its header: decode it whole (the caller keeps spread segments of
        # whatever decodes, so an estimate that was too low costs time, never windows).
        return None
    length = reader.declared_frames if reader.exact else reader.packet_frames()
    if length <= needed:
        return None
    for _ in range(2):  # a second pass only when less decoded than the length promised
        starts_s = spread_starts(
            length / rate, segment_seconds=segment_seconds, max_segments=max_segments
        )
        starts = np.round(starts_s * rate).astype(np.int64)
        if isinstance(reader, _SndfileReader):
            pieces = [reader.window(int(s), frames) for s in starts]
            done = [k for k, p in enumerate(pieces) if len(p) == frames]
            pieces, decoded = [pieces[k] for k in done], length
            if len(done) < len(starts):  # shorter than it said: fall back to reading it
                decoded = sum(len(b) for b in reader.blocks())
        else:
            pieces, done, decoded = _collect_windows(reader, starts, frames, max_frames, name)
        if len(done) == len(starts) or decoded <= 0:
            break
        length = decoded
        if isinstance(reader, _FFmpegReader):
            reader.rewind()
    if not pieces:
        if isinstance(reader, _FFmpegReader):
            reader.rewind()
        return None
    n = int(round(segment_seconds * sample_rate))
    audio = np.stack([_fit(_resample(p, from_rate=rate, to_rate=sample_rate), n) for p in pieces])
    return _Decoded(audio, decoded / rate, starts_s[done], _warning(reader, decoded, name))


def _decode(
    source: Source,
    *,
    sample_rate: int,
    max_duration_s: float,
    segment_seconds: float | None = None,
    max_segments: int | None = None,
) -> _Decoded:
    """Decode a whole file, or (``max_segments``) the spread windows of a long one."""
    if sample_rate <= 0:
        raise ParameterError(f"sample_rate={sample_rate} must be a positive integer")
    if not max_duration_s > 0:
        raise ParameterError(f"max_duration_s={max_duration_s} must be positive")
    name = _name(source)
    _check_local(source)
    try:
        # (mp3 no longer reaches libmpg123, which printed a line per damaged frame;
        # PyAV keeps FFmpeg's log quiet unless asked.)
        with _reader(source, name) as reader:
            _check_declared(reader.native_rate, reader.declared_frames, name, max_duration_s)
            max_frames = int((max_duration_s + 1.0) * reader.native_rate)
            if max_segments is not None and segment_seconds is not None:
                out = _decode_windows(
                    reader,
                    name=name,
                    sample_rate=sample_rate,
                    max_frames=max_frames,
                    segment_seconds=segment_seconds,
                    max_segments=max_segments,
                )
                if out is not None:
                    _check_samples(out.y, name)
                    return out
            y, decoded = _decode_whole(
                reader, name=name, sample_rate=sample_rate, max_frames=max_frames
            )
            warning = _warning(reader, decoded, name)
            if decoded == 0 and (reader.stopped or reader.skipped):
                why = reader.stopped or reader.skipped
                raise AudioFileError("corrupt", f"{name}: nothing decodes ({why})")
    except AudioFileError:
        raise
    except PermissionError as exc:
        raise AudioFileError("unreadable", f"{name}: permission denied") from exc
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError) as exc:
        raise AudioFileError("corrupt", f"{name}: cannot decode ({str(exc).strip()})") from exc
    _check_samples(y, name)
    return _Decoded(y, decoded / reader.native_rate, None, warning)


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad by the sample or two a resampler may add or drop."""
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


def _check_samples(y: np.ndarray, name: str) -> None:
    if y.size == 0:
        raise AudioFileError("empty", f"{name}: no audio frames")
    if not np.all(np.isfinite(y)):
        raise AudioFileError("corrupt", f"{name}: decoded samples are not finite")
    peak = float(np.max(np.abs(y)))
    if peak > MAX_PEAK:
        raise AudioFileError(
            "corrupt",
            f"{name}: sample values reach {peak:.3g}, far outside audio's ±1 range "
            "(corrupt float data)",
        )
    if peak < SILENCE_PEAK:
        raise AudioFileError("silent", f"{name}: silent (peak below {SILENCE_PEAK:g})")


# --------------------------------------------------------------------------- public


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
        Refuse files that declare, or decode to, more audio than this (``too-long``).

    Returns
    -------
    y : np.ndarray [shape=(samples,), dtype=float32]
        Everything that decoded (see the module's notes on damaged files).
    duration_s : float
        Duration of what decoded, in seconds.

    Raises
    ------
    AudioFileError
        With ``reason`` one of ``empty``, ``not-audio``, ``corrupt``, ``silent``,
        ``unreadable``, ``too-long``.
    """
    out = _decode(source, sample_rate=sample_rate, max_duration_s=max_duration_s)
    return out.y, out.duration_s


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
        tracks only those windows are resampled.
    max_duration_s : float > 0
        Refuse files that declare, or decode to, more audio than this (``too-long``).

    Returns
    -------
    Segments
        ``audio`` of shape ``(segments, segment_samples)``, and a ``warning`` when less
        decoded than the header promised.

    Raises
    ------
    AudioFileError
        As :func:`load`, plus ``too-short`` for a track shorter than one segment and
        ``truncated`` for one whose header promised a segment or more but less decoded.
    """
    if max_segments is not None and max_segments <= 0:
        raise ParameterError(f"max_segments={max_segments} must be a positive integer")
    out = _decode(
        source,
        sample_rate=sample_rate,
        max_duration_s=max_duration_s,
        segment_seconds=segment_seconds,
        max_segments=max_segments,
    )
    if out.starts_s is not None:
        return Segments(out.y, out.starts_s.astype(np.float32), out.duration_s, out.warning)
    segments = segment(out.y, sample_rate=sample_rate, segment_seconds=segment_seconds)
    if len(segments) == 0:
        if out.warning is not None:
            raise AudioFileError(
                "truncated",
                f"{_name(source)}: truncated, less than one {segment_seconds:g} s segment "
                f"decodes ({out.warning.message})",
            )
        raise AudioFileError(
            "too-short",
            f"{_name(source)}: too short ({out.duration_s:.2f} s < one "
            f"{segment_seconds:g} s segment)",
        )
    starts = np.arange(len(segments), dtype=np.float64) * segment_seconds
    if max_segments is not None and len(segments) > max_segments:
        keep = np.round(np.linspace(0, len(segments) - 1, max_segments)).astype(np.int64)
        segments, starts = segments[keep], starts[keep]
    return Segments(
        audio=np.ascontiguousarray(segments),
        start_s=starts.astype(np.float32),
        duration_s=out.duration_s,
        warning=out.warning,
    )
