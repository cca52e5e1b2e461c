"""Everything that depends on the Keras backend, in one small module.

TensorFlow is the default backend (the project's stack); JAX and PyTorch work too:
set ``KERAS_BACKEND=jax`` or ``KERAS_BACKEND=torch`` before a job starts (for example on
a GPU stack that has no TensorFlow wheels). Every backend-specific call lives here, with
a branch per backend: thread counts, GPU memory growth and visibility, mixed precision,
the pip pins a logged model records, reading a TF1 checkpoint (musicnn's weights), and
keeping TensorFlow's start-up chatter (absl and oneDNN lines that ``TF_CPP_MIN_LOG_LEVEL``
does not stop) off the terminal unless ``GENRE_BACKEND_VERBOSE=1``. The rest of genre
uses the Keras API only; ``tests/test_backend.py`` checks that no other module imports
TensorFlow.

Call :func:`configure` once per process before the first Keras op.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from genre.errors import GenreError, ParameterError

__all__ = [
    "BACKENDS",
    "backend_name",
    "configure",
    "gpu_count",
    "pip_requirements",
    "read_tf_checkpoint",
    "import_tensorflow",
]

BACKENDS = ("tensorflow", "jax", "torch")
_VERBOSE = "GENRE_BACKEND_VERBOSE"


def backend_name() -> str:
    """The Keras backend this process uses (``KERAS_BACKEND``, else TensorFlow).

    Raises
    ------
    ParameterError
        ``KERAS_BACKEND`` names a backend genre does not support.
    """
    name = os.environ.get("KERAS_BACKEND", "tensorflow").strip().lower() or "tensorflow"
    if name not in BACKENDS:
        raise ParameterError(f"KERAS_BACKEND={name!r}: choose one of {', '.join(BACKENDS)}")
    return name


@contextlib.contextmanager
def _quiet_native_stderr():
    """Send what native code writes to stderr to a file; replay it if something fails."""
    if os.environ.get(_VERBOSE) == "1":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow():
    """``import tensorflow``, without its absl/oneDNN start-up lines on the terminal."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read when TF's C++ side loads
    with _quiet_native_stderr(), _without_jax():
        import tensorflow as tf
    return tf


@contextlib.contextmanager
def _without_jax():
    """Hide JAX from TensorFlow's import, unless this process uses JAX.

    ``import tensorflow`` imports its TFLite converter, which imports JAX whenever it is
    installed (for converting JAX functions, which genre never does): ~320 modules and
    0.3–0.5 s of a CPU in every process that imports TensorFlow, on each Ray worker and
    trial. Afterwards JAX imports as usual.
    """
    if "jax" in sys.modules or backend_name() == "jax":
        yield
        return
    sys.modules["jax"] = None  # type: ignore[assignment]  # "from jax import …" → ImportError
    try:
        yield
    finally:
        if sys.modules.get("jax", 0) is None:
            del sys.modules["jax"]


def configure(
    *, gpus: bool | None = None, mixed_precision: bool = False, threads: int | None = None
) -> None:
    """Set the backend up for this process; call it before the first Keras op.

    Turns on memory growth (TensorFlow) or off preallocation (JAX) for every GPU, so
    that several Ray trials or predictors given fractional GPUs can share one card.
    Safe to call more than once: once devices are initialised, device settings stay.

    Parameters
    ----------
    gpus : bool or None
        ``None`` uses whatever GPUs are visible; ``False`` hides them all (CPU only);
        ``True`` requires at least one.
    mixed_precision : bool
        Compute in float16 (Keras ``mixed_float16``) when a GPU is used; ignored on CPU.
        The model builders keep their output layer in float32.
    threads : int or None
        Intra-op threads (a trial's CPU share); ``None`` leaves the backend's default.

    Raises
    ------
    GenreError
        ``gpus=True`` and the backend sees no GPU.
    """
    name = backend_name()
    if name == "tensorflow":
        _configure_tensorflow(gpus=gpus, threads=threads)
    elif name == "jax":
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # read at JAX's start
        if gpus is False:
            os.environ["JAX_PLATFORMS"] = "cpu"
    if name != "tensorflow" and importlib.util.find_spec("tensorflow") is not None:
        # Keras imports TensorFlow whenever it is installed, whatever the backend (its
        # set_random_seed seeds it, for one): import it here, quietly, before Keras does.
        import_tensorflow()
    if name == "torch":
        import torch

        if threads:
            torch.set_num_threads(max(1, int(threads)))
    if gpus is True and gpu_count() == 0:
        raise GenreError(
            f"gpus=True, but the {name} backend sees no GPU (is a CUDA build installed?)"
        )
    if mixed_precision and gpus is not False and gpu_count() > 0:
        import keras

        keras.mixed_precision.set_global_policy("mixed_float16")


def _configure_tensorflow(*, gpus: bool | None, threads: int | None) -> None:
    tf = import_tensorflow()
    physical = tf.config.list_physical_devices("GPU")
    with contextlib.suppress(RuntimeError):  # RuntimeError: devices already initialised
        if gpus is False and physical:
            tf.config.set_visible_devices([], "GPU")
    for gpu in physical:
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    if threads:
        with contextlib.suppress(RuntimeError):
            tf.config.threading.set_intra_op_parallelism_threads(max(1, int(threads)))
            tf.config.threading.set_inter_op_parallelism_threads(1)


def gpu_count() -> int:
    """GPUs the backend of this process can use."""
    name = backend_name()
    if name == "tensorflow":
        return len(import_tensorflow().config.get_visible_devices("GPU"))
    if name == "jax":
        import jax

        return sum(1 for d in jax.devices() if d.platform == "gpu")
    import torch

    return torch.cuda.device_count()


def pip_requirements() -> list[str]:
    """What a logged model needs installed to load: this Keras and this backend's build."""
    import importlib.metadata as md

    import keras

    name = backend_name()
    if name == "tensorflow":
        tf = import_tensorflow()
        dist = "tensorflow-cpu" if _installed("tensorflow-cpu") else "tensorflow"
        return [f"keras=={keras.__version__}", f"{dist}=={tf.__version__}"]
    return [f"keras=={keras.__version__}", f"{name}=={md.version(name)}"]


def _installed(dist: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(dist)
    except md.PackageNotFoundError:
        return False
    return True


def read_tf_checkpoint(folder: str | Path) -> dict[str, np.ndarray]:
    """Every variable of the TF1 checkpoint in ``folder`` by name (TensorFlow needed).

    Raises
    ------
    ParameterError
        TensorFlow is not installed (another Keras backend): the checkpoint format
        has no other reader.
    """
    try:
        tf = import_tensorflow()
    except ImportError as exc:
        raise ParameterError(
            f"reading the TF1 checkpoint in {folder} needs TensorFlow, which is not installed with "
            f"the {backend_name()} backend: pip install tensorflow-cpu"
        ) from exc
    # The trailing separator matters: the files are <folder>/.index and .data-*, and the
    # `checkpoint` file beside them points at the author's machine.
    reader = tf.compat.v1.train.NewCheckpointReader(str(folder) + os.sep)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
