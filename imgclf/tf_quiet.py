"""Importing TensorFlow without its start-up noise on machines that have no GPU.

TensorFlow's C++ side writes "Could not find cuda drivers" and "failed call to cuInit"
straight to file descriptor 2 before its logging is set up, so TF_CPP_MIN_LOG_LEVEL
does not hide them. On a machine without an NVIDIA device node they say nothing a
person can act on: the import (and the device probe that calls cuInit) runs with
descriptor 2 captured, and every other line it printed is passed on.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

_NOISE = (
    "All log messages before absl::InitializeLog()",
    "Could not find cuda drivers",
    "failed call to cuInit",
    "cpu_feature_guard.cc",
    "To enable the following instructions",
    "Unable to register cu",
    "computation placer already registered",
    "oneDNN custom operations are on",  # on CPUs where TensorFlow turns oneDNN on by default
)


def has_gpu_device() -> bool:
    """True when an NVIDIA (or WSL GPU) device node exists: then CUDA messages matter."""
    return any(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/dxg").exists()


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and probe devices once, dropping CUDA noise when there is no GPU."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules or has_gpu_device():
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices("GPU")
            tf.constant(0.0).numpy()  # the eager context: where a CUDA library calls cuInit
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        text = captured.read().decode(errors="replace")
    kept = [line for line in text.splitlines() if line and not any(n in line for n in _NOISE)]
    if kept:
        print("\n".join(kept), file=sys.stderr)
