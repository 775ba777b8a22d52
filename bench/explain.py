"""Cost of an explanation relative to a prediction: `python -m bench.explain [--image-size 224]`.

In-process, on the exported SavedModel, JPEG bytes in (what the server's batcher
calls): `serving_default` against `explain` (decode, model, Grad-CAM backward pass
through the pooling and the head, upsampling) at batch 1, 8 and 32, alternating
between the two so drift in the machine's load hits both alike. Then what the server
adds per explained image on the request thread: the model's `preprocess` for the
overlay's background and the two PNGs (heatmap, overlay).

The cost does not depend on the weights, so by default an untrained model is exported
at the requested size (`--model` measures a published version instead).
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from bench import common

NAME = "explain"
BATCHES = (1, 8, 32)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.explain", description=__doc__)
    common.add_common_arguments(parser)
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)), help="batch sizes")
    parser.add_argument("--seconds", type=float, default=3.0, help="timing window per figure")
    parser.add_argument("--rounds", type=int, default=2, help="repeats; medians are reported")
    parser.add_argument("--model", type=Path, help="a version folder (default: export one)")
    return parser.parse_args(argv)


def export_untrained(folder: Path, image_size: int, classes: int = common.DATA_CLASSES) -> Path:
    """An untrained classifier exported with every signature (made once per work folder)."""
    target = folder / f"untrained-{image_size}px"
    if (target / "saved_model.pb").is_file():
        return target
    from imgclf.trainer import export
    from imgclf.trainer.model import build_classifier
    from imgclf.trainer.preprocessing import make_preprocess

    classifier = build_classifier(
        classes, image_size=image_size, weights="none", dropout=0.0, l2=0.0
    )
    staging = target.with_name(target.name + ".tmp")
    export.write_savedmodel(
        staging,
        classifier.model,
        make_preprocess(image_size),
        [f"class{i}" for i in range(classes)],
        image_size,
    )
    staging.rename(target)
    return target


def measure(loaded, images: list[bytes], batches: list[int], seconds: float) -> list[dict]:
    """ms per image of serving_default and explain at each batch size (one round)."""
    import tensorflow as tf

    from imgclf import contract

    rows = []
    for batch in batches:
        x = tf.constant((images * (batch // len(images) + 1))[:batch])
        row: dict = {"batch": batch}
        for name, output in (
            (contract.SERVING_DEFAULT, contract.OUTPUT_PROBABILITIES),
            (contract.EXPLAIN, contract.OUTPUT_HEATMAP),
        ):
            signature = loaded.signatures[name]

            def call(signature=signature, output=output, x=x) -> None:
                signature(**{contract.INPUT_IMAGE_BYTES: x})[output].numpy()

            durations = common.time_calls(
                call, warmup=2, min_calls=3, max_calls=100_000, max_seconds=seconds
            )
            key = "predict" if name == contract.SERVING_DEFAULT else "explain"
            row[f"{key}_ms_per_image"] = 1000 * statistics.median(durations) / batch
        row["explain_over_predict"] = common.ratio(
            row["explain_ms_per_image"], row["predict_ms_per_image"]
        )
        rows.append(row)
    return rows


def measure_pngs(loaded, images: list[bytes], seconds: float) -> float:
    """ms per image the server adds on the request thread: preprocess + two PNGs."""
    from imgclf.explanation import heatmap_png, overlay_png

    heatmaps, _ = loaded.explain_bytes(images)

    def call() -> None:
        for image, heatmap in zip(images, heatmaps, strict=True):
            view = loaded.preprocess(image)
            heatmap_png(heatmap)
            overlay_png(view, heatmap)

    durations = common.time_calls(
        call, warmup=1, min_calls=3, max_calls=10_000, max_seconds=seconds
    )
    return 1000 * statistics.median(durations) / len(images)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from imgclf.artifact import LoadedVersion

    batches = [int(b) for b in args.batches.split(",")]
    with common.workdir(args.workdir) as root:
        version = args.model or export_untrained(root, args.image_size)
        loaded = LoadedVersion(version)
        data = common.prepare_data(root, args.image_size)
        images = common.jpeg_images(data, 32)
        load_before = common.load_average()
        rounds = [measure(loaded, images, batches, args.seconds) for _ in range(args.rounds)]
        pngs = statistics.median(measure_pngs(loaded, images, args.seconds) for _ in range(3))
    rows = []
    for i, batch in enumerate(batches):
        row: dict = {"batch": batch}
        for key in ("predict_ms_per_image", "explain_ms_per_image", "explain_over_predict"):
            row[key] = round(statistics.median(r[i][key] for r in rounds), 3)
        row["server_png_ms_per_image"] = round(pngs, 3)
        row["explain_with_pngs_over_predict"] = common.ratio(
            row["explain_ms_per_image"] + pngs, row["predict_ms_per_image"]
        )
        rows.append(row)
    columns = [
        ("batch", "batch"),
        ("predict_ms_per_image", "predict ms/img"),
        ("explain_ms_per_image", "explain ms/img"),
        ("explain_over_predict", "explain/predict"),
        ("server_png_ms_per_image", "PNGs ms/img"),
        ("explain_with_pngs_over_predict", "with PNGs/predict"),
    ]
    print(common.format_table(f"explain vs predict at {args.image_size} px", columns, rows))
    payload = {
        "image_size": args.image_size,
        "machine": common.machine(),
        "load_average": {"before": load_before, "after": common.load_average()},
        "rows": rows,
        "rounds": rounds,
    }
    figure, (axis,) = common.new_figure(1)
    axis.plot(batches, [r["explain_over_predict"] for r in rows], "o-", label="signature")
    axis.plot(batches, [r["explain_with_pngs_over_predict"] for r in rows], "o-", label="with PNGs")
    axis.axhline(1.0, color="grey", linestyle=":")
    axis.set_xlabel("batch size")
    axis.set_ylabel("explain / predict time per image")
    axis.set_title(f"Explanation cost at {args.image_size} px")
    axis.legend()
    common.write_results(f"{NAME}-{args.image_size}px", payload, figure, args.out)
    return payload


if __name__ == "__main__":
    main()
