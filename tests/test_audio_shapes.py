"""Every file a music player plays gets labelled: the shapes of real collections.

Each shape (``tests/audio_shapes.py``) is written by the test with PyAV's bundled FFmpeg or
libsndfile; no system ffmpeg is needed or used. Extract (``extract_batch``) and label
(``featurize_batch``) take each file the way their Ray tasks do.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from genre.audio import load, load_segments
from genre.config import FeatureConfig
from genre.errors import AudioFileError
from genre.extraction import extract_batch
from genre.featurize import featurize_batch
from tests.audio_shapes import SHAPES, Shape, signal, write_shape
from tests.conftest import REPO

_BY_NAME = {s.name: s for s in SHAPES}
_CFG = FeatureConfig(features=("mfcc",))


def _extract_and_label(path) -> tuple[dict, dict]:
    """One file through extract's and label's per-file functions: each row as a dict."""
    batch = {
        "path": np.array([str(path)], object),
        "track_id": np.array([path.name], object),
        "genre": np.array([None], object),
    }
    out = extract_batch(batch, cfg=_CFG, output=str(path.parent / "_shards"))
    extracted = {k: v[0] for k, v in out.items()}
    out = featurize_batch(batch, cfg=_CFG, features=("mfcc",), max_segments=10)
    labelled = {k: v[0] for k, v in out.items() if k != "x"}
    labelled["x"] = out["x"][0]
    return extracted, labelled


def _shape(tmp_path, name: str, **kw):
    return write_shape(tmp_path, _BY_NAME[name], **kw)


def _assert_used(extracted: dict, labelled: dict, *, warning: str | None) -> None:
    assert extracted["reason"] == "", extracted["message"]
    assert labelled["reason"] == "", labelled["error"]
    assert extracted["segments"] >= 1 and labelled["n_segments"] >= 1
    assert np.isfinite(labelled["x"]).all()
    assert extracted["warning"] == (warning or "")
    assert labelled["warning_kind"] == (warning or "")
    if warning:
        assert labelled["warning"] and labelled["warning"] == extracted["warning_message"]


@pytest.mark.parametrize("shape", SHAPES, ids=[s.name for s in SHAPES])
def test_every_shape_a_player_plays_is_extracted_and_labelled_warned_where_less_decoded(
    tmp_path, shape: Shape
):
    path = write_shape(tmp_path, shape)
    segs = load_segments(path, sample_rate=22050)
    assert float(np.abs(segs.audio).max()) > 0.1  # the signal, not silence or noise floor
    extracted, labelled = _extract_and_label(path)
    assert extracted["reason"] == labelled["reason"] == "", labelled["error"]
    if shape.warns is True:
        assert labelled["warning"] and extracted["warning"]
    elif shape.warns is False:
        assert labelled["warning"] == extracted["warning"] == "", labelled["warning"]
    if shape.warns is not True:  # nothing lost: every encoded second decoded
        assert labelled["duration_s"] == pytest.approx(shape.seconds, abs=0.1)


def test_mp3_with_damaged_tail_is_labelled_with_a_warning(tmp_path):
    extracted, labelled = _extract_and_label(_shape(tmp_path, "mp3_damaged_tail.mp3"))
    _assert_used(extracted, labelled, warning="partial")
    assert labelled["warning"].startswith("decoded 7.")
    assert "of 8.0 s" in labelled["warning"]


def test_vbr_mp3_without_xing_header_is_labelled_whole(tmp_path):
    extracted, labelled = _extract_and_label(_shape(tmp_path, "mp3_vbr_no_xing.mp3"))
    _assert_used(extracted, labelled, warning=None)
    assert labelled["duration_s"] == pytest.approx(8.0, abs=0.1)


def test_mp3_wrapped_in_id3v2_id3v1_and_ape_tags_is_labelled_without_a_warning(tmp_path):
    extracted, labelled = _extract_and_label(_shape(tmp_path, "mp3_id3v2_id3v1_ape.mp3"))
    _assert_used(extracted, labelled, warning=None)


def test_mp3_with_junk_before_its_first_frame_is_labelled(tmp_path):
    extracted, labelled = _extract_and_label(_shape(tmp_path, "mp3_junk_before_first_frame.mp3"))
    _assert_used(extracted, labelled, warning=None)


@pytest.mark.parametrize(
    "name", ["aac.m4a", "aac_adts.aac", "alac.m4a", "opus.opus", "opus.webm", "wma.wma"]
)
def test_itunes_android_and_web_formats_are_labelled_without_a_system_ffmpeg(tmp_path, name):
    env_path = os.environ.get("PATH", "")
    os.environ["PATH"] = ""  # no ffmpeg binary can be found, whatever this machine has
    try:
        assert shutil.which("ffmpeg") is None
        extracted, labelled = _extract_and_label(_shape(tmp_path, name))
    finally:
        os.environ["PATH"] = env_path
    _assert_used(extracted, labelled, warning=None)


def test_flac_whose_total_samples_field_is_too_high_is_labelled_with_a_warning(tmp_path):
    extracted, labelled = _extract_and_label(_shape(tmp_path, "flac_total_samples_too_high.flac"))
    _assert_used(extracted, labelled, warning="estimated-length")
    assert "header length was an estimate: it said 20.0 s, 8.0 s decoded" in labelled["warning"]


def test_flac_whose_total_samples_field_is_too_low_is_labelled_to_its_end(tmp_path):
    # libsndfile believes the field and stops at 2.4 s without an error
    extracted, labelled = _extract_and_label(_shape(tmp_path, "flac_total_samples_too_low.flac"))
    _assert_used(extracted, labelled, warning=None)
    assert labelled["duration_s"] == pytest.approx(8.0, abs=0.01)
    assert extracted["segments"] == 2


def test_truncated_wav_with_a_segment_left_is_labelled_with_a_warning(tmp_path):
    extracted, labelled = _extract_and_label(_shape(tmp_path, "wav_cut_short.wav"))
    _assert_used(extracted, labelled, warning="partial")
    assert labelled["warning"].startswith("decoded 4.8 of 8.0 s (the file ends early")


def test_file_with_less_than_a_segment_decodable_is_truncated(tmp_path):
    path = write_shape(tmp_path, _BY_NAME["mp3_cbr_xing.mp3"])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 4])  # 2 s of a promised 8 s
    with pytest.raises(AudioFileError) as info:
        load_segments(path)
    assert info.value.reason == "truncated"
    assert "less than one 3 s segment decodes" in str(info.value)


@pytest.mark.parametrize(
    "name, subtype",
    [
        ("wav_extensible_24bit_5.1.wav", "PCM_24"),
        ("wav_8bit_unsigned_8khz.wav", "PCM_U8"),
        ("wav_float32.wav", "FLOAT"),
        ("flac_5.1_96khz.flac", "PCM_24"),
    ],
)
def test_pcm_layouts_and_rates_decode_to_the_signal_written(tmp_path, name, subtype):
    shape = _BY_NAME[name]
    path = write_shape(tmp_path, shape)
    assert sf.info(str(path)).subtype == subtype
    y, duration_s = load(path, sample_rate=shape.sample_rate)
    source = signal(seconds=shape.seconds, sample_rate=shape.sample_rate, channels=shape.channels)
    expected = source.mean(axis=1)  # mono is the mean of the channels, 5.1 included
    assert duration_s == pytest.approx(shape.seconds)
    tolerance = 1.5 / 128 if subtype == "PCM_U8" else 1e-4
    np.testing.assert_allclose(y, expected, atol=tolerance)


def _best_lag(window: np.ndarray, full: np.ndarray, start: int, *, search: int = 300) -> tuple:
    """The offset (samples) at which ``window``'s middle best matches ``full`` around
    ``start``, and the normalised correlation there."""
    n = len(window)
    mid = window[n // 2 : n // 2 + 4096]
    best, best_corr = 0, -1.0
    for lag in range(-search, search + 1):
        ref = full[start + n // 2 + lag : start + n // 2 + lag + 4096]
        corr = float(np.dot(mid, ref) / (np.linalg.norm(mid) * np.linalg.norm(ref) + 1e-12))
        if corr > best_corr:
            best, best_corr = lag, corr
    return best, best_corr


@pytest.mark.parametrize(
    "name",
    [
        "wav_float32.wav",
        "aiff_16khz.aiff",
        "flac_total_samples_too_low.flac",
        "mp3_vbr_no_xing.mp3",
        "mp3_id3v2_id3v1_ape.mp3",
        "vorbis.ogg",
        "aac.m4a",
        "opus.opus",
        "wma.wma",
    ],
)
def test_label_windows_start_where_the_table_says_to_the_sample_on_every_format(tmp_path, name):
    path = write_shape(tmp_path, _BY_NAME[name], seconds=75.0)
    segs = load_segments(path, sample_rate=22050, max_segments=10)
    full, duration_s = load(path, sample_rate=22050)
    assert len(segs) == 10 and segs.warning is None
    assert segs.duration_s == pytest.approx(duration_s, abs=1e-3)
    assert segs.start_s[-1] > 60  # spread over the whole track, not its first minute
    for window, start_s in zip(segs.audio, segs.start_s, strict=True):
        lag, corr = _best_lag(window, full, int(round(float(start_s) * 22050)))
        assert lag == 0 and corr > 0.999, (start_s, lag, corr)


def test_named_pipe_is_skipped_unopened_instead_of_hanging(tmp_path):
    pipe = tmp_path / "rock" / "pipe.wav"
    pipe.parent.mkdir()
    os.mkfifo(pipe)
    code = (
        "import sys\n"
        "from genre.audio import load_segments\n"
        "from genre.errors import AudioFileError\n"
        "try:\n"
        "    load_segments(sys.argv[1], max_segments=10)\n"
        "except AudioFileError as exc:\n"
        "    print(exc.reason, '|', exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(pipe)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,  # opening the pipe would block until this kills it
    )
    assert out.stdout.strip() == f"unreadable | {pipe}: a named pipe, not a file: skipped unopened"


def test_float_wav_with_absurd_sample_values_is_corrupt_not_a_genre(tmp_path):
    path = tmp_path / "huge.wav"
    y = signal(seconds=6, sample_rate=22050)[:, 0] * 1e20
    sf.write(path, y.astype(np.float32), 22050, subtype="FLOAT")
    extracted, labelled = _extract_and_label(path)
    assert extracted["reason"] == labelled["reason"] == "corrupt"
    assert "sample values reach 3.88e+19" in labelled["error"]
    assert "outside audio's ±1 range" in labelled["error"]


@pytest.mark.slow
def test_extract_and_label_jobs_take_every_shape_and_name_the_partly_decoded(tmp_path, tuned):
    import duckdb
    import pandas as pd

    from tests.conftest import run_job

    folder = tmp_path / "collection" / "blues"
    for shape in SHAPES:
        write_shape(folder, shape)
    warned = {s.name for s in SHAPES if s.warns is True}
    extract = run_job(
        "jobs.extract",
        str(tmp_path / "collection"),
        str(tmp_path / "shards"),
        "--num-cpus",
        "2",
        "--features",
        "mfcc",
        timeout=600,
    )
    assert extract.returncode == 0, extract.stdout[-2000:] + extract.stderr[-2000:]
    assert f"extract: {len(SHAPES)} tracks" in extract.stdout
    assert "extracted with a warning (less decoded than the header said): " in extract.stdout
    listed = pd.read_parquet(tmp_path / "shards" / "_errors.parquet")
    assert set(listed.severity) == {"warning"}
    assert {p.rsplit("/", 1)[-1] for p in listed.path} == warned

    out = tmp_path / "labels"
    champion = ["--model", f"models:/{tuned.name}@champion", "--tracking-uri", tuned.uri]
    label = run_job(
        "jobs.label", str(tmp_path / "collection"), str(out), *champion, "--num-cpus", "2"
    )
    assert label.returncode == 0, label.stdout[-2000:] + label.stderr[-2000:]
    assert f"{len(SHAPES)} labelled, 0 failed" in label.stdout
    assert "labelled with a warning (less decoded than the header said" in label.stdout
    rows = duckdb.sql(
        f"select path, warning, error from read_parquet('{out}/part-*.parquet')"
    ).fetchall()
    assert len(rows) == len(SHAPES) and all(error is None for _, _, error in rows)
    assert {p.rsplit("/", 1)[-1] for p, w, _ in rows if w is not None} == warned


@pytest.mark.parametrize("max_segments", [None, 1])
@pytest.mark.parametrize("name", ["mp3_cbr_xing.mp3", "aac.m4a", "opus.opus", "vorbis.ogg"])
def test_ffmpeg_formats_longer_than_max_duration_are_too_long(tmp_path, name, max_segments):
    path = _shape(tmp_path, name)
    with pytest.raises(AudioFileError) as info:
        load_segments(path, max_duration_s=5.0, max_segments=max_segments)
    assert info.value.reason == "too-long" and "--max-duration" in str(info.value)


def test_a_header_that_understates_the_length_cannot_lift_max_duration(tmp_path):
    # STREAMINFO says 2.4 s; 8 s decode: decoding stops past the limit, whatever was said
    path = _shape(tmp_path, "flac_total_samples_too_low.flac")
    with pytest.raises(AudioFileError) as info:
        load_segments(path, max_duration_s=5.0)
    assert info.value.reason == "too-long"
    assert "decodes to more, over the 5 s limit (raise it with --max-duration" in str(info.value)
