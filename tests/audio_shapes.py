"""Real-world audio file shapes, written by the tests (PyAV's bundled FFmpeg and libsndfile
encode them; nothing is downloaded).

Each :class:`Shape` is one kind of file users' collections hold and a music player plays:
VBR mp3 without a Xing header, an mp3 whose tail is damaged, mp3 wrapped in ID3v2 + ID3v1 +
APE tags or preceded by junk, m4a/aac, raw ADTS aac, alac, opus, webm, wma, ogg/vorbis,
FLAC whose total-samples field lies, WAVE_FORMAT_EXTENSIBLE 24-bit 5.1, 8-bit unsigned,
32-bit float, a truncated WAV; mono, stereo and 5.1; 8 to 96 kHz. ``warns`` says whether
less decodes than the header promises (``True``), the header is right (``False``), or the
header's estimate may land either side (``None``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = ["Shape", "SHAPES", "signal", "write_shape", "encode"]


def signal(*, seconds: float, sample_rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A rising chirp with a little noise: no two windows of it look alike, so a window
    found at the wrong offset cannot match. ``(samples, channels)`` float32."""
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    top = min(4000.0, sample_rate / 2.5)
    phase = 2 * np.pi * 100.0 * seconds / np.log(top / 100.0) * ((top / 100.0) ** (t / seconds))
    y = 0.3 * np.sin(phase) + 0.02 * np.random.default_rng(seed).standard_normal(n)
    return np.stack([y * (1.0 - 0.1 * c) for c in range(channels)], axis=1).astype(np.float32)


_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1"}


def encode(
    path: Path,
    y: np.ndarray,
    *,
    sample_rate: int,
    codec: str,
    container: str | None = None,
    muxer_options: dict[str, str] | None = None,
    bit_rate: int | None = None,
    qscale: float | None = None,
) -> Path:
    """Encode ``y`` ``(samples, channels)`` with FFmpeg's ``codec`` into ``path``."""
    import av

    channels = y.shape[1]
    with av.open(str(path), "w", format=container, options=muxer_options or {}) as out:
        stream = out.add_stream(codec, rate=sample_rate, layout=_LAYOUTS[channels])
        if bit_rate:
            stream.codec_context.bit_rate = bit_rate
        if qscale is not None:  # VBR: quality, not a bit rate
            stream.codec_context.qscale = qscale
        fmt = stream.codec_context.format.name
        size = stream.codec_context.frame_size or 1024
        planar = np.ascontiguousarray(y.T)
        for start in range(0, planar.shape[1], size):
            chunk = planar[:, start : start + size]
            if fmt == "s16p":
                chunk = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)
            elif fmt == "s32p":
                chunk = (np.clip(chunk, -1, 1) * 2147483647).astype(np.int32)
            elif fmt == "s16":
                chunk = (np.clip(chunk.T, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
            elif fmt == "flt":
                chunk = chunk.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(chunk), format=fmt, layout=_LAYOUTS[channels]
            )
            frame.sample_rate = sample_rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def _flac_total(path: Path, total: int) -> None:
    """Overwrite the 36-bit total-samples field of a FLAC STREAMINFO block."""
    data = bytearray(path.read_bytes())
    at = 8 + 13  # "fLaC", the block header, then 13 bytes into STREAMINFO
    value = int.from_bytes(data[at : at + 5], "big")
    value = (value & ~((1 << 36) - 1)) | total
    data[at : at + 5] = value.to_bytes(5, "big")
    path.write_bytes(bytes(data))


def _id3v2(size: int) -> bytes:
    """An ID3v2.3 tag with a title frame and ``size`` bytes of padding (a cover would do)."""
    title = b"\x00" + b"A track title"
    frame = b"TIT2" + len(title).to_bytes(4, "big") + b"\x00\x00" + title
    body = frame + b"\x00" * size
    syncsafe = bytes((len(body) >> s) & 0x7F for s in (21, 14, 7, 0))
    return b"ID3\x03\x00\x00" + syncsafe + body


def _ape_tag() -> bytes:
    item = b"Artist"
    value = b"Somebody"
    items = len(value).to_bytes(4, "little") + b"\x00" * 4 + item + b"\x00" + value
    footer = (
        b"APETAGEX"
        + (2000).to_bytes(4, "little")
        + (len(items) + 32).to_bytes(4, "little")
        + (1).to_bytes(4, "little")
        + (0).to_bytes(4, "little")
        + b"\x00" * 8
    )
    return items + footer


def _id3v1() -> bytes:
    return b"TAG" + b"Title".ljust(30, b"\x00") + b"Artist".ljust(30, b"\x00") + b"\x00" * 65


@dataclass(frozen=True)
class Shape:
    """One file shape: how to write it and what decoding it must give."""

    name: str  # file name, its extension included
    seconds: float  # audio encoded
    sample_rate: int
    channels: int
    warns: bool | None  # less decodes than the header says: True, False, or either
    write: Callable[[Path, np.ndarray, int], None]


def _mp3(**kw):
    def write(path, y, rate):
        encode(path, y, sample_rate=rate, codec="libmp3lame", container="mp3", **kw)

    return write


def _mp3_damaged_tail(path, y, rate):
    encode(path, y, sample_rate=rate, codec="libmp3lame", container="mp3", bit_rate=128_000)
    data = bytearray(path.read_bytes())
    cut = int(len(data) * 0.9)
    data[cut:] = np.random.default_rng(7).bytes(len(data) - cut)
    path.write_bytes(bytes(data))


def _mp3_wrapped(path, y, rate, *, before: bytes, after: bytes = b"", **kw):
    """An mp3 with no tag of the muxer's own, between ``before`` and ``after`` bytes."""
    bare = path.with_suffix(".bare")
    encode(bare, y, sample_rate=rate, codec="libmp3lame", container="mp3", **kw)
    path.write_bytes(before + bare.read_bytes() + after)
    bare.unlink()


def _mp3_tagged(path, y, rate):
    _mp3_wrapped(
        path,
        y,
        rate,
        before=_id3v2(200_000),
        after=_ape_tag() + _id3v1(),
        bit_rate=128_000,
        muxer_options={"id3v2_version": "0", "write_xing": "0"},
    )


def _mp3_junk_first(path, y, rate):
    junk = bytes(np.random.default_rng(3).integers(0, 0xE0, 4096, dtype=np.uint8))
    _mp3_wrapped(path, y, rate, before=junk, muxer_options={"id3v2_version": "0"})


def _ffmpeg(codec, container, **kw):
    def write(path, y, rate):
        encode(path, y, sample_rate=rate, codec=codec, container=container, **kw)

    return write


def _sndfile(fmt, subtype):
    def write(path, y, rate):
        with sf.SoundFile(path, "w", rate, y.shape[1], format=fmt, subtype=subtype) as f:
            for start in range(0, len(y), 8192):  # libvorbis crashes on very large writes
                f.write(y[start : start + 8192])

    return write


def _flac_total_lies(factor):
    def write(path, y, rate):
        _sndfile("FLAC", "PCM_16")(path, y, rate)
        _flac_total(path, int(len(y) * factor))

    return write


def _wav_cut(path, y, rate):
    _sndfile("WAV", "PCM_16")(path, y, rate)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.6)])


SHAPES: tuple[Shape, ...] = (
    Shape(
        "mp3_vbr_no_xing.mp3", 8, 44100, 2, None, _mp3(qscale=4, muxer_options={"write_xing": "0"})
    ),
    Shape("mp3_cbr_xing.mp3", 8, 44100, 1, False, _mp3(bit_rate=128_000)),
    Shape("mp3_damaged_tail.mp3", 8, 44100, 2, True, _mp3_damaged_tail),
    Shape("mp3_id3v2_id3v1_ape.mp3", 8, 44100, 1, None, _mp3_tagged),
    Shape("mp3_junk_before_first_frame.mp3", 8, 44100, 2, None, _mp3_junk_first),
    Shape("mp3_8khz_mono.mp3", 8, 8000, 1, None, _mp3(bit_rate=32_000)),
    Shape("aac.m4a", 8, 44100, 2, False, _ffmpeg("aac", "mp4", bit_rate=128_000)),
    Shape("aac_adts.aac", 8, 48000, 2, None, _ffmpeg("aac", "adts", bit_rate=96_000)),
    Shape("alac.m4a", 8, 44100, 2, False, _ffmpeg("alac", "mp4")),
    Shape("opus.opus", 8, 48000, 2, False, _ffmpeg("libopus", "ogg", bit_rate=96_000)),
    Shape("opus.webm", 8, 48000, 1, False, _ffmpeg("libopus", "webm", bit_rate=64_000)),
    Shape("wma.wma", 8, 44100, 2, None, _ffmpeg("wmav2", "asf", bit_rate=128_000)),
    Shape("vorbis.ogg", 8, 22050, 2, False, _sndfile("OGG", "VORBIS")),
    Shape("flac_total_samples_too_high.flac", 8, 44100, 2, True, _flac_total_lies(2.5)),
    Shape("flac_total_samples_too_low.flac", 8, 44100, 2, False, _flac_total_lies(0.3)),
    Shape("flac_5.1_96khz.flac", 8, 96000, 6, False, _sndfile("FLAC", "PCM_24")),
    Shape("wav_extensible_24bit_5.1.wav", 8, 48000, 6, False, _sndfile("WAVEX", "PCM_24")),
    Shape("wav_8bit_unsigned_8khz.wav", 8, 8000, 1, False, _sndfile("WAV", "PCM_U8")),
    Shape("wav_float32.wav", 8, 48000, 2, False, _sndfile("WAV", "FLOAT")),
    Shape("wav_cut_short.wav", 8, 22050, 1, True, _wav_cut),
    Shape("aiff_16khz.aiff", 8, 16000, 1, False, _sndfile("AIFF", "PCM_16")),
)


def write_shape(folder: Path, shape: Shape, *, seconds: float | None = None) -> Path:
    """Write ``shape`` into ``folder`` (``seconds`` overrides its length)."""
    folder.mkdir(parents=True, exist_ok=True)
    seconds = shape.seconds if seconds is None else seconds
    y = signal(seconds=seconds, sample_rate=shape.sample_rate, channels=shape.channels)
    path = folder / shape.name
    shape.write(path, y, shape.sample_rate)
    return path
