"""One training run end to end: data -> train -> evaluate -> report -> export -> parity -> publish.

`train_and_export` is what the CLI and the queue worker call. Given the same
`run_dir` again after a crash, it resumes from the last finished epoch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from imgclf import contract, repository
from imgclf.audit import AUDIT_CARD_KEY
from imgclf.audit.training import audit_for_run
from imgclf.config import TrainConfig
from imgclf.errors import ParityError
from imgclf.trainer import export
from imgclf.trainer.data import Dataset, Sample, class_weights
from imgclf.trainer.diagnosis import diagnose
from imgclf.trainer.metrics import classification_metrics
from imgclf.trainer.model import build_classifier
from imgclf.trainer.pipeline import (
    evaluation_dataset,
    label_indices,
    load_for_config,
    training_dataset,
)
from imgclf.trainer.promotion import PromotionGate
from imgclf.trainer.report import write_report
from imgclf.trainer.training import Cancelled, Hooks, train_phases

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
SPLITS_FILE = "splits.json"


@dataclass
class TrainResult:
    name: str
    version: int
    version_dir: Path
    run_dir: Path
    metrics: dict
    diagnosis: dict
    parity: dict
    report: Path
    card: dict = field(repr=False, default_factory=dict)


def _golden_samples(samples: list[Sample], count: int) -> list[Sample]:
    """Round-robin over classes so the golden set covers as many classes as it can."""
    by_class: dict[str, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    out: list[Sample] = []
    while len(out) < count and any(by_class.values()):
        for label in sorted(by_class):
            if by_class[label] and len(out) < count:
                out.append(by_class[label].pop(0))
    return out


def _prepare_run_dir(run_dir: Path, config: TrainConfig, dataset: Dataset) -> None:
    """Keep checkpoints only when they belong to the same config and the same data."""
    run_dir.mkdir(parents=True, exist_ok=True)
    identity = {"config": config.model_dump(), "fingerprint": dataset.fingerprint}
    path = run_dir / RUN_FILE
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous != identity:
            log.warning("run folder %s holds a different config or data; starting over", run_dir)
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    path.write_text(json.dumps(identity, indent=1), encoding="utf-8")
    dataset.write_splits(run_dir / SPLITS_FILE)


def train_and_export(
    config: TrainConfig,
    *,
    data: str | Path,
    name: str,
    model_dir: str | Path,
    run_dir: str | Path,
    hooks: Hooks | None = None,
    keras_home: str | Path | None = None,
    verbose: int = 0,
    gate: PromotionGate | None = None,
) -> TrainResult:
    """Train on `data`, publish MODEL_DIR/<name>/<version>/ and return what happened.

    Raises DataError/ConfigError before training for bad input, Cancelled when the
    hooks ask to stop, ParityError when the export does not match training, and
    Rejected when `gate` keeps the live version. Nothing is published on any error.
    """
    repository.validate_model_name(name)
    hooks = hooks or Hooks()
    run_dir = Path(run_dir)
    timings: dict[str, float] = {}
    started = time.monotonic()
    keras.utils.set_random_seed(config.seed)

    t = time.monotonic()
    dataset, preprocess = load_for_config(config, data)
    timings["scan_seconds"] = round(time.monotonic() - t, 3)
    if hooks.on_progress:
        hooks.on_progress({"stage": "audit"})
    data_audit = audit_for_run(dataset, config.leakage)  # may drop leaked training copies
    timings["audit_seconds"] = data_audit["summary"]["seconds"]["total"]
    _prepare_run_dir(run_dir, config, dataset)

    classifier = build_classifier(
        len(dataset.classes),
        image_size=config.image_size,
        weights=config.weights,
        dropout=config.dropout,
        l2=config.l2,
        hidden_units=config.hidden_units,
        keras_home=keras_home,
    )
    weights = class_weights(dataset, config.class_weight)

    def eval_ds(samples: list[Sample], batch_size: int = config.batch_size) -> tf.data.Dataset:
        return evaluation_dataset(samples, dataset.classes, preprocess, config, batch_size)

    train_ds = training_dataset(dataset.splits["train"], dataset.classes, preprocess, config)
    steps = -(-len(dataset.splits["train"]) // config.batch_size)
    t = time.monotonic()
    state = train_phases(
        classifier,
        config,
        train_ds=train_ds,
        val_ds=eval_ds(dataset.splits["val"]),
        eval_train_ds=eval_ds(dataset.splits["train"]),
        steps=steps,
        checkpoint_dir=run_dir / "checkpoints",
        class_weight=weights,
        hooks=hooks,
        tensorboard_dir=run_dir / "tensorboard",
        verbose=verbose,
    )
    timings["train_seconds"] = round(time.monotonic() - t, 3)
    timings.update({f"{k}_seconds": v for k, v in state.phase_seconds.items()})

    if hooks.on_progress:
        hooks.on_progress({"stage": "evaluate"})
    t = time.monotonic()
    metrics = {}
    for split, samples in dataset.splits.items():
        probabilities = classifier.model.predict(eval_ds(samples), verbose=0)
        metrics[split] = classification_metrics(
            label_indices(samples, dataset.classes), probabilities, dataset.classes, config.top_k
        )
    timings["evaluate_seconds"] = round(time.monotonic() - t, 3)
    diagnosis = diagnose(
        history=state.history,
        train_metrics=metrics["train"],
        val_metrics=metrics["val"],
        test_metrics=metrics["test"],
        classes=dataset.classes,
        class_weighted=weights is not None,
    )

    if hooks.on_progress:
        hooks.on_progress({"stage": "export"})
    t = time.monotonic()
    staging = repository.new_staging_dir(model_dir, name)
    try:
        export.write_savedmodel(
            staging, classifier.model, preprocess, dataset.classes, config.image_size
        )
        golden = _golden_samples(dataset.splits["test"], config.parity_samples)
        golden_bytes = [s.path.read_bytes() for s in golden]
        golden_images = np.concatenate(
            [x.numpy() for x, _ in eval_ds(golden, batch_size=len(golden))]
        )
        golden_probs = classifier.model(golden_images, training=False).numpy()
        parity = export.parity_check(staging, golden_bytes, golden_probs, golden_images)
        if not parity["passed"]:
            raise ParityError(
                f"parity check failed: served outputs differ from training by "
                f"{parity['max_abs_diff']:.2e} (tolerance {parity['tolerance']:.0e}); "
                "nothing was published"
            )
        export.write_golden(
            staging, golden_bytes, [dataset.relative(s) for s in golden], golden_probs
        )
        export.write_warmup(staging, name, golden_bytes)
        report_dir = staging / contract.REPORT_DIR
        report_dir.mkdir(exist_ok=True)
        shutil.copy2(run_dir / SPLITS_FILE, report_dir / SPLITS_FILE)
        timings["export_seconds"] = round(time.monotonic() - t, 3)
        timings["total_seconds"] = round(time.monotonic() - started, 3)
        card = {
            "name": name,
            "version": None,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "run_dir": str(run_dir),
            "labels": dataset.classes,
            "image_size": config.image_size,
            "signatures": list(contract.SIGNATURES),
            "config": config.model_dump(),
            "data": dataset.summary(),
            AUDIT_CARD_KEY: data_audit,
            "class_weight": weights,
            "metrics": metrics,
            "history": state.history,
            "diagnosis": diagnosis,
            "parity": parity,
            "artifact_bytes": 0,
            "timings": timings,
            "software": {
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "python": platform.python_version(),
            },
        }
        if hooks.should_stop and hooks.should_stop():
            raise Cancelled("training cancelled before publishing")

        def finalize(folder: Path, version: int) -> None:
            card["version"] = version
            write_report(folder / contract.REPORT_DIR, card)
            card["artifact_bytes"] = export.directory_bytes(folder)
            (folder / contract.MODEL_CARD_FILE).write_text(
                json.dumps(card, indent=1), encoding="utf-8"
            )

        with gate.lock() if gate else contextlib.nullcontext():
            if gate is not None:
                card["promotion"] = gate.check(card, dataset)
            version = repository.publish(staging, model_dir, name, before_rename=finalize)
            if gate is not None:
                gate.after_publish(version)
    except BaseException:
        repository.discard_staging(staging)
        raise
    version_dir = repository.version_path(model_dir, name, version)
    return TrainResult(
        name=name,
        version=version,
        version_dir=version_dir,
        run_dir=run_dir,
        metrics=metrics["test"],
        diagnosis=diagnosis,
        parity=parity,
        report=version_dir / contract.REPORT_DIR / "report.html",
        card=card,
    )
