"""Calibration and min_score benchmark: `python -m bench.calibration`.

Trains imgclf on a small real set built offline (bench/datasets.py; scikit-learn digits by
default, 270 test images) with a cheap head-only recipe and no label smoothing (which
leaves a network over-confident), through the real `train_and_export`, then reads the
model card: the fitted temperature, ECE and NLL before and after on validation and test,
and what each `min_score` costs on the test split (coverage = images answered, accuracy
of those answered). Everything printed is what the served model answers: the temperature
is inside the export and the parity check held.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench import common, datasets

NAME = "calibration"
CONFIG = {
    "weights": "none",
    "recipe": "fine_tune",  # head on a frozen (random) base: features cached, minutes on 2 cores
    "augmentation": "none",
    "label_smoothing": 0.0,
    "head_epochs": 30,
    "fine_tune_epochs": 0,
    "early_stopping_patience": 0,
    "learning_rate": 3e-3,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.calibration", description=__doc__)
    parser.add_argument("--dataset", default="digits", choices=sorted(datasets.BUILDERS))
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--set", action="append", default=[], help="config override key=value")
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    from imgclf.config import parse_config, parse_overrides
    from imgclf.trainer.run import train_and_export

    args = parse_args(argv)
    machine = common.machine()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, load {machine['load_average']}")
    config = parse_config({**CONFIG, "image_size": args.image_size, **parse_overrides(args.set)})
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        data = datasets.BUILDERS[args.dataset](root / "data")
        started = time.perf_counter()
        result = train_and_export(
            config, data=data, name=NAME, model_dir=root / "models", run_dir=root / "run"
        )
        seconds = round(time.perf_counter() - started, 1)
    card = result.card
    record = card["calibration"]
    splits = [
        {"split": name, **{k: v for k, v in s.items() if not k.startswith("reliability")}}
        for name, s in record["splits"].items()
    ]
    print(f"temperature T = {record['temperature']:.4g} (fitted on validation), {seconds}s")
    print(
        common.format_table(
            "ECE and NLL before/after temperature scaling",
            [
                ("split", "split"),
                ("count", "images"),
                ("ece_before", "ECE before"),
                ("ece_after", "ECE after"),
                ("nll_before", "NLL before"),
                ("nll_after", "NLL after"),
            ],
            splits,
        )
    )
    coverage = card["thresholds"]["coverage"]
    print(
        common.format_table(
            f"min_score on the test split ({card['metrics']['test']['count']} images)",
            [
                ("min_score", "min_score"),
                ("coverage", "coverage"),
                ("accuracy", "accuracy"),
                ("answered", "answered"),
            ],
            coverage,
        )
    )
    figure, (ax,) = common.new_figure(1)
    ax.plot(
        [r["coverage"] for r in coverage],
        [r["accuracy"] if r["accuracy"] is not None else float("nan") for r in coverage],
        "o-",
    )
    for r in coverage:
        ax.annotate(f"{r['min_score']:g}", (r["coverage"], r["accuracy"] or 0.0), fontsize=8)
    ax.set_xlabel("coverage (share answered)")
    ax.set_ylabel("accuracy of answered")
    ax.set_title(f"{args.dataset}: min_score on the test split")
    ax.grid(alpha=0.3)
    payload = {
        "machine": machine,
        "dataset": args.dataset,
        "config": config.model_dump(),
        "seconds": seconds,
        "test_accuracy": result.metrics["accuracy"],
        "temperature": record["temperature"],
        "splits": splits,
        "coverage": coverage,
        "parity": result.parity,
    }
    path = common.write_results(NAME, payload, figure, args.out)
    print(f"written {path}")
    return payload


if __name__ == "__main__":
    main()
