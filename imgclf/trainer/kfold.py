"""Stratified K-fold cross-validation of one config: how good is this recipe on this data,
with an error bar.

The images of the job's train and validation splits are pooled and dealt into K
folds, class by class, so every fold keeps the class proportions. The test split is
kept out of every fold: it stays the untouched hold-out of the version a later
`then_train` run publishes (same seed and fractions, so the same test images).

For fold i: the other K-1 folds are split again (stratified, `val_fraction`) into the
fold's training images and its validation images, which early stopping and best-epoch
restore watch exactly as in a normal run; fold i itself is never seen in training and
gives the fold's metrics. Mean and standard deviation across folds are the answer.

Layout of RUN_DIR/kfold/:
    identity.json            the config, K and data the folds belong to
    folds.json               which images each fold holds
    fold_<i>/checkpoints/    per-epoch checkpoints (an interrupted fold resumes mid-way;
                             removed once the fold's result is written)
    fold_<i>/result.json     the finished fold (a resumed job skips it)
    fold_<i>/predictions.json  out-of-fold probabilities of each held-out image
    kfold.json               per-fold metrics and curves, mean and std (also in the job)
    learning_curves.png      every fold's curves on one plot
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from imgclf.config import TrainConfig
from imgclf.errors import Cancelled
from imgclf.trainer import experiment
from imgclf.trainer.data import Sample, require_per_class, stratified_split
from imgclf.trainer.metrics import classification_metrics
from imgclf.trainer.pipeline import label_indices, load_for_config
from imgclf.trainer.training import CHECKPOINTS_DIR, Hooks, discard_checkpoints

log = logging.getLogger(__name__)

KFOLD_DIR = "kfold"
RESULT_FILE = "kfold.json"
FOLDS_FILE = "folds.json"
FOLD_RESULT = "result.json"
PREDICTIONS_FILE = "predictions.json"
CURVES_FILE = "learning_curves.png"


@dataclass
class KFoldResult:
    result: dict  # what goes into the job record
    path: Path  # RUN_DIR/kfold/kfold.json
    curves: Path  # RUN_DIR/kfold/learning_curves.png


def stratified_folds(samples: Sequence[Sample], k: int, seed: int) -> list[list[Sample]]:
    """Deal each class's shuffled images round-robin into `k` folds.

    The deal of each class starts where the previous class's stopped, so fold sizes
    differ by at most one image overall as well as per class.
    """
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    rng = random.Random(seed)
    by_class: dict[str, list[Sample]] = {}
    for sample in sorted(samples, key=lambda s: (s.label, str(s.path))):
        by_class.setdefault(sample.label, []).append(sample)
    folds: list[list[Sample]] = [[] for _ in range(k)]
    start = 0
    for label in sorted(by_class):
        items = by_class[label][:]
        rng.shuffle(items)
        for i, sample in enumerate(items):
            folds[(start + i) % k].append(sample)
        start += len(items)
    return folds


def check_fold_sizes(samples: Sequence[Sample], k: int) -> None:
    """Each fold must hold every class, and each fold's training part needs a training
    and a validation image of every class: K + 2 images per class are enough."""
    require_per_class(
        samples,
        k + 2,
        purpose=f"for {k}-fold cross-validation",
        images="images outside the test split",
        remedy="Use fewer folds or add images.",
    )


def summarize(folds: list[dict]) -> tuple[dict, dict]:
    """Mean and sample standard deviation (ddof=1) of each headline metric across folds."""
    names = [k for k in folds[0]["metrics"] if k != "count"] if folds else []
    mean, std = {}, {}
    for name in names:
        values = np.array([f["metrics"][name] for f in folds], dtype=np.float64)
        mean[name] = round(float(values.mean()), 6)
        std[name] = round(float(values.std(ddof=1)), 6) if len(values) > 1 else None
    return mean, std


def plot_fold_curves(histories: list[list[dict]], path: Path) -> None:
    """Loss and accuracy per epoch: each fold's training (dashed) and validation (solid)
    curves in its own colour, the mean validation curve in black, and where phase 2
    (fine-tuning) starts."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    colours = plt.cm.tab10.colors
    longest = max((len(h) for h in histories), default=0)
    boundary = next(
        (i for h in histories for i, e in enumerate(h) if e.get("phase") == 2 and i > 0), None
    )
    for ax, key, title in ((axes[0], "loss", "Loss"), (axes[1], "accuracy", "Accuracy")):
        val = np.full((len(histories), longest), np.nan)
        for i, history in enumerate(histories):
            x = np.arange(1, len(history) + 1)
            colour = colours[i % len(colours)]
            ax.plot(x, [h.get(key, np.nan) for h in history], "--", color=colour, alpha=0.6)
            val[i, : len(history)] = [h.get(f"val_{key}", np.nan) for h in history]
            ax.plot(x, val[i, : len(history)], "-", color=colour, alpha=0.8, label=f"fold {i + 1}")
        if longest:
            counted = np.sum(~np.isnan(val), axis=0)
            mean = np.nansum(val, axis=0) / np.maximum(counted, 1)
            mean[counted == 0] = np.nan
            x = np.arange(1, longest + 1)
            ax.plot(x, mean, "-", color="black", linewidth=2.5, label="mean validation")
        if boundary:
            ax.axvline(boundary + 0.5, color="grey", linestyle=":", label="fine-tuning starts")
        ax.set_title(f"{title} (dashed: training, solid: validation)")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{len(histories)}-fold cross-validation; validation = each fold's own validation "
        "images (the held-out fold is scored once, after training)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def run_kfold(
    config: TrainConfig,
    *,
    folds: int,
    data: str | Path,
    run_dir: str | Path,
    hooks: Hooks | None = None,
    on_update: Callable[[dict], None] | None = None,
    keras_home: str | Path | None = None,
    verbose: int = 0,
) -> KFoldResult:
    """Cross-validate `config` on `data` with `folds` folds; resumable from RUN_DIR/kfold/.

    Progress events are the training loop's, with `fold` and `folds` added. Raises
    DataError when a class is too small for K folds, Cancelled when the hooks ask to stop.
    """
    hooks = hooks or Hooks()
    dataset, preprocess = load_for_config(config, data)
    pool = dataset.splits["train"] + dataset.splits["val"]
    check_fold_sizes(pool, folds)
    root = Path(run_dir) / KFOLD_DIR
    experiment.reset_if_changed(
        root, {"config": config.model_dump(), "folds": folds, "fingerprint": dataset.fingerprint}
    )
    assignment = stratified_folds(pool, folds, config.seed)
    experiment.write_json(
        root / FOLDS_FILE,
        {
            "root": str(dataset.root),
            "test_split_kept_out": [dataset.relative(s) for s in dataset.splits["test"]],
            "folds": [[[dataset.relative(s), s.label] for s in fold] for fold in assignment],
        },
    )
    results: list[dict] = []

    def report(finished: bool) -> dict:
        mean, std = summarize(results)
        result = {
            "folds": folds,
            "completed": len(results),
            "finished": finished,
            "classes": dataset.classes,
            "test_split": f"kept out ({len(dataset.splits['test'])} images)",
            "mean": mean,
            "std": std,
            "per_fold": results,
            "curves": str(root / CURVES_FILE) if finished else None,
        }
        experiment.write_json(root / RESULT_FILE, result)
        if on_update:
            on_update(result)
        return result

    report(False)
    for index, held_out in enumerate(assignment, start=1):
        fold_dir = root / f"fold_{index}"
        checkpoints = fold_dir / CHECKPOINTS_DIR
        previous = experiment.read_json(fold_dir / FOLD_RESULT)
        if previous is not None:
            log.info("fold %d/%d finished before; kept", index, folds)
            results.append(previous)
            continue
        if hooks.should_stop and hooks.should_stop():
            raise Cancelled("cross-validation cancelled")
        rest = [s for j, fold in enumerate(assignment, start=1) if j != index for s in fold]
        inner = stratified_split(rest, {"val": config.val_fraction}, config.seed + index)

        def progress(event: dict, index: int = index) -> None:
            if hooks.on_progress:
                hooks.on_progress({**event, "fold": index, "folds": folds})

        classifier, state = experiment.fit(
            config,
            classes=dataset.classes,
            train=inner["train"],
            val=inner["val"],
            preprocess=preprocess,
            checkpoint_dir=checkpoints,
            hooks=Hooks(on_progress=progress, should_stop=hooks.should_stop),
            keras_home=keras_home,
            verbose=verbose,
        )
        probabilities = experiment.predict(
            classifier, held_out, dataset.classes, preprocess, config
        )
        metrics = classification_metrics(
            label_indices(held_out, dataset.classes), probabilities, dataset.classes, config.top_k
        )
        experiment.write_json(  # out-of-fold predictions: `imgclf audit --kfold-dir` reads them
            fold_dir / PREDICTIONS_FILE,
            {
                "root": str(dataset.root),
                "classes": dataset.classes,
                "rows": [
                    [dataset.relative(s), s.label, [round(float(p), 6) for p in row]]
                    for s, row in zip(held_out, probabilities, strict=True)
                ],
            },
        )
        result = {
            "fold": index,
            "counts": {
                "train": len(inner["train"]),
                "val": len(inner["val"]),
                "held_out": len(held_out),
            },
            "metrics": experiment.headline(metrics),
            "recall": {name: c["recall"] for name, c in metrics["per_class"].items()},
            "best_epoch": state.best_epoch + 1,
            "epochs": len(state.history),
            "seconds": round(sum(state.phase_seconds.values()), 3),
            "history": state.history,
        }
        experiment.write_json(fold_dir / FOLD_RESULT, result)
        discard_checkpoints(checkpoints)
        results.append(result)
        report(False)
    plot_fold_curves([r["history"] for r in results], root / CURVES_FILE)
    return KFoldResult(result=report(True), path=root / RESULT_FILE, curves=root / CURVES_FILE)
