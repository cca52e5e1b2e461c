"""Bad input, collected in one place: bad files are reported, bad arguments fail fast."""

import os
import shlex
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from genre.audio import load_segments
from genre.config import FeatureConfig
from genre.errors import AudioFileError
from genre.extraction import extract_batch
from tests.conftest import REPO, ray_head_with, run_job, tone, write_audio


def _truncate(path, fraction=0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def make_bad_files(root) -> dict[str, set[str]]:
    """Write one file of every bad kind; return name → acceptable reasons."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "empty.wav").write_bytes(b"")
    (root / "text.mp3").write_text("this is not audio\n" * 50)
    (root / "random.flac").write_bytes(np.random.default_rng(0).bytes(5000))
    _truncate(write_audio(root / "cut.wav", tone(seconds=6, sample_rate=22050), sample_rate=22050))
    _truncate(write_audio(root / "cut.flac", tone(seconds=6, sample_rate=22050), sample_rate=22050))
    _truncate(
        write_audio(root / "cut.ogg", tone(seconds=6, sample_rate=22050), sample_rate=22050), 0.05
    )
    _truncate(write_audio(root / "cut.mp3", tone(seconds=6, sample_rate=44100), sample_rate=44100))
    write_audio(root / "short.wav", tone(seconds=1.5, sample_rate=22050), sample_rate=22050)
    write_audio(root / "silent.flac", np.zeros(22050 * 4, np.float32), sample_rate=22050)
    os.symlink(root / "gone.wav", root / "dangling.wav")
    return {
        "empty.wav": {"empty"},
        "text.mp3": {"not-audio"},
        "random.flac": {"not-audio", "corrupt"},
        "cut.wav": {"truncated"},
        "cut.flac": {"corrupt", "truncated"},
        "cut.ogg": {"corrupt", "truncated", "not-audio"},
        "cut.mp3": {"truncated", "corrupt"},
        "short.wav": {"too-short"},
        "silent.flac": {"silent"},
        "dangling.wav": {"unreadable"},
    }


def test_every_bad_file_kind_raises_with_a_reason(tmp_path):
    expected = make_bad_files(tmp_path)
    for name, reasons in expected.items():
        with pytest.raises(AudioFileError) as info:
            load_segments(tmp_path / name)
        assert info.value.reason in reasons, (name, info.value.reason, str(info.value))
        assert name in str(info.value)


UNREADABLE = """
import sys
import numpy as np
from genre.config import FeatureConfig
from genre.labeling import featurize_batch
path = sys.argv[1]
batch = {"path": np.array([path], object), "track_id": np.array(["locked.wav"], object)}
out = featurize_batch(batch, cfg=FeatureConfig(), features=("mfcc",), max_segments=10)
print(out["reason"][0], "|", out["error"][0])
"""


def test_a_file_without_read_permission_becomes_an_unreadable_error_row(tmp_path):
    folder = tmp_path / "open"
    path = write_audio(folder / "locked.wav", tone(seconds=4, sample_rate=22050), sample_rate=22050)
    path.chmod(0)
    tmp_path.chmod(0o755)
    folder.chmod(0o755)
    command = [sys.executable, "-c", UNREADABLE, str(path)]
    if os.geteuid() == 0:  # root reads any file: drop the two capabilities that let it
        if not shutil.which("capsh"):
            pytest.skip("running as root without capsh to drop CAP_DAC_OVERRIDE")
        command = [
            "capsh",
            "--drop=cap_dac_override,cap_dac_read_search",
            "--",
            "-c",
            shlex.join(command),
        ]
    out = subprocess.run(
        command, capture_output=True, text=True, cwd=REPO, check=True
    ).stdout.strip()
    assert out == f"unreadable | {path}: permission denied"


def test_a_bad_file_becomes_an_error_row_beside_good_ones(tmp_path):
    expected = make_bad_files(tmp_path / "bad")
    good = write_audio(
        tmp_path / "good.wav", tone(seconds=6.5, sample_rate=22050), sample_rate=22050
    )
    paths = [str(good)] + [str(tmp_path / "bad" / n) for n in expected]
    batch = {
        "path": np.array(paths, object),
        "track_id": np.array(paths, object),
        "genre": np.array([None] * len(paths), object),
    }
    out = extract_batch(batch, cfg=FeatureConfig(), output=str(tmp_path / "out"))
    assert list(out["reason"][:1]) == [""] and out["segments"][0] == 2 and out["shard"][0]
    assert all(out["reason"][1:]) and all(out["message"][1:])
    assert len(list((tmp_path / "out").glob("part-*.parquet"))) == 1


@pytest.mark.parametrize(
    "args, needle",
    [
        (["{tmp}/missing", "{tmp}/out"], "does not exist"),
        (["{tmp}/in", "{tmp}/afile"], "is a file"),
        (["{tmp}/in", "{tmp}/out", "--features", "mfcc,tempo"], "tempo"),
        (["{tmp}/in", "{tmp}/out", "--num-cpus", "0"], "num-cpus"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, args, needle):
    (tmp_path / "in" / "rock").mkdir(parents=True)
    write_audio(
        tmp_path / "in" / "rock" / "a.wav", tone(seconds=3.5, sample_rate=22050), sample_rate=22050
    )
    (tmp_path / "afile").write_text("x")
    result = run_job("jobs.extract", *[a.format(tmp=tmp_path) for a in args], timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip() and "WARNING" not in line]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr, (
        result.stderr
    )


# --------------------------------------------------------------------------- what one file may cost


def write_one_hertz_wav(path, *, seconds: float = 10.0):
    """10 s of PCM_16 at 22050 Hz whose header then claims a sample rate of 1 Hz.

    libsndfile reports 220 500 frames at 1 Hz (61 hours); decoding that naively
    resamples to ~4.9e9 samples.
    """
    import soundfile as sf

    sf.write(path, tone(seconds=seconds, sample_rate=22050), 22050, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    fmt = data.index(b"fmt ")
    data[fmt + 12 : fmt + 16] = (1).to_bytes(4, "little")  # sample rate field of the fmt chunk
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("max_segments", [None, 10])
def test_wav_header_declaring_1_hz_is_corrupt_and_names_the_rate(tmp_path, max_segments):
    path = write_one_hertz_wav(tmp_path / "one-hertz.wav")
    with pytest.raises(AudioFileError) as info:
        load_segments(path, max_segments=max_segments)
    assert info.value.reason == "corrupt"
    assert "1 Hz" in str(info.value) and "one-hertz.wav" in str(info.value)


@pytest.mark.parametrize("max_segments", [None, 2])
def test_file_longer_than_max_duration_is_too_long(tmp_path, max_segments):
    path = write_audio(
        tmp_path / "long.flac", tone(seconds=20, sample_rate=22050), sample_rate=22050
    )
    with pytest.raises(AudioFileError) as info:
        load_segments(path, max_segments=max_segments, max_duration_s=10.0)
    assert info.value.reason == "too-long" and "--max-duration" in str(info.value)
    assert len(load_segments(path, max_segments=max_segments, max_duration_s=30.0)) >= 1


def test_long_file_decoded_in_blocks_equals_one_shot_decode(tmp_path):
    import soundfile as sf
    import soxr

    from genre.audio import load

    y = tone(seconds=150, sample_rate=44100, channels=2)  # 2.5 minutes: three 60 s blocks
    path = write_audio(tmp_path / "long.wav", y, sample_rate=44100)
    decoded, duration = load(path, sample_rate=22050)
    native, rate = sf.read(path, dtype="float32")
    reference = soxr.resample(native.mean(axis=1, dtype=np.float32), rate, 22050, quality="HQ")
    assert duration == pytest.approx(150.0)
    assert decoded.shape == reference.shape and np.allclose(decoded, reference, atol=1e-6)


def test_one_hertz_file_is_an_error_beside_its_batch_in_extract_batch(tmp_path):
    good = [
        write_audio(
            tmp_path / f"g{i}.wav",
            tone(seconds=3.5, sample_rate=22050, freq_hz=200 + 50 * i),
            sample_rate=22050,
        )
        for i in range(3)
    ]
    bad = write_one_hertz_wav(tmp_path / "bad.wav")
    paths = [str(good[0]), str(bad), *map(str, good[1:])]
    batch = {
        "path": np.array(paths, object),
        "track_id": np.array(paths, object),
        "genre": np.array([None] * len(paths), object),
    }
    out = extract_batch(batch, cfg=FeatureConfig(features=("mfcc",)), output=str(tmp_path / "out"))
    assert list(out["reason"]) == ["", "corrupt", "", ""] and "1 Hz" in out["message"][1]
    assert list(out["segments"]) == [1, 0, 1, 1]


def test_a_batch_of_long_tracks_is_written_in_several_shards(tmp_path):
    paths = [
        str(
            write_audio(
                tmp_path / f"t{i}.wav",
                tone(seconds=9.5, sample_rate=22050, freq_hz=300 + i),
                sample_rate=22050,
            )
        )
        for i in range(4)
    ]
    batch = {
        "path": np.array(paths, object),
        "track_id": np.array(paths, object),
        "genre": np.array([None] * 4, object),
    }
    out = extract_batch(
        batch,
        cfg=FeatureConfig(features=("mfcc",)),
        output=str(tmp_path / "out"),
        max_shard_segments=5,
    )
    assert list(out["segments"]) == [3, 3, 3, 3] and all(out["shard"])
    assert len(set(out["shard"])) == 2 == len(list((tmp_path / "out").glob("part-*.parquet")))


@pytest.mark.slow
def test_hundred_files_with_a_1_hz_header_extract_99_and_label_99_plus_one_error(tmp_path, tuned):
    import pandas as pd

    root = tmp_path / "corpus"
    for i in range(99):
        genre = ("blues", "rock", "jazz")[i % 3]
        write_audio(
            root / genre / f"{genre}.{i:05d}.wav",
            tone(seconds=3.2, sample_rate=16000, freq_hz=150 + 7 * i),
            sample_rate=16000,
        )
    write_one_hertz_wav(root / "rock" / "rock.00999.wav")
    started = time.perf_counter()
    shards = tmp_path / "shards"
    result = run_job(
        "jobs.extract",
        str(root),
        str(shards),
        "--features",
        "mfcc,mel",
        "--num-cpus",
        "2",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.perf_counter() - started < 240, "extract must finish in normal time"
    assert "99 tracks" in result.stdout and "corrupt: 1" in result.stdout, result.stdout
    errors = pd.read_parquet(shards / "_errors.parquet")
    assert list(errors.track_id) == ["rock/rock.00999.wav"] and "1 Hz" in errors.message[0]
    assert pd.read_parquet(shards, columns=["track_id"]).track_id.nunique() == 99
    labels = tmp_path / "labels"
    result = run_job(
        "jobs.label",
        str(root),
        str(labels),
        "--model",
        f"models:/{tuned.name}@champion",
        "--tracking-uri",
        tuned.uri,
        "--num-cpus",
        "2",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pd.read_parquet(labels)
    assert len(rows) == 100 and rows.error.notna().sum() == 1
    culprit = rows[rows.error.notna()].iloc[0]
    assert (
        culprit.path.endswith("rock.00999.wav")
        and culprit.error_reason == "corrupt"
        and "1 Hz" in culprit.error
    )


@pytest.mark.slow
def test_worker_killed_on_one_file_loses_no_other_file_and_lists_the_culprit(tmp_path, tuned):
    """A worker that dies on a file (as one OOM-killed would) is retried; the file is
    skipped as ``crashed`` on the third attempt and the rest of its batch is written."""
    root = tmp_path / "corpus"
    for i in range(6):
        write_audio(
            root / "pop" / f"pop.{i:05d}.wav",
            tone(seconds=3.5, sample_rate=22050, freq_hz=220 + 30 * i),
            sample_rate=22050,
        )
    write_audio(
        root / "pop" / "killer.wav", tone(seconds=3.5, sample_rate=22050), sample_rate=22050
    )
    with ray_head_with({"GENRE_TEST_DIE_ON": "killer.wav"}) as (address, _):
        _killed_worker_run(root, tmp_path, tuned, env={"RAY_ADDRESS": address})


def _killed_worker_run(root, tmp_path, tuned, *, env: dict) -> None:
    """Extract and label ``root`` on a head whose workers die on ``killer.wav``."""
    import pandas as pd

    shards = tmp_path / "shards"
    result = run_job(
        "jobs.extract",
        str(root),
        str(shards),
        "--features",
        "mfcc",
        "--num-cpus",
        "2",
        "--tracks-per-shard",
        "7",
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "crashed: 1" in result.stdout, result.stdout
    assert pd.read_parquet(shards, columns=["track_id"]).track_id.nunique() == 6
    errors = pd.read_parquet(shards / "_errors.parquet")
    assert list(errors.track_id) == ["pop/killer.wav"] and list(errors.reason) == ["crashed"]
    assert "died 2 times" in errors.message[0]
    labels = tmp_path / "labels"
    result = run_job(
        "jobs.label",
        str(root),
        str(labels),
        "--model",
        f"models:/{tuned.name}@champion",
        "--tracking-uri",
        tuned.uri,
        "--num-cpus",
        "2",
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pd.read_parquet(labels)
    assert len(rows) == 7 and list(rows[rows.error.notna()].error_reason) == ["crashed"]
    # Without the fault the file is fine: --retry-errors forgets the recorded crashes.
    result = run_job(
        "jobs.label",
        str(root),
        str(labels),
        "--model",
        f"models:/{tuned.name}@champion",
        "--tracking-uri",
        tuned.uri,
        "--num-cpus",
        "2",
        "--retry-errors",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = pd.read_parquet(labels)
    assert len(rows) == 7 and rows.error.isna().all()
