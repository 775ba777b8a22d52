"""What every benchmark shares: machine facts, timing statistics, tables, results files,
and the generated data and trained model they measure.

The machines these run on are shared and noisy, so each benchmark records the load
average next to its numbers and reports ratios of figures taken in the same run,
never absolute figures from different runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_IMAGE_SIZE = 64
MODEL_NAME = "shapes"
LOOPBACK = "127.0.0.1"

# The benchmarks' model: generated shapes, random init (no ImageNet weights offline),
# trained just well enough that its answers are confident (agreement checks need that).
DATA_CLASSES = 4
DATA_PER_CLASS = 60
MODEL_CONFIG: dict[str, Any] = {
    "weights": "none",
    "batch_size": 16,
    "augmentation": "light",
    "head_epochs": 6,
    "fine_tune_epochs": 3,
    "learning_rate": 2e-3,
    "fine_tune_learning_rate": 1e-4,
    "early_stopping_patience": 0,
}


def machine() -> dict[str, Any]:
    """CPU model, cores, load average and software versions, recorded with every result."""
    model = platform.processor() or "unknown"
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "x86_64", ""):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    import tensorflow as tf

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "bf16_units": sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"}),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def load_average() -> float:
    """The 1-minute load average: over the core count means other work shared the CPU."""
    return round(os.getloadavg()[0], 2)


def percentiles(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99 and mean of durations, in milliseconds."""
    if not seconds:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "mean_ms": round(float(ms.mean()), 2),
    }


def time_calls(
    fn: Callable[[], object], *, warmup: int, min_calls: int, max_calls: int, max_seconds: float
) -> list[float]:
    """Durations (s) of repeated `fn()` calls: at least `min_calls`, stopping at `max_calls`
    or once `max_seconds` have passed, whichever comes first after the minimum."""
    for _ in range(warmup):
        fn()
    durations: list[float] = []
    started = time.perf_counter()
    while len(durations) < max_calls:
        t = time.perf_counter()
        fn()
        durations.append(time.perf_counter() - t)
        if len(durations) >= min_calls and time.perf_counter() - started >= max_seconds:
            break
    return durations


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator else float("nan")


def format_table(title: str, columns: Sequence[tuple[str, str]], rows: Sequence[dict]) -> str:
    """A plain-text table; `columns` are (key, heading) pairs, missing keys print as '-'."""

    def cell(value: object) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
        return str(value)

    body = [[cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [
        max(len(heading), *(len(r[i]) for r in body)) if body else len(heading)
        for i, (_, heading) in enumerate(columns)
    ]
    lines = [title, "  ".join(h.rjust(w) for (_, h), w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in body]
    return "\n".join(lines)


def write_results(name: str, payload: dict, figure: Any, out_dir: Path = RESULTS_DIR) -> Path:
    """Write <out_dir>/<name>.json and, from the matplotlib `figure`, <name>.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    text = json.dumps(_no_nan(payload), indent=1, default=_jsonable, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")
    if figure is not None:
        figure.savefig(out_dir / f"{name}.png", dpi=90, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(figure)
    return path


def _no_nan(value: object) -> object:
    """NaN (a figure that could not be measured, e.g. no answers) becomes null: strict JSON."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_no_nan(v) for v in value]
    return value


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def new_figure(columns: int, width: float = 5.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, columns, figsize=(width * columns, height), squeeze=False)
    return figure, list(axes[0])


def command_line(module: str, argv: list[str] | None) -> str:
    """The command as run (argv, or the process's own arguments when main() got none)."""
    return shlex.join(["python", "-m", module, *(sys.argv[1:] if argv is None else argv)])


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--image-size",
        type=int,
        default=DEFAULT_IMAGE_SIZE,
        help=f"model input size in px (default {DEFAULT_IMAGE_SIZE}; 224 is the real setting)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="keep data and models here and reuse them next time (default: a temp folder)",
    )
    parser.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help="where the JSON and PNG results go"
    )


@contextlib.contextmanager
def workdir(given: Path | None) -> Iterator[Path]:
    """`given` (created, kept), else a temporary folder removed afterwards."""
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given.resolve()
        return
    folder = Path(tempfile.mkdtemp(prefix="imgclf-bench-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def prepare_data(
    root: Path, image_size: int, per_class: int = DATA_PER_CLASS, classes: int = DATA_CLASSES
) -> Path:
    """Generated shapes (JPEG and PNG) at `image_size`, made once per folder."""
    from imgclf.demo_data import make_shapes_dataset

    data = root / f"data-{image_size}px-{classes}x{per_class}"
    if not data.is_dir():
        staging = data.with_name(data.name + ".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        make_shapes_dataset(staging, classes=classes, per_class=per_class, size=image_size, seed=0)
        staging.rename(data)
    return data


def prepare_model(root: Path, image_size: int, precision: str = "auto") -> tuple[Path, Path]:
    """(version dir, data dir): the benchmarks' model, trained once per work folder.

    It goes through the real `train_and_export`, so it is a published version with
    golden inputs and warmup records, exactly what the server loads. `precision` is the
    training arithmetic: 'auto' trains in mixed_bfloat16 on a CPU with bfloat16 units,
    and such a model computes in bfloat16 when served, so a benchmark that needs a
    float32 model (bench.bf16's baseline) asks for one.
    """
    from imgclf import repository

    data = prepare_data(root, image_size)
    suffix = "" if precision == "auto" else f"-{precision}"
    model_dir = root / f"models-{image_size}px{suffix}"
    if model_dir.is_dir() and repository.list_versions(model_dir, MODEL_NAME):
        return repository.version_path(model_dir, MODEL_NAME, 1), data
    from imgclf.config import parse_config
    from imgclf.trainer.run import train_and_export

    shutil.rmtree(model_dir, ignore_errors=True)
    started = time.monotonic()
    result = train_and_export(
        parse_config({**MODEL_CONFIG, "image_size": image_size, "precision": precision}),
        data=data,
        name=MODEL_NAME,
        model_dir=model_dir,
        run_dir=root / f"run-{image_size}px{suffix}",
    )
    print(
        f"trained the benchmark model in {time.monotonic() - started:.0f}s "
        f"(test accuracy {result.metrics['accuracy']:.2f})",
        flush=True,
    )
    return result.version_dir, data


def jpeg_images(data: Path, count: int) -> list[bytes]:
    """Up to `count` JPEG files of the generated set, classes interleaved."""
    files = sorted(data.rglob("*.jpg"), key=lambda p: (p.stem, p.parent.name))
    return [p.read_bytes() for p in files[:count]]


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")


def all_images(data: Path) -> list[tuple[str, bytes]]:
    """(class folder name, bytes) for every image file under `data`."""
    files = [p for p in sorted(data.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES]
    return [(p.parent.name, p.read_bytes()) for p in files if p.is_file()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]
