"""Reduced precision on CPU: `python -m bench.bf16 [--image-size 64]`.

The exported model under TensorFlow's oneDNN bfloat16 auto-mixed-precision graph
rewrite (`auto_mixed_precision_onednn_bfloat16`), against fp32: throughput of
`predict_images` (what the server's batcher calls) at batch 1, 8 and 32, and top-1
agreement over every image of the generated set, through the server's own path
(`preprocess` signature, then `predict_images`).

The option is process-wide and applies when a function is first traced or loaded,
so each precision runs in its own child process; children alternate
fp32, bf16, fp32, bf16 ... so drift in the machine's load hits both alike. A last
short child runs one bf16 call with ONEDNN_VERBOSE=1 to record which oneDNN kernels
(AMX, AVX-512 BF16, or emulation) did the work.

Qualifies as a server option when best-batch throughput >= 1.4x fp32 with >= 99%
top-1 agreement.

The measured model is trained in float32, so the fp32 column is float32 arithmetic. On a
CPU with bfloat16 units, `precision: auto` trains in mixed_bfloat16 instead, and such a
model computes in bfloat16 when served without any rewrite: a third column measures the
same recipe trained that way (its own weights, so its accuracy is reported, not agreement).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench import common
from imgclf import contract
from imgclf.cpu import cpu_has_bf16

NAME = "bf16"
BATCHES = (1, 8, 32)
MIN_SPEEDUP = 1.4
MIN_AGREEMENT = 0.99
BF16_OPTION = "auto_mixed_precision_onednn_bfloat16"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.bf16", description=__doc__)
    common.add_common_arguments(parser)
    parser.add_argument("--rounds", type=int, default=2, help="fp32/bf16 child pairs")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing window per batch")
    parser.add_argument("--child", choices=["fp32", "bf16", "isa"], help=argparse.SUPPRESS)
    parser.add_argument(
        "--model", type=Path, help="a published version folder to measure (default: train one)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        help="images to check agreement on, e.g. real photos in class folders "
        "(default: the generated set)",
    )
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)  # a child's output
    return parser.parse_args(argv)


def child(args: argparse.Namespace) -> None:
    """Runs in a fresh process: set the precision first, then load and measure."""
    import numpy as np
    import tensorflow as tf

    from imgclf.artifact import LoadedVersion

    if args.child in ("bf16", "isa"):
        tf.config.optimizer.set_experimental_options({BF16_OPTION: True})
    loaded = LoadedVersion(args.model)
    files = common.all_images(args.data)
    if args.child == "isa":
        loaded.predict_images(np.stack([loaded.preprocess(files[0][1])]))
        return
    images = np.stack([loaded.preprocess(data) for _, data in files])
    probabilities = np.concatenate(
        [loaded.predict_images(images[i : i + 32]) for i in range(0, len(images), 32)]
    )
    timings = []
    for batch in BATCHES:
        x = images[:batch]
        durations = common.time_calls(
            lambda x=x: loaded.predict_images(x),
            warmup=5,
            min_calls=5,
            max_calls=100_000,
            max_seconds=args.seconds,
        )
        mean = sum(durations) / len(durations)
        timings.append(
            {"batch": batch, "images_per_s": batch / mean, **common.percentiles(durations)}
        )
    args.result.write_text(
        json.dumps(
            {
                "precision": args.child,
                "options": {
                    k: bool(v) for k, v in tf.config.optimizer.get_experimental_options().items()
                },
                "timings": timings,
                "labels": [label for label, _ in files],
                "classes": loaded.labels,
                "probabilities": probabilities.round(7).tolist(),
            }
        ),
        encoding="utf-8",
    )


def _run_child(mode: str, args: argparse.Namespace, model: Path, data: Path, out: Path) -> str:
    argv = [sys.executable, "-m", "bench.bf16", "--child", mode, "--model", str(model)]
    argv += ["--data", str(data), "--result", str(out), "--seconds", str(args.seconds)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if mode == "isa":
        env["ONEDNN_VERBOSE"] = "1"
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"bf16 child {mode} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def _training_precision(version_dir: Path) -> str:
    """The arithmetic the version was trained in, from its model card (float32 if unsaid)."""
    card = json.loads((version_dir / contract.MODEL_CARD_FILE).read_text(encoding="utf-8"))
    return card.get("recipe", {}).get("precision", "float32")


def _timing(run: dict, batch: int) -> dict:
    """One child run's timing at `batch`."""
    return next(t for t in run["timings"] if t["batch"] == batch)


def _speedups(baseline: list[dict], other: list[dict], batch: int) -> list[float]:
    """Round by round, `other`'s images/s at `batch` over the baseline's of that round."""
    return [
        _timing(b, batch)["images_per_s"] / _timing(f, batch)["images_per_s"]
        for f, b in zip(baseline, other, strict=True)
    ]


def kernels(verbose_output: str) -> dict[str, int]:
    """Convolution/matmul kernel implementations named in ONEDNN_VERBOSE lines."""
    found: Counter[str] = Counter()
    for line in verbose_output.splitlines():
        if not line.startswith("onednn_verbose") or ",exec," not in line:
            continue
        if ",convolution," in line or ",matmul," in line or ",inner_product," in line:
            match = re.search(r",(convolution|matmul|inner_product),([^,]+),", line)
            if match:
                found[match.group(2)] += 1
    return dict(found.most_common(6))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.child:
        child(args)
        return {}
    import numpy as np

    started = time.perf_counter()
    machine = common.machine()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, load {machine['load_average']}")
    print(f"CPU bf16 units: {machine['bf16_units'] or 'none'}")
    runs: dict[str, list[dict]] = {"fp32": [], "bf16": []}
    trained_bf16: list[dict] = []  # the same recipe trained in mixed_bfloat16, served as is
    with common.workdir(args.workdir) as root:
        if args.model is not None:
            version_dir = args.model
            data = args.data or common.prepare_data(root, args.image_size)
        else:
            version_dir, data = common.prepare_model(root, args.image_size, "float32")
            data = args.data or data
        trained_in = _training_precision(version_dir)
        if trained_in != "float32":
            print(
                f"warning: {version_dir} was trained in {trained_in}: its layers compute in "
                "that precision, so the 'fp32' column does not measure float32",
                flush=True,
            )
        # What `precision: auto` gives on a CPU with bfloat16 units: a model whose layers
        # compute in bfloat16 (no graph rewrite), measured like the fp32 one.
        bf16_version = None
        if args.model is None and cpu_has_bf16():
            bf16_version, _ = common.prepare_model(root, args.image_size, "mixed_bfloat16")
        for round_ in range(args.rounds):
            variants = [("fp32", "fp32", version_dir, runs["fp32"])]
            variants.append(("bf16", "bf16", version_dir, runs["bf16"]))
            if bf16_version is not None:
                variants.append(("trained-bf16", "fp32", bf16_version, trained_bf16))
            for name, mode, version, results in variants:
                out = root / f"bf16-child-{name}-{round_}.json"
                _run_child(mode, args, version, data, out)
                results.append(json.loads(out.read_text(encoding="utf-8")))
                rates = {t["batch"]: round(t["images_per_s"], 1) for t in results[-1]["timings"]}
                print(f"  round {round_ + 1} {name}: img/s by batch {rates}", flush=True)
        isa = kernels(_run_child("isa", args, version_dir, data, root / "isa.json"))

    rows = []
    for batch in BATCHES:
        row: dict = {"batch": batch}
        for precision in ("fp32", "bf16"):
            per_round = [_timing(r, batch) for r in runs[precision]]
            row[f"{precision}_images_per_s"] = round(
                statistics.median(t["images_per_s"] for t in per_round), 2
            )
            row[f"{precision}_p50_ms"] = round(statistics.median(t["p50_ms"] for t in per_round), 2)
        per_round_ratio = _speedups(runs["fp32"], runs["bf16"], batch)
        row["speedup"] = round(statistics.median(per_round_ratio), 3)
        row["speedup_per_round"] = [round(x, 3) for x in per_round_ratio]
        if trained_bf16:
            rates = [_timing(r, batch)["images_per_s"] for r in trained_bf16]
            row["trained_bf16_images_per_s"] = round(statistics.median(rates), 2)
            speedups = _speedups(runs["fp32"], trained_bf16, batch)
            row["trained_bf16_speedup"] = round(statistics.median(speedups), 3)
        rows.append(row)
    fp32 = np.array(runs["fp32"][0]["probabilities"], np.float32)
    bf16 = np.array(runs["bf16"][0]["probabilities"], np.float32)
    classes = runs["fp32"][0]["classes"]
    labels = runs["fp32"][0]["labels"]
    labelled = all(label in classes for label in labels)  # class folders named as the model's
    truth = np.array([classes.index(label) if labelled else -1 for label in labels])
    agreement = float((fp32.argmax(1) == bf16.argmax(1)).mean())
    best_fp32 = max(r["fp32_images_per_s"] for r in rows)
    best_bf16 = max(r["bf16_images_per_s"] for r in rows)
    speedup = common.ratio(best_bf16, best_fp32)
    qualifies = speedup >= MIN_SPEEDUP and agreement >= MIN_AGREEMENT
    summary = {
        "images": len(truth),
        "top1_agreement": round(agreement, 4),
        "fp32_accuracy": round(float((fp32.argmax(1) == truth).mean()), 4) if labelled else None,
        "bf16_accuracy": round(float((bf16.argmax(1) == truth).mean()), 4) if labelled else None,
        "max_abs_probability_diff": round(float(np.abs(fp32 - bf16).max()), 5),
        "best_batch_speedup": speedup,
        "qualifies": qualifies,
        "rule": f"best-batch speedup >= {MIN_SPEEDUP} and top-1 agreement >= {MIN_AGREEMENT}",
        "kernels": isa,
    }
    if trained_bf16:  # another model (own weights): its accuracy, not agreement, compares
        trained = np.array(trained_bf16[0]["probabilities"], np.float32)
        summary["trained_bf16_accuracy"] = (
            round(float((trained.argmax(1) == truth).mean()), 4) if labelled else None
        )
    print()
    print(
        common.format_table(
            f"predict_images, fp32 vs oneDNN bf16 AMP (median of {args.rounds})",
            [
                ("batch", "batch"),
                ("fp32_images_per_s", "fp32 img/s"),
                ("bf16_images_per_s", "bf16 img/s"),
                ("speedup", "bf16/fp32"),
                ("fp32_p50_ms", "fp32 p50 ms"),
                ("bf16_p50_ms", "bf16 p50 ms"),
            ]
            + (
                [
                    ("trained_bf16_images_per_s", "trained-bf16 img/s"),
                    ("trained_bf16_speedup", "trained-bf16/fp32"),
                ]
                if trained_bf16
                else []
            ),
            rows,
        )
    )
    print(f"\n{summary}")
    print(f"\nbf16 {'QUALIFIES' if qualifies else 'does not qualify'} ({summary['rule']})")
    payload = {
        "benchmark": NAME,
        "command": common.command_line("bench.bf16", argv),
        "machine": machine,
        "load_average_end": common.load_average(),
        "image_size": args.image_size,
        "rows": rows,
        "summary": summary,
        "seconds": round(time.perf_counter() - started, 1),
    }
    figure, (axis,) = common.new_figure(1)
    x = np.arange(len(rows))
    bars = [("fp32_images_per_s", "fp32"), ("bf16_images_per_s", "bf16 (oneDNN AMP)")]
    if trained_bf16:
        bars.append(("trained_bf16_images_per_s", "trained in mixed_bfloat16"))
    width = 0.8 / len(bars)
    for i, (key, label) in enumerate(bars):
        offset = (i - (len(bars) - 1) / 2) * width
        axis.bar(x + offset, [r[key] for r in rows], width, label=label)
    axis.set_xticks(x, [f"batch {r['batch']}" for r in rows])
    axis.set(ylabel="images / s", title=f"{args.image_size}px, top-1 agreement {agreement:.1%}")
    axis.legend()
    path = common.write_results(NAME, payload, figure, args.out)
    print(f"wrote {path} and {path.with_suffix('.png')} ({payload['seconds']:.0f}s)")
    return payload


if __name__ == "__main__":
    main()
