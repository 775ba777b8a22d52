"""Quality and training-arithmetic benchmark: `python -m bench.quality`.

Trains imgclf with weights=none (the recipe `auto` picks: from_scratch) on small real
sets built offline (bench/datasets.py: scikit-learn digits, scikit-image textures,
generated colour patches) and prints each test accuracy beside a logistic regression on
the same splits. `--compare` trains the first set again under each training arithmetic
this machine supports (float32, mixed_bfloat16, XLA) with the same seed, for speed and
accuracy side by side. Records the machine (lscpu's model and flags, load average).

Goals (issue #13): digits >= 0.90, textures >= 0.75, patches >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from bench import common, datasets

NAME = "quality"
SIZES = {"digits": 32, "textures": 64, "patches": 32}
GOALS = {"digits": 0.90, "textures": 0.75, "patches": 0.95}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__)
    parser.add_argument("--sets", default="patches,textures,digits")
    parser.add_argument("--per-class", type=int, default=0, help="cap training images per class")
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--compare", action="store_true", help="float32 vs bf16 vs XLA")
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR)
    return parser.parse_args(argv)


def build(name: str, root: Path, per_class: int) -> Path:
    kwargs = {"per_class": per_class} if per_class else {}
    return datasets.BUILDERS[name](root / name, **kwargs)


def train(data: Path, out: Path, size: int, overrides: dict) -> dict:
    from imgclf.config import parse_config
    from imgclf.trainer.run import train_and_export

    config = parse_config({"weights": "none", "image_size": size, **overrides})
    started = time.perf_counter()
    result = train_and_export(
        config, data=data, name="quality", model_dir=out / "models", run_dir=out / "run"
    )
    return {
        "test_accuracy": round(result.metrics["accuracy"], 4),
        "seconds": round(time.perf_counter() - started, 1),
        "epochs_run": len(result.card["history"]),
        "recipe": result.card["recipe"],
        "load_average": common.load_average(),
    }


def lscpu() -> str:
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> dict:
    from imgclf.config import parse_overrides
    from imgclf.cpu import cpu_has_bf16

    args = parse_args(argv)
    overrides = parse_overrides(args.set)
    machine = common.machine()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, load {machine['load_average']}")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        names = [n.strip() for n in args.sets.split(",") if n.strip()]
        for name in names:
            data = build(name, root / "data", args.per_class)
            baseline = datasets.logistic_baseline(data)
            row = {"set": name, "image_size": SIZES[name], "logistic_regression": baseline}
            row |= train(data, root / "runs" / name, SIZES[name], overrides)
            row["goal"] = GOALS[name]
            rows.append(row)
            print(json.dumps(row), flush=True)
        compare = []
        if args.compare:
            name = names[0]
            data = root / "data" / name
            variants = [{"precision": "float32", "jit_compile": "off"}]
            variants.append({"precision": "float32", "jit_compile": "on"})
            if cpu_has_bf16() or machine["gpus"]:
                variants.append({"precision": "mixed_bfloat16", "jit_compile": "off"})
            for variant in variants:
                row = {"set": name, **variant}
                out = root / "runs" / f"{name}-{variant['precision']}-{variant['jit_compile']}"
                row |= train(data, out, SIZES[name], {**overrides, **variant})
                compare.append(row)
                print(json.dumps(row), flush=True)
    payload = {"machine": machine, "lscpu": lscpu(), "overrides": overrides, "sets": rows}
    payload["compare"] = compare
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{NAME}.json"
    path.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    print(f"written {path}")
    return payload


if __name__ == "__main__":
    main()
