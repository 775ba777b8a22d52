"""`imgclf demo`: the main job on embedded defaults, for a first look on any machine.

Makes a small generated image set, trains with weights=none at a small size,
publishes a version, and classifies held-out images with the exported model.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from imgclf.settings import Settings

DEMO_CLASSES = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="demo", help="where data, models and runs go")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--per-class", type=int, default=40, help="generated images per class")
    parser.add_argument("--weights", default="none", help="'none' offline; 'imagenet' if online")
    parser.add_argument("--name", default="shapes")


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    from imgclf.config import parse_config
    from imgclf.demo_data import SHAPES, draw_shape, make_shapes_dataset

    workdir = Path(args.workdir).resolve()
    print(
        f"imgclf demo: trains a {DEMO_CLASSES}-class ResNet-50 on generated images "
        f"({args.image_size}px, weights={args.weights}); about 2-5 minutes on 2 CPU cores."
    )
    data = workdir / "data"
    if not data.is_dir():
        make_shapes_dataset(
            data, classes=DEMO_CLASSES, per_class=args.per_class, size=args.image_size, seed=0
        )
    holdout = workdir / "holdout"
    if not holdout.is_dir():
        import numpy as np
        import tensorflow as tf

        holdout.mkdir(parents=True)
        rng = np.random.default_rng(12345)
        for shape in SHAPES[:DEMO_CLASSES]:
            pixels = draw_shape(shape, args.image_size, rng)
            (holdout / f"{shape}.jpg").write_bytes(tf.io.encode_jpeg(pixels).numpy())
    config = parse_config(
        {
            "image_size": args.image_size,
            "weights": args.weights,
            "batch_size": 16,
            "head_epochs": 6,
            "fine_tune_epochs": 3,
            "learning_rate": 2e-3,
            "fine_tune_learning_rate": 1e-4,
            "augmentation": "light",
        }
    )
    from imgclf.cli import _print_result
    from imgclf.trainer.run import train_and_export

    model_dir = workdir / "models"
    started = time.monotonic()
    result = train_and_export(
        config,
        data=data,
        name=args.name,
        model_dir=model_dir,
        run_dir=workdir / "runs" / time.strftime("%Y%m%dT%H%M%S"),
        keras_home=settings.keras_home,
        verbose=2,
    )
    _print_result(result)
    from imgclf.server.savedmodel import LoadedVersion

    loaded = LoadedVersion(result.version_dir)
    print(f"\nheld-out images classified by {args.name} version {result.version}:")
    for image in sorted(holdout.iterdir()):
        top = loaded.top_k(loaded.predict_bytes([image.read_bytes()]), 3)[0]
        print(f"  {image.name:>14}: " + ", ".join(f"{p.label} {p.score:.2f}" for p in top))
    print(f"\ndone in {time.monotonic() - started:.0f}s; open {result.report} for the report")
    return 0
