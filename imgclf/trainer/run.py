"""One training run as named stages: load -> fit -> calibrate -> evaluate -> export and
verify -> publish.

`train_and_export` is what the CLI and the queue worker call; it runs the stages in
order, and each stage is a function a test can call alone. Given the same `run_dir`
again after a crash, a run resumes from the last finished epoch.

Every run leaves its report (curves, confusion matrix, diagnosis, report.html) and
model card in `run_dir/report/`, published or not: a model the promotion gate refuses
still explains itself there.
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
from imgclf.artifact import LoadedVersion, replay_golden
from imgclf.audit import AUDIT_CARD_KEY
from imgclf.audit.training import audit_for_run
from imgclf.config import TrainConfig
from imgclf.errors import ParityError, Rejected
from imgclf.trainer import calibration, experiment, export, hardware
from imgclf.trainer.data import Dataset, Sample, class_weights
from imgclf.trainer.diagnosis import diagnose, explain_refusal
from imgclf.trainer.gallery import MISTAKES_DIR, write_gallery
from imgclf.trainer.gradcam import compiled_gradcam
from imgclf.trainer.metrics import classification_metrics
from imgclf.trainer.model import RECIPES, Classifier, augmentation_for, recipe_for
from imgclf.trainer.pipeline import evaluation_dataset, label_indices, load_for_config
from imgclf.trainer.preprocessing import PreprocessFn
from imgclf.trainer.promotion import PromotionGate
from imgclf.trainer.report import write_report
from imgclf.trainer.thresholds import threshold_summary
from imgclf.trainer.training import (
    CHECKPOINTS_DIR,
    Cancelled,
    Hooks,
    RunState,
    discard_checkpoints,
)

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


@dataclass
class Loaded:
    """Stage 1's output: the scanned, split and audited data and the one preprocess function."""

    dataset: Dataset
    preprocess: PreprocessFn
    seconds: float
    audit: dict = field(default_factory=dict)


@dataclass
class Fitted:
    """Stage 2's output: the trained classifier (best weights) and its history."""

    classifier: Classifier
    state: RunState
    plan: hardware.Plan
    class_weight: dict[int, float] | None
    seconds: float


@dataclass
class Calibrated:
    """Stage 3's output: the temperature every exported signature applies (1 = none), and
    the validation split's raw (uncalibrated) probabilities it was fitted on."""

    temperature: float
    method: str
    val_probabilities: np.ndarray = field(repr=False)
    seconds: float = 0.0

    def apply(self, probabilities: np.ndarray) -> np.ndarray:
        """What the export serves for these raw softmax outputs."""
        return calibration.calibrate(probabilities, self.temperature)


@dataclass
class Evaluation:
    """Stage 4's output: metrics per split (calibrated probabilities), the diagnosis, the
    calibration before/after per split and what min_score thresholds do on the test split."""

    metrics: dict[str, dict]
    diagnosis: dict
    seconds: float
    calibration: dict = field(default_factory=dict)
    thresholds: dict = field(default_factory=dict)
    test_probabilities: np.ndarray | None = None  # [test images, classes], split order


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
            shutil.rmtree(run_dir / CHECKPOINTS_DIR, ignore_errors=True)
    path.write_text(json.dumps(identity, indent=1), encoding="utf-8")
    dataset.write_splits(run_dir / SPLITS_FILE)


def load(
    config: TrainConfig, data: str | Path, run_dir: Path, hooks: Hooks | None = None
) -> Loaded:
    """Scan, split and audit the data (the audit may drop leaked training copies, as
    `config.leakage` says); keep the run folder's checkpoints only if they match."""
    t = time.monotonic()
    dataset, preprocess = load_for_config(config, data)
    if hooks is not None and hooks.on_progress:
        hooks.on_progress({"stage": "audit"})
    data_audit = audit_for_run(dataset, config.leakage)
    _prepare_run_dir(run_dir, config, dataset)
    return Loaded(dataset, preprocess, round(time.monotonic() - t, 3), data_audit)


def fit(
    config: TrainConfig,
    loaded: Loaded,
    run_dir: Path,
    *,
    hooks: Hooks | None = None,
    keras_home: str | Path | None = None,
    verbose: int = 0,
) -> Fitted:
    """Train with the recipe the starting point calls for (see model.recipe_for)."""
    t = time.monotonic()
    dataset = loaded.dataset
    run_plan = hardware.plan(config)
    classifier, state = experiment.fit(
        config,
        classes=dataset.classes,
        train=dataset.splits["train"],
        val=dataset.splits["val"],
        preprocess=loaded.preprocess,
        checkpoint_dir=run_dir / CHECKPOINTS_DIR,
        hooks=hooks,
        keras_home=keras_home,
        verbose=verbose,
        tensorboard_dir=run_dir / "tensorboard",
        run_plan=run_plan,
    )
    return Fitted(
        classifier,
        state,
        run_plan,
        class_weights(dataset, config.class_weight),
        round(time.monotonic() - t, 3),
    )


def _raw_probabilities(
    config: TrainConfig, loaded: Loaded, fitted: Fitted, samples: list[Sample]
) -> np.ndarray:
    """The Keras model's softmax on the evaluation pipeline (unaugmented, inference mode)."""
    classes = loaded.dataset.classes
    if not samples:
        return np.zeros((0, len(classes)), np.float32)
    return fitted.classifier.model.predict(
        evaluation_dataset(samples, classes, loaded.preprocess, config), verbose=0
    )


def calibrate(config: TrainConfig, loaded: Loaded, fitted: Fitted) -> Calibrated:
    """Fit the temperature on the validation split (config.calibration='temperature'),
    so that evaluation, the promotion gate and the export all see calibrated scores."""
    t = time.monotonic()
    samples = loaded.dataset.splits["val"]
    raw = _raw_probabilities(config, loaded, fitted, samples)
    temperature = 1.0
    if config.calibration == "temperature":
        temperature = calibration.fit_temperature(
            raw, label_indices(samples, loaded.dataset.classes)
        )
    return Calibrated(temperature, config.calibration, raw, round(time.monotonic() - t, 3))


def evaluate(
    config: TrainConfig, loaded: Loaded, fitted: Fitted, calibrated: Calibrated | None = None
) -> Evaluation:
    """Metrics on every split (unaugmented, inference mode, calibrated probabilities), the
    diagnosis of the run, ECE before/after calibration and the test split's thresholds."""
    t = time.monotonic()
    dataset = loaded.dataset
    calibrated = calibrated or Calibrated(1.0, "none", np.zeros((0, len(dataset.classes))))
    metrics, summaries, thresholds = {}, {}, {}
    test_probabilities = None
    for split, samples in dataset.splits.items():
        if split == "val" and len(calibrated.val_probabilities) == len(samples) > 0:
            raw = calibrated.val_probabilities
        else:
            raw = _raw_probabilities(config, loaded, fitted, samples)
        labels = label_indices(samples, dataset.classes)
        probabilities = calibrated.apply(raw)
        metrics[split] = classification_metrics(
            labels, probabilities, dataset.classes, config.top_k
        )
        if split in ("val", "test"):
            summaries[split] = calibration.split_summary(raw, labels, calibrated.temperature)
        if split == "test":
            thresholds = threshold_summary(probabilities, labels, dataset.classes)
            test_probabilities = probabilities
    diagnosis = diagnose(
        history=fitted.state.history,
        train_metrics=metrics["train"],
        val_metrics=metrics["val"],
        test_metrics=metrics["test"],
        classes=dataset.classes,
        class_weighted=fitted.class_weight is not None,
    )
    calibration_record = {
        "method": calibrated.method,
        "temperature": calibrated.temperature,
        "fitted_on": "val",
        "bins": calibration.ECE_BINS,
        **{
            f"ece_{when}_{split}": summary[f"ece_{when}"]
            for split, summary in summaries.items()
            for when in ("before", "after")
        },
        # The headline pair: validation (what T was fitted on) would flatter; test does not.
        "ece_before": summaries.get("test", {}).get("ece_before"),
        "ece_after": summaries.get("test", {}).get("ece_after"),
        "splits": summaries,
    }
    return Evaluation(
        metrics,
        diagnosis,
        round(time.monotonic() - t, 3),
        calibration_record,
        thresholds,
        test_probabilities,
    )


def mistakes_gallery(
    config: TrainConfig, loaded: Loaded, fitted: Fitted, evaluation: Evaluation, run_dir: Path
) -> list[dict]:
    """The most confident test mistakes with their heatmaps, written into
    run_dir/report/mistakes/ (copied into the version by `train_and_export`)."""
    dataset = loaded.dataset
    test = dataset.splits["test"]
    if evaluation.test_probabilities is None or not test:
        return []

    def load_images(indices: list[int]) -> np.ndarray:
        chosen = [test[i] for i in indices]
        batches = evaluation_dataset(chosen, dataset.classes, loaded.preprocess, config)
        return np.concatenate([x.numpy() for x, _ in batches])

    return write_gallery(
        run_dir / contract.REPORT_DIR,
        fitted.classifier.model,
        config.image_size,
        load_images,
        evaluation.test_probabilities,
        label_indices(test, dataset.classes),
        [dataset.relative(s) for s in test],
        dataset.classes,
    )


def export_and_verify(
    staging: Path,
    config: TrainConfig,
    loaded: Loaded,
    fitted: Fitted,
    name: str,
    calibrated: Calibrated | None = None,
) -> dict:
    """Write the SavedModel and its extras into `staging`, then read it back as a server
    would: the served path must equal the training path (with the same temperature) on
    held-out images, and the golden files must replay. Returns the parity result; raises
    ParityError otherwise."""
    dataset = loaded.dataset
    model = fitted.classifier.model
    temperature = calibrated.temperature if calibrated else 1.0
    export.write_savedmodel(
        staging, model, loaded.preprocess, dataset.classes, config.image_size, temperature
    )
    golden = _golden_samples(dataset.splits["test"], config.parity_samples)
    golden_bytes = [s.path.read_bytes() for s in golden]
    batches = evaluation_dataset(golden, dataset.classes, loaded.preprocess, config, len(golden))
    golden_images = np.concatenate([x.numpy() for x, _ in batches])
    # The training path is what evaluation ran: Keras' compiled predict on the evaluation
    # pipeline. Given the dataset (not the NumPy copy) it reuses the predict function that
    # evaluation traced; a NumPy array would trace it again (seconds, same numbers).
    golden_probs = calibration.calibrate(model.predict(batches, verbose=0), temperature)
    golden_heatmaps, _ = compiled_gradcam(model, config.image_size, tf.constant(golden_images))
    export.write_golden(
        staging,
        golden_bytes,
        [dataset.relative(s) for s in golden],
        golden_probs,
        golden_heatmaps,
    )
    try:
        served = LoadedVersion(staging)  # loaded once, as a server will load it
    except repository.RepositoryError as exc:
        raise ParityError(
            f"the export cannot be loaded back: {exc}; nothing was published"
        ) from None
    parity = export.parity_check(served, golden_bytes, golden_probs, golden_images, golden_heatmaps)
    if not parity["passed"]:
        heatmaps = (
            f", heatmaps by {parity['heatmap_max_abs_diff']:.2e} "
            f"(tolerance {parity['heatmap_tolerance']:.0e})"
            if "heatmap_max_abs_diff" in parity
            else ""
        )
        raise ParityError(
            f"parity check failed: served outputs differ from training by "
            f"{parity['max_abs_diff']:.2e} (tolerance {parity['tolerance']:.0e}){heatmaps}; "
            "nothing was published"
        )
    try:
        replay_golden(served)
    except RuntimeError as exc:
        raise ParityError(f"{exc}; nothing was published") from None
    export.write_warmup(staging, name, golden_bytes)
    report_dir = staging / contract.REPORT_DIR
    report_dir.mkdir(exist_ok=True)
    dataset.write_splits(report_dir / SPLITS_FILE)
    return parity


def recipe_record(config: TrainConfig, fitted: Fitted) -> dict:
    """What the model card and the report say about how the model was trained."""
    name = recipe_for(config)
    return {
        "name": name,
        "description": RECIPES[name],
        "augmentation": augmentation_for(config),
        **fitted.plan.as_dict(),
    }


def model_card(
    config: TrainConfig,
    *,
    name: str,
    run_dir: Path,
    loaded: Loaded,
    fitted: Fitted,
    evaluation: Evaluation,
    parity: dict,
    timings: dict[str, float],
) -> dict:
    return {
        "name": name,
        "version": None,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_dir": str(run_dir),
        "labels": loaded.dataset.classes,
        "image_size": config.image_size,
        "signatures": [*contract.SIGNATURES, contract.EXPLAIN],
        "recipe": recipe_record(config, fitted),
        "config": config.model_dump(),
        "data": loaded.dataset.summary(),
        AUDIT_CARD_KEY: loaded.audit,
        "class_weight": fitted.class_weight,
        "metrics": evaluation.metrics,
        "history": fitted.state.history,
        "diagnosis": evaluation.diagnosis,
        "calibration": evaluation.calibration,
        "min_score": config.min_score,
        "thresholds": evaluation.thresholds,
        "parity": parity,
        "artifact_bytes": 0,
        "timings": timings,
        "software": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "python": platform.python_version(),
        },
    }


def write_run_report(run_dir: Path, card: dict) -> Path:
    """The report and model card kept in the run folder, published or not."""
    folder = run_dir / contract.REPORT_DIR
    write_report(folder, card)
    (folder / contract.MODEL_CARD_FILE).write_text(json.dumps(card, indent=1), encoding="utf-8")
    return folder / "report.html"


def publish(
    staging: Path,
    card: dict,
    *,
    model_dir: str | Path,
    name: str,
    run_dir: Path,
    loaded: Loaded,
    gate: PromotionGate | None,
) -> int:
    """Let the gate decide, then move the staged version into place atomically.

    On refusal the diagnosis gains a finding that explains it, the report stays in
    `run_dir/report/`, and Rejected says where (its comparison carries `run_report`).
    Either way the run has its outcome, so its checkpoints go; an error or a
    cancellation before this point keeps them for the resume.
    """
    card["artifact_bytes"] = export.directory_bytes(staging)

    def finalize(folder: Path, version: int) -> None:
        card["version"] = version
        write_report(folder / contract.REPORT_DIR, card)
        (folder / contract.MODEL_CARD_FILE).write_text(json.dumps(card, indent=1), encoding="utf-8")
        write_run_report(run_dir, card)

    with gate.lock() if gate else contextlib.nullcontext():
        if gate is not None:
            try:
                card["promotion"] = gate.check(card, loaded.dataset)
            except Rejected as exc:
                card["promotion"] = exc.comparison
                card["diagnosis"]["findings"].append(
                    explain_refusal(exc.comparison, card["history"], card["data"])
                )
                report = write_run_report(run_dir, card)
                exc.comparison["run_report"] = str(report)
                discard_checkpoints(run_dir / CHECKPOINTS_DIR)
                raise Rejected(
                    f"{exc}. Nothing was published; the report, curves, diagnosis and model "
                    f"card are in {report.parent}",
                    exc.comparison,
                ) from None
        version = repository.publish(staging, model_dir, name, before_rename=finalize)
        if gate is not None:
            gate.after_publish(version)
    discard_checkpoints(run_dir / CHECKPOINTS_DIR)
    return version


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
    started = time.monotonic()

    loaded = load(config, data, run_dir, hooks)
    fitted = fit(config, loaded, run_dir, hooks=hooks, keras_home=keras_home, verbose=verbose)
    if hooks.on_progress:
        hooks.on_progress({"stage": "evaluate"})
    calibrated = calibrate(config, loaded, fitted)
    evaluation = evaluate(config, loaded, fitted, calibrated)
    mistakes = mistakes_gallery(config, loaded, fitted, evaluation, run_dir)
    if hooks.on_progress:
        hooks.on_progress({"stage": "export"})
    t = time.monotonic()
    staging = repository.new_staging_dir(model_dir, name)
    try:
        parity = export_and_verify(staging, config, loaded, fitted, name, calibrated)
        timings = {
            "scan_seconds": loaded.seconds,
            "audit_seconds": loaded.audit["summary"]["seconds"]["total"],
            "train_seconds": fitted.seconds,
            **{f"{k}_seconds": v for k, v in fitted.state.phase_seconds.items()},
            "calibrate_seconds": calibrated.seconds,
            "evaluate_seconds": evaluation.seconds,
            "export_seconds": round(time.monotonic() - t, 3),
            "total_seconds": round(time.monotonic() - started, 3),
        }
        card = model_card(
            config,
            name=name,
            run_dir=run_dir,
            loaded=loaded,
            fitted=fitted,
            evaluation=evaluation,
            parity=parity,
            timings=timings,
        )
        card["mistakes"] = mistakes
        if mistakes:
            shutil.copytree(
                run_dir / contract.REPORT_DIR / MISTAKES_DIR,
                staging / contract.REPORT_DIR / MISTAKES_DIR,
                dirs_exist_ok=True,
            )
        if hooks.should_stop and hooks.should_stop():
            raise Cancelled("training cancelled before publishing")
        version = publish(
            staging,
            card,
            model_dir=model_dir,
            name=name,
            run_dir=run_dir,
            loaded=loaded,
            gate=gate,
        )
    except BaseException:
        repository.discard_staging(staging)
        raise
    version_dir = repository.version_path(model_dir, name, version)
    return TrainResult(
        name=name,
        version=version,
        version_dir=version_dir,
        run_dir=run_dir,
        metrics=evaluation.metrics["test"],
        diagnosis=evaluation.diagnosis,
        parity=parity,
        report=version_dir / contract.REPORT_DIR / "report.html",
        card=card,
    )
