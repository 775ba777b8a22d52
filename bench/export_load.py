"""Where export+verify and a version's load spend their time, on the tests' model:
`python -m bench.export_load [--workdir DIR] [--rounds N]`.

Trains once with tests/conftest.py's FAST configuration (32 px, weights=none) into
`--workdir` (kept and reused next time), then, in fresh processes:

- export: `run.export_and_verify` into a new staging folder, after the stages that come
  before it in `train_and_export` (training resumes from the finished checkpoints, so
  nothing trains again); each step inside it is timed by wrapping the real functions;
- load: what a server does with a version (`server/manager.py`): `LoadedVersion`,
  `replay_golden`, `run_warmup`, with `tf.saved_model.load` and the first call of each
  signature timed, on the version the export step just wrote.

Rows are printed in completion order (a nested call before its caller). The machine is
shared: the load average is printed with every round; compare rounds run together.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROWS: list[tuple[str, float]] = []


def _timed(owner: object, attr: str, label: str) -> None:
    """Replace owner.attr by a wrapper that records each call's wall time in ROWS."""
    fn = getattr(owner, attr)
    calls = [0]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        calls[0] += 1
        started = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            ROWS.append((f"{label} #{calls[0]}", time.monotonic() - started))

    setattr(owner, attr, wrapper)


def _time_artifact_calls() -> None:
    import tensorflow as tf

    from imgclf import artifact

    _timed(tf.saved_model, "load", "tf.saved_model.load")
    for method in ("predict_images", "predict_bytes", "explain_bytes"):
        _timed(artifact.LoadedVersion, method, f"LoadedVersion.{method}")


def _print_rows(total: str) -> None:
    for label, seconds in ROWS:
        print(f"{seconds:8.2f} s  {label}")
    print(total, f"(load average {os.getloadavg()[0]:.2f})", flush=True)


def _setup(workdir: Path):
    from imgclf.config import parse_config
    from imgclf.demo_data import make_shapes_dataset
    from imgclf.trainer import run
    from tests.conftest import FAST

    config = parse_config(FAST)
    data = workdir / "shapes"
    if not data.is_dir():
        make_shapes_dataset(data, classes=3, per_class=30, size=48, seed=1)
    if not (workdir / "models").is_dir():
        run.train_and_export(
            config, data=data, name="shapes", model_dir=workdir / "models", run_dir=workdir / "run"
        )
    return config, data


def export_step(workdir: Path) -> None:
    import keras

    from imgclf.trainer import export, gradcam, run

    config, data = _setup(workdir)
    loaded = run.load(config, data, workdir / "run")
    fitted = run.fit(config, loaded, workdir / "run")  # resumes: all epochs are done
    calibrated = run.calibrate(config, loaded, fitted)
    evaluation = run.evaluate(config, loaded, fitted, calibrated)
    run.mistakes_gallery(config, loaded, fitted, evaluation, workdir / "run")
    _time_artifact_calls()
    for name in ("write_savedmodel", "write_golden", "parity_check", "write_warmup"):
        _timed(export, name, f"export.{name}")
    _timed(run, "replay_golden", "replay_golden")
    _timed(keras.Model, "predict", "keras.Model.predict")
    _timed(gradcam.GradCam, "__call__", "GradCam.__call__ (eager, or traced in an export)")
    staging = workdir / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    started = time.monotonic()
    run.export_and_verify(staging, config, loaded, fitted, "shapes", calibrated)
    _print_rows(f"export_and_verify {time.monotonic() - started:.2f} s")


def load_step(version: Path) -> None:
    started = time.monotonic()
    from imgclf.artifact import LoadedVersion, replay_golden
    from imgclf.server.manager import run_warmup

    print(f"{time.monotonic() - started:8.2f} s  import (TensorFlow, imgclf)")
    _time_artifact_calls()
    steps = {}
    started = time.monotonic()
    loaded = LoadedVersion(version)
    steps["LoadedVersion"] = time.monotonic() - started
    started = time.monotonic()
    replay_golden(loaded)
    steps["replay_golden"] = time.monotonic() - started
    started = time.monotonic()
    run_warmup(loaded)
    steps["run_warmup"] = time.monotonic() - started
    parts = ", ".join(f"{k} {v:.2f} s" for k, v in steps.items())
    _print_rows(f"version load {sum(steps.values()):.2f} s: {parts}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/imgclf-export-load"))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--step", choices=["export", "load"], help=argparse.SUPPRESS)
    parser.add_argument("--version", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step == "export":
        return export_step(args.workdir)
    if args.step == "load":
        return load_step(args.version)
    args.workdir.mkdir(parents=True, exist_ok=True)
    for n in range(args.rounds):
        for step in ("export", "load"):
            print(f"--- round {n + 1}: {step}", flush=True)
            command = [sys.executable, "-m", "bench.export_load", "--step", step]
            command += ["--workdir", str(args.workdir), "--version", str(args.workdir / "staging")]
            subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
