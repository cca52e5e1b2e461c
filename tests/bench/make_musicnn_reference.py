"""Make tests/data/musicnn_reference.npz: what the musicnn wheel's original TF1 graphs output.

Run by hand, never by the test suite. ``tests/test_pretrained.py`` holds
``genre.pretrained`` (musicnn and the wheel's VGG taggers rebuilt in Keras 3) to these
outputs within 1e-5.

Two steps, in two environments:

1. Here, in the project's .venv: four 3 s patches of a seeded synthetic signal
   (a harmonic tone, a chirp with clicks, a clipped full-scale square wave whose
   mel bins exceed float16's range, quiet noise), turned into float32 log-mel by
   ``genre.pretrained.log_mel``.
2. In a throwaway venv with TensorFlow and the legacy ``tf_keras`` (which
   ``tf.compat.v1.layers`` needs from TF 2.16 on), this same file rebuilds the
   graph with the wheel's own ``musicnn.models.define_model``, as musicnn's
   ``extractor.py`` does, restores each of the four checkpoints with
   ``tf.compat.v1.train.Saver`` and runs it on those patches (fed directly: musicnn's
   float16 front end is bypassed). Never do this in the project's .venv.

Set up the throwaway venv once (from the repo root)::

    python3 -m venv /tmp/refenv
    /tmp/refenv/bin/pip install tensorflow-cpu==2.21.0 tf_keras==2.21.0 numpy
    /tmp/refenv/bin/pip install --no-deps --require-hashes -r requirements-musicnn.txt

then::

    .venv/bin/python tests/bench/make_musicnn_reference.py --refenv /tmp/refenv

The fixture holds, all float32: ``log_mel`` ``(4, 187, 96)`` and, for
``musicnn_msd`` and ``musicnn_mtt``, ``<name>_tags`` ``(4, 50)`` (sigmoid of
the logits), ``<name>_embedding`` ``(4, 200)`` (``penultimate``: the batch-normed
dense 200) and ``<name>_pool`` ``(4, 1506)`` (``max_pool`` then ``mean_pool``,
753 each); for ``vgg_msd`` and ``vgg_mtt`` (the checkpoints ``MSD_vgg``, ``MTT_vgg``),
``<name>_tags`` ``(4, 50)``, ``<name>_embedding`` ``(4, 256)`` (the graph's ``pool5``,
``(4, 2, 1, 128)``: its maximum over time, then its mean) and ``<name>_pool``
``(4, 1280)`` (the maximum over time and mel of each of ``pool1`` … ``pool5``, then
their means), reduced here in float64 from the graph's float32 pools;
``made_with`` says which TensorFlow ran the graph.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "data" / "musicnn_reference.npz"
CHECKPOINTS = {
    "musicnn_msd": "MSD_musicnn",
    "musicnn_mtt": "MTT_musicnn",
    "vgg_msd": "MSD_vgg",
    "vgg_mtt": "MTT_vgg",
}


def synthetic_segments(seed: int = 11) -> np.ndarray:
    """Four 3 s segments at 16 kHz: ``(4, 48000)`` float32."""
    rng = np.random.default_rng(seed)
    sr, n = 16000, 48000
    t = np.arange(n) / sr
    harmonic = sum(
        0.3 / k * np.sin(2 * np.pi * 220.0 * k * t + rng.uniform(0, 2 * np.pi)) for k in range(1, 8)
    )
    chirp = 0.2 * np.sin(2 * np.pi * (100.0 * t + 600.0 * t**2))
    clicks = np.zeros(n)
    clicks[rng.integers(0, n, 24)] = rng.uniform(0.5, 1.0, 24)
    chirp = chirp + np.convolve(clicks, np.exp(-np.arange(400) / 60.0), mode="same")
    square = np.clip(
        3.0 * np.sign(np.sin(2 * np.pi * 110.0 * t)) + 0.1 * rng.standard_normal(n), -1.0, 1.0
    )
    quiet = 1e-3 * rng.standard_normal(n)
    return np.stack([harmonic, chirp, square, quiet]).astype(np.float32)


def run_graph(inputs: Path, output: Path) -> None:
    """Step 2, inside the throwaway venv: musicnn's TF1 graph on the stored patches."""
    import importlib.util
    import warnings

    warnings.filterwarnings("ignore")  # tf.compat.v1.layers' deprecation notices, one per layer
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    from musicnn import models  # the wheel's own code, which only this venv may import

    package = Path(importlib.util.find_spec("musicnn").submodule_search_locations[0])
    patches = np.load(inputs)
    out = {}
    for name, folder in CHECKPOINTS.items():
        tf.compat.v1.reset_default_graph()
        with tf.name_scope("model"):  # as musicnn/extractor.py builds it
            x = tf.compat.v1.placeholder(tf.float32, [None, patches.shape[1], patches.shape[2]])
            is_training = tf.compat.v1.placeholder(tf.bool)
            outputs = models.define_model(x, is_training, folder, 50)
            tags = tf.nn.sigmoid(outputs[0])
            if "vgg" in folder:  # logits, pool1 … pool5, each (batch, time, mel, 128)
                fetch = [tags, *outputs[1:]]
            else:  # logits, timbral, temporal, cnn1-3, mean_pool, max_pool, penultimate
                fetch = [tags, outputs[8], outputs[7], outputs[6]]
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().restore(sess, f"{package / folder}/")
            values = sess.run(fetch, {x: patches, is_training: False})
        out[f"{name}_tags"] = values[0]
        if "vgg" in folder:
            pools = [p.astype(np.float64) for p in values[1:]]
            last = pools[-1]
            out[f"{name}_embedding"] = np.concatenate(
                [last.max(axis=(1, 2)), last.mean(axis=(1, 2))], axis=1
            )
            out[f"{name}_pool"] = np.concatenate(
                [p.max(axis=(1, 2)) for p in pools] + [p.mean(axis=(1, 2)) for p in pools], axis=1
            )
        else:
            out[f"{name}_embedding"] = values[1]
            out[f"{name}_pool"] = np.concatenate([values[2], values[3]], axis=1)
    import tf_keras

    out["made_with"] = np.array(
        f"tensorflow {tf.__version__}, tf_keras {tf_keras.__version__}, musicnn 0.1.0 models.py"
    )
    np.savez(output, **out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--refenv",
        type=Path,
        default=Path("/tmp/refenv"),
        help="throwaway venv with tensorflow + tf_keras + musicnn",
    )
    parser.add_argument(
        "--graph", nargs=2, type=Path, metavar=("INPUTS", "OUTPUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.graph:
        run_graph(*args.graph)
        return

    sys.path.insert(0, str(REPO))
    from genre.pretrained import log_mel

    patches = log_mel(synthetic_segments())
    with tempfile.TemporaryDirectory() as tmp:
        inputs, output = Path(tmp) / "inputs.npy", Path(tmp) / "outputs.npz"
        np.save(inputs, patches)
        subprocess.run(
            [str(args.refenv / "bin" / "python"), __file__, "--graph", str(inputs), str(output)],
            check=True,
        )
        with np.load(output) as ref:
            graph = {key: ref[key] for key in ref.files}
    arrays = {key: value.astype(np.float32) for key, value in graph.items() if key != "made_with"}
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURE, log_mel=patches, made_with=graph["made_with"], **arrays)
    print(
        f"{FIXTURE.relative_to(REPO)}: {FIXTURE.stat().st_size} bytes, "
        f"made with {graph['made_with']}"
    )
    for key, value in arrays.items():
        print(f"  {key}: {value.shape} range [{value.min():.4g}, {value.max():.4g}]")


if __name__ == "__main__":
    main()
