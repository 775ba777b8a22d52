"""How long tearing down a training pipeline's iterator takes: `python -m bench.teardown`.

Keras makes a new iterator over the training set every epoch (and one for every evaluate
and predict) and destroys the old one. With tf.data's autotuning on, that destruction
waited for the autotuner's background thread to wake from its sleep, which grows with
the iterator's age (up to 60 s). imgclf's pipelines (imgclf/trainer/pipeline.py) now run
with fixed parallelism and autotuning off; this benchmark measures both on the real
training pipeline of a generated set: an epoch consumes every batch through a compiled
convolution (standing in for a training step), then the iterator is deleted and the
deletion is timed. The two settings alternate, epoch by epoch.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import common

NAME = "tfdata-teardown"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.teardown", description=__doc__)
    parser.add_argument("--epochs", type=int, default=6, help="epochs per setting")
    parser.add_argument("--per-class", type=int, default=150, help="generated images per class")
    parser.add_argument(
        "--work", type=int, default=200, help="convolutions per batch (epoch length)"
    )
    parser.add_argument("--workdir", type=Path, help="keep the generated images here")
    parser.add_argument("--out", type=Path, default=common.RESULTS_DIR / "perf")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import numpy as np
    import tensorflow as tf

    from imgclf.config import parse_config
    from imgclf.trainer.pipeline import load_for_config, training_dataset

    machine = common.machine()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, load {machine['load_average']}")
    with common.workdir(args.workdir) as root:
        data = common.prepare_data(root, 32, per_class=args.per_class)
        config = parse_config({"weights": "none", "image_size": 32, "batch_size": 16})
        dataset, preprocess = load_for_config(config, data)
        imgclf_ds = training_dataset(dataset.splits["train"], dataset.classes, preprocess, config)
        autotuned = tf.data.Options()
        autotuned.autotune.enabled = True
        pipelines = {
            "autotune off (imgclf)": imgclf_ds,
            "autotune on": imgclf_ds.with_options(autotuned),
        }
        kernel = tf.random.normal([3, 3, 3, 3])

        @tf.function
        def step(images: tf.Tensor) -> tf.Tensor:
            for _ in range(args.work):
                images = tf.nn.conv2d(images, kernel, 1, "SAME") * 0.1
            return tf.reduce_sum(images)

        rows: dict[str, list[dict[str, float]]] = {name: [] for name in pipelines}
        for epoch in range(args.epochs):
            for name, ds in pipelines.items():
                iterator = iter(ds)
                started = time.monotonic()
                for images, _ in iterator:
                    step(images)
                ended = time.monotonic()
                del iterator
                teardown = time.monotonic() - ended
                rows[name].append(
                    {"epoch_s": round(ended - started, 2), "teardown_s": round(teardown, 3)}
                )
                print(
                    f"epoch {epoch + 1} {name}: {ended - started:.1f} s, teardown {teardown:.3f} s",
                    flush=True,
                )
    summary = {
        name: {
            "epochs": len(r),
            "epoch_s_median": float(np.median([x["epoch_s"] for x in r])),
            "teardown_s_max": max(x["teardown_s"] for x in r),
            "teardown_s_total": round(sum(x["teardown_s"] for x in r), 3),
            "stalls_over_100ms": sum(x["teardown_s"] > 0.1 for x in r),
        }
        for name, r in rows.items()
    }
    for name, s in summary.items():
        print(f"{name}: {s}")
    payload = {
        "benchmark": NAME,
        "machine": machine,
        "load_average_end": common.load_average(),
        "settings": vars(args) | {"workdir": str(args.workdir), "out": str(args.out)},
        "rows": rows,
        "summary": summary,
    }
    print(common.write_results(NAME, payload, None, args.out))


if __name__ == "__main__":
    main()
