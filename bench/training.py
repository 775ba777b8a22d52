"""Training benchmark: `python -m bench.training [--image-size 64]`.

On the same generated images at the same size:

- baseline: the classic tutorial pipeline (bench/baseline.py): ImageDataGenerator
  with augmentation, frozen ResNet-50, Flatten + Dense(1024, 512, 256), `fit`;
- imgclf phase 1 (frozen base) with standard augmentation, so no feature cache;
- imgclf phase 1 on cached base features (augmentation "none");
- imgclf phase 2 (conv5 fine-tuned, BatchNorm frozen).

Epoch times are wall time between the ends of consecutive epochs, so they include
validation and, for imgclf, the per-epoch checkpoint it writes for resuming. The
first epoch of each phase (tracing, feature extraction) is reported separately as
one-time cost.

Input pipeline check: imgclf's phase-1 train step (frozen base, the cheapest step,
so the strictest test) fed by the real tf.data pipeline (decode, cache, standard
augmentation, prefetch) against the same step fed by one in-memory batch, in
alternating rounds.

Artifact size: the baseline saved as tutorials do (`model.save`, .keras) against
imgclf's exported SavedModel, plus both heads' weight counts at 224 px.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench import baseline, common

NAME = "training"
PIPELINE_STEPS = 16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.training", description=__doc__)
    common.add_common_arguments(parser)
    parser.add_argument("--per-class", type=int, default=common.DATA_PER_CLASS)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per measured phase (>= 2)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pipeline-rounds", type=int, default=3)
    return parser.parse_args(argv)


class _EpochEnds:
    """Timestamps of epoch ends (Keras callback for the baseline, hook for imgclf)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.ends: list[float] = []

    def mark(self) -> None:
        self.ends.append(time.perf_counter())

    def summary(self, images: int) -> dict:
        first = self.ends[0] - self.start if self.ends else float("nan")
        steady = [b - a for a, b in zip(self.ends, self.ends[1:], strict=False)]
        epoch = statistics.median(steady) if steady else first
        return {
            "epochs": len(self.ends),
            "first_epoch_s": round(first, 3),
            "epoch_s": round(epoch, 3),
            "images_per_s": round(images / epoch, 2),
        }


def run_baseline(data: Path, image_size: int, epochs: int, batch_size: int, out: Path) -> dict:
    import keras

    train, val = baseline.generators(data, image_size, batch_size)
    model = baseline.build_model(train.num_classes, image_size)
    ends = _EpochEnds()
    callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: ends.mark())
    ends.start = time.perf_counter()
    model.fit(train, validation_data=val, epochs=epochs, callbacks=[callback], verbose=0)
    path = out / "baseline.keras"
    model.save(path)
    head = baseline.head_parameters(image_size, train.num_classes, flatten=True)
    base_params = model.count_params() - head
    return {
        **ends.summary(train.samples),
        "train_images": train.samples,
        "params": model.count_params(),
        "head_params": head,
        "base_params": base_params,
        "artifact_bytes": path.stat().st_size,
    }


class _Run:
    """imgclf's own training pieces, as train_and_export wires them."""

    def __init__(self, data: Path, image_size: int, batch_size: int, **config) -> None:
        from imgclf.config import parse_config
        from imgclf.trainer.data import load_dataset
        from imgclf.trainer.model import build_classifier
        from imgclf.trainer.preprocessing import image_problem, make_preprocess

        self.config = parse_config(
            {
                "image_size": image_size,
                "weights": "none",
                "batch_size": batch_size,
                "early_stopping_patience": 0,
                **config,
            }
        )
        self.preprocess = make_preprocess(image_size)
        self.dataset = load_dataset(
            data,
            val_fraction=self.config.val_fraction,
            test_fraction=self.config.test_fraction,
            seed=self.config.seed,
            is_image=lambda p: image_problem(self.preprocess, p),
        )
        c = self.config
        self.classifier = build_classifier(
            len(self.dataset.classes),
            image_size=c.image_size,
            weights=c.weights,
            dropout=c.dropout,
            l2=c.l2,
            hidden_units=c.hidden_units,
        )
        self.train = self.dataset.splits["train"]

    def dataset_for(self, split: str, training: bool):
        from imgclf.trainer.pipeline import make_dataset
        from imgclf.trainer.preprocessing import make_augmenter

        c = self.config
        return make_dataset(
            self.dataset.splits[split],
            self.dataset.classes,
            self.preprocess,
            image_size=c.image_size,
            batch_size=c.batch_size,
            training=training,
            augment=make_augmenter(c.augmentation, c.seed) if training else None,
            seed=c.seed,
            cache_mb=c.cache_images_mb,
        )

    def fit(self, checkpoints: Path) -> dict[int, _EpochEnds]:
        """train_phases with a hook that timestamps every epoch end, per phase.

        Also keeps the run's history, whose per-epoch `seconds` stop before the
        checkpoint is written (the hook's timestamps come after it)."""
        from imgclf.trainer.training import Hooks, train_phases

        ends: dict[int, _EpochEnds] = {1: _EpochEnds()}

        def on_progress(event: dict) -> None:
            if event.get("stage") != "train":
                return
            phase = event["phase"]
            if phase not in ends:  # a phase starts where the one before it ended
                ends[phase] = _EpochEnds()
                previous = ends.get(phase - 1)
                if previous is not None and previous.ends:
                    ends[phase].start = previous.ends[-1]
            if event.get("eta_seconds") is None:  # sent once per epoch, after the checkpoint
                ends[phase].mark()

        hooks = Hooks(on_progress=on_progress)
        ends[1].start = time.perf_counter()
        self.state = train_phases(
            self.classifier,
            self.config,
            train_ds=self.dataset_for("train", training=True),
            val_ds=self.dataset_for("val", training=False),
            eval_train_ds=self.dataset_for("train", training=False),
            steps=-(-len(self.train) // self.config.batch_size),
            checkpoint_dir=checkpoints,
            class_weight=None,
            hooks=hooks,
        )
        return ends

    def fit_seconds(self, phase: int) -> float:
        """Median `fit` time of the phase's epochs after the first, without checkpointing."""
        seconds = [h["seconds"] for h in self.state.history if h["phase"] == phase][1:]
        return round(statistics.median(seconds), 3) if seconds else float("nan")


def pipeline_check(run: _Run, rounds: int) -> dict:
    """Phase-1 step fed by the real pipeline vs by one in-memory batch (images/s)."""
    import keras
    import tensorflow as tf

    from imgclf.trainer.model import freeze_base

    freeze_base(run.classifier)
    model = run.classifier.model
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
    )
    real = run.dataset_for("train", training=True).repeat()
    x, y = next(iter(real))
    memory = tf.data.Dataset.from_tensors((x, y)).repeat()
    batch = int(x.shape[0])
    figures: dict[str, list[float]] = {"memory": [], "pipeline": []}
    order = [("memory", memory), ("pipeline", real)]
    for round_ in range(rounds):
        for name, ds in order if round_ % 2 == 0 else order[::-1]:
            ends = _EpochEnds()
            callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda *_, e=ends: e.mark())
            ends.start = time.perf_counter()
            model.fit(
                ds,
                epochs=2,
                steps_per_epoch=PIPELINE_STEPS,
                shuffle=False,
                callbacks=[callback],
                verbose=0,
            )
            figures[name].append(PIPELINE_STEPS * batch / (ends.ends[1] - ends.ends[0]))
    memory_rate = statistics.median(figures["memory"])
    pipeline_rate = statistics.median(figures["pipeline"])
    return {
        "step": "phase 1 (frozen base), augmentation 'standard'",
        "batch_size": batch,
        "steps_per_epoch": PIPELINE_STEPS,
        "memory_images_per_s": round(memory_rate, 2),
        "pipeline_images_per_s": round(pipeline_rate, 2),
        "per_round": {k: [round(v, 2) for v in vs] for k, vs in figures.items()},
        "pipeline_vs_memory": common.ratio(pipeline_rate, memory_rate),
    }


def imgclf_artifact(run: _Run, out: Path) -> int:
    from imgclf.trainer import export

    path = out / "imgclf-export"
    export.write_savedmodel(
        path, run.classifier.model, run.preprocess, run.dataset.classes, run.config.image_size
    )
    return export.directory_bytes(path)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.epochs < 2:
        raise SystemExit("--epochs must be >= 2 (the first epoch is reported apart)")
    import keras

    started = time.perf_counter()
    machine = common.machine()
    print(f"machine: {machine['cpu']}, {machine['cores']} cores, load {machine['load_average']}")
    rows: dict[str, dict] = {}
    with common.workdir(args.workdir) as root, tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        data = common.prepare_data(root, args.image_size, per_class=args.per_class)
        keras.utils.set_random_seed(0)

        rows["baseline"] = run_baseline(data, args.image_size, args.epochs, args.batch_size, out)
        rows["baseline"]["fit_only_epoch_s"] = rows["baseline"]["epoch_s"]  # no checkpoints
        rows["baseline"]["load_average"] = common.load_average()
        print(f"  baseline: {rows['baseline']}", flush=True)

        cached = _Run(
            data,
            args.image_size,
            args.batch_size,
            augmentation="none",
            cache_features=True,
            head_epochs=args.epochs,
            fine_tune_epochs=0,
        )
        phase_started = time.perf_counter()
        ends = cached.fit(out / "ckpt-cached")
        phase1_total = time.perf_counter() - phase_started
        row = ends[1].summary(len(cached.train))
        row["one_time_s"] = round(phase1_total - args.epochs * row["epoch_s"], 3)
        row["phase_total_s"] = round(phase1_total, 3)
        row["fit_only_epoch_s"] = cached.fit_seconds(1)
        row["load_average"] = common.load_average()
        rows["imgclf phase 1, cached features"] = row
        print(f"  phase 1 cached: {row}", flush=True)

        full = _Run(
            data,
            args.image_size,
            args.batch_size,
            augmentation="standard",
            head_epochs=args.epochs,
            fine_tune_epochs=args.epochs,
        )
        ends = full.fit(out / "ckpt-full")
        for phase, label in ((1, "imgclf phase 1, augmented"), (2, "imgclf phase 2, fine-tune")):
            rows[label] = {
                **ends[phase].summary(len(full.train)),
                "fit_only_epoch_s": full.fit_seconds(phase),
                "load_average": common.load_average(),
            }
            print(f"  {label}: {rows[label]}", flush=True)
        imgclf_bytes = imgclf_artifact(full, out)
        pipeline = pipeline_check(full, args.pipeline_rounds)
        pipeline["load_average"] = common.load_average()
        print(f"  pipeline: {pipeline}", flush=True)
        classes = len(full.dataset.classes)

    base = rows["baseline"]
    for label, row in rows.items():
        row["name"] = label
        row["epoch_speedup_vs_baseline"] = common.ratio(base["epoch_s"], row["epoch_s"])
        row["images_per_s_vs_baseline"] = common.ratio(row["images_per_s"], base["images_per_s"])
    cached_row = rows["imgclf phase 1, cached features"]
    ten = (cached_row["one_time_s"] + 10 * cached_row["epoch_s"]) / 10
    cached_row["epoch_s_amortized_over_10"] = round(ten, 3)
    cached_row["amortized_speedup_vs_baseline"] = common.ratio(base["epoch_s"], ten)

    sizes = {
        "image_size": args.image_size,
        "baseline_keras_bytes": base["artifact_bytes"],
        "imgclf_savedmodel_bytes": imgclf_bytes,
        "baseline_head_params": base["head_params"],
        "imgclf_head_params": baseline.head_parameters(args.image_size, classes, flatten=False),
        "at_224px": {
            "baseline_head_params": baseline.head_parameters(224, classes, flatten=True),
            "imgclf_head_params": baseline.head_parameters(224, classes, flatten=False),
            "base_params": base["base_params"],
            "baseline_keras_bytes_estimate": 4
            * (base["base_params"] + 3 * baseline.head_parameters(224, classes, flatten=True)),
            "imgclf_savedmodel_bytes_estimate": 4
            * (base["base_params"] + baseline.head_parameters(224, classes, flatten=False)),
            "note": "fp32 weights are 4 bytes each; the .keras file also holds Adam's 2 slots "
            "per trainable weight (the head; the base is frozen)",
        },
    }
    targets = [
        {
            "target": "phase 1 with cached features >= 10x faster per epoch than the baseline",
            "value": cached_row["epoch_speedup_vs_baseline"],
            "met": cached_row["epoch_speedup_vs_baseline"] >= 10,
            "amortized_over_10_epochs": cached_row["amortized_speedup_vs_baseline"],
            "without_checkpoint_writes": common.ratio(
                base["epoch_s"], cached_row["fit_only_epoch_s"]
            ),
        },
        {
            "target": "input pipeline >= 95% of in-memory",
            "value": pipeline["pipeline_vs_memory"],
            "met": pipeline["pipeline_vs_memory"] >= 0.95,
        },
    ]
    table = list(rows.values())
    print()
    print(
        common.format_table(
            f"training at {args.image_size}px, {len(full.train)} training images "
            f"(baseline {base['train_images']})",
            [
                ("name", "run"),
                ("first_epoch_s", "first epoch s"),
                ("epoch_s", "epoch s"),
                ("fit_only_epoch_s", "fit-only s"),
                ("images_per_s", "img/s"),
                ("epoch_speedup_vs_baseline", "baseline epoch / epoch"),
                ("images_per_s_vs_baseline", "img/s / baseline"),
                ("load_average", "load"),
            ],
            table,
        )
    )
    print(
        f"\nphase 1 cached: one-time {cached_row['one_time_s']}s; amortized over 10 epochs "
        f"{ten:.2f}s/epoch = {cached_row['amortized_speedup_vs_baseline']}x the baseline"
    )
    print(
        f"pipeline check: {pipeline['pipeline_images_per_s']} vs in-memory "
        f"{pipeline['memory_images_per_s']} img/s = {pipeline['pipeline_vs_memory']}"
    )
    print(f"artifacts: {sizes}")
    print("\ntargets:")
    for t in targets:
        print(f"  [{'met' if t['met'] else 'NOT met'}] {t['target']}: {t['value']}")
    payload = {
        "benchmark": NAME,
        "command": common.command_line("bench.training", argv),
        "machine": machine,
        "load_average_end": common.load_average(),
        "image_size": args.image_size,
        "runs": table,
        "pipeline": pipeline,
        "artifacts": sizes,
        "targets": targets,
        "seconds": round(time.perf_counter() - started, 1),
    }
    figure, (speed, size) = common.new_figure(2, width=6.0)
    names = [r["name"] for r in table]
    y = list(range(len(table)))
    n_train = {r["name"]: r.get("train_images") or len(full.train) for r in table}
    speed.barh([i + 0.2 for i in y], [r["images_per_s"] for r in table], 0.4, label="epoch")
    speed.barh(
        [i - 0.2 for i in y],
        [n_train[r["name"]] / r["fit_only_epoch_s"] for r in table],
        0.4,
        label="fit only (no checkpoint writes)",
    )
    speed.set_yticks(y, names)
    speed.set(xlabel="training images / s (steady epochs)", title=f"{args.image_size}px")
    speed.legend(fontsize=8)
    mib = 2**20
    at224 = sizes["at_224px"]
    size.bar(
        [-0.2, 0.8],
        [sizes["baseline_keras_bytes"] / mib, sizes["imgclf_savedmodel_bytes"] / mib],
        0.4,
        label=f"measured, {args.image_size}px",
    )
    size.bar(
        [0.2, 1.2],
        [
            at224["baseline_keras_bytes_estimate"] / mib,
            at224["imgclf_savedmodel_bytes_estimate"] / mib,
        ],
        0.4,
        label="weights at 224px (estimate)",
    )
    size.set_xticks([0, 1], ["baseline (.keras)", "imgclf (SavedModel)"])
    size.set(ylabel="MiB", title="artifact size")
    size.legend(fontsize=8)
    path = common.write_results(NAME, payload, figure, args.out)
    print(f"wrote {path} and {path.with_suffix('.png')} ({payload['seconds']:.0f}s)")
    return payload


if __name__ == "__main__":
    main()
