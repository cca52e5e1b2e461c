"""Bad input, collected in one place: bad files are reported, bad arguments fail fast."""

import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest

from genre.audio import load_segments
from genre.config import FeatureConfig
from genre.errors import AudioFileError
from genre.extraction import extract_batch
from tests.conftest import REPO, run_job, tone, write_audio


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
    _truncate(write_audio(root / "cut.ogg", tone(seconds=6, sample_rate=22050), sample_rate=22050), 0.05)
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
out = featurize_batch({"path": np.array([path], object), "track_id": np.array(["locked.wav"], object)},
                      cfg=FeatureConfig(), features=("mfcc",), max_segments=10)
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
        command = ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", shlex.join(command)]
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=True).stdout.strip()
    assert out == f"unreadable | {path}: permission denied"


def test_a_bad_file_becomes_an_error_row_beside_good_ones(tmp_path):
    expected = make_bad_files(tmp_path / "bad")
    good = write_audio(tmp_path / "good.wav", tone(seconds=6.5, sample_rate=22050), sample_rate=22050)
    paths = [str(good)] + [str(tmp_path / "bad" / n) for n in expected]
    batch = {"path": np.array(paths, object), "track_id": np.array(paths, object), "genre": np.array([None] * len(paths), object)}
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
    write_audio(tmp_path / "in" / "rock" / "a.wav", tone(seconds=3.5, sample_rate=22050), sample_rate=22050)
    (tmp_path / "afile").write_text("x")
    result = run_job("jobs.extract", *[a.format(tmp=tmp_path) for a in args], timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip() and "WARNING" not in line]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.stderr, result.stderr
