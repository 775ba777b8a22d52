"""The training loops of both recipes, with per-epoch checkpoints, early stopping and hooks.

fine_tune (pretrained weights): phase 1 trains the head on a frozen base (on cached
base features when there is no augmentation, which makes an epoch nearly free).
Phase 2 unfreezes the top stages, keeps BatchNormalization frozen and recompiles
at a low, cosine-decayed learning rate. Early stopping watches validation loss
across both phases and the best weights seen are restored at the end.

from_scratch (weights=none): one phase. BatchNorm statistics are estimated from the
training images first, then the whole network trains with BatchNorm in training mode
for head_epochs + fine_tune_epochs epochs under a linear warmup and a cosine decay
from `learning_rate`; early stopping restores the best weights, and the statistics
are estimated again over the training set for those final weights.

Everything needed to resume is written after every epoch to `checkpoints/`:
weights of the last and the best epoch and a JSON state (phase, epoch, history,
early-stopping counters). Optimizer moments restart on resume; the learning-rate
schedule continues from the saved step. Once a run's outcome is recorded (a published or
refused version, a fold's or a trial's result) the folder is removed: `discard_checkpoints`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import keras
import numpy as np
import tensorflow as tf

from imgclf.config import TrainConfig
from imgclf.errors import Cancelled
from imgclf.trainer.model import (
    FROM_SCRATCH,
    Classifier,
    augmentation_for,
    estimate_bn_statistics,
    freeze_base,
    unfreeze_all,
    unfreeze_top,
)

_PROGRESS_INTERVAL_S = 1.0


@dataclass
class Hooks:
    """How a caller (CLI, queue worker) watches and stops a run. Both are optional."""

    on_progress: Callable[[dict], None] | None = None
    should_stop: Callable[[], bool] | None = None


class _ContinuousTensorBoard(keras.callbacks.TensorBoard):
    """Epoch summaries at steps that continue after the earlier phases' epochs, so both
    phases share one axis in TensorBoard instead of both starting at 0."""

    def __init__(self, offset: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.offset = offset

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        super().on_epoch_end(epoch + self.offset, logs)


@dataclass
class RunState:
    phase: int = 1  # phase in progress (3 = both done)
    epoch: int = 0  # epochs finished in that phase
    step: int = 0  # optimizer steps finished in that phase (for the LR schedule)
    best_val_loss: float = math.inf
    best_epoch: int = -1  # index into history
    wait: int = 0
    history: list[dict] = field(default_factory=list)
    phase_seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> RunState:
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        data["best_val_loss"] = (
            math.inf if data.get("best_val_loss") is None else data["best_val_loss"]
        )
        return cls(**data)

    def save(self, path: Path) -> None:
        data = asdict(self)
        data["best_val_loss"] = None if math.isinf(self.best_val_loss) else self.best_val_loss
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        os.replace(tmp, path)


CHECKPOINTS_DIR = "checkpoints"  # a run's checkpoint folder (the worker's cleanup finds it by name)


class Checkpoints:
    """Files that let an interrupted run resume from its last finished epoch.

    Phase 1 only changes the head, so the (large, frozen) base is written once and each
    epoch writes the head alone: with cached features an epoch would otherwise be
    mostly spent writing 90 MB of unchanged weights twice. Phase 2 writes the model.
    """

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / "state.json"
        self.base = self.dir / "base.weights.h5"  # phase 1: written once
        self.head_last = self.dir / "head-last.weights.h5"
        self.head_best = self.dir / "head-best.weights.h5"
        self.last = self.dir / "last.weights.h5"  # phase 2: the whole model
        self.best = self.dir / "best.weights.h5"

    def save_weights(self, model: keras.Model, path: Path) -> None:
        """Model weights only, by position (Keras' save_weights also stores optimizer
        slots, which then refuse to load into the other phase's optimizer)."""
        tmp = path.with_name("tmp-" + path.name)
        with h5py.File(tmp, "w") as handle:
            for i, weight in enumerate(model.weights):
                handle.create_dataset(str(i), data=keras.ops.convert_to_numpy(weight))
                handle[str(i)].attrs["path"] = weight.path
        os.replace(tmp, path)

    @staticmethod
    def load_weights(model: keras.Model, path: Path) -> None:
        with h5py.File(path, "r") as handle:
            if len(handle) != len(model.weights):
                raise ValueError(
                    f"{path} holds {len(handle)} weights, model has "
                    f"{len(model.weights)}: not this model's checkpoint"
                )
            for i, weight in enumerate(model.weights):
                weight.assign(handle[str(i)][()])


def discard_checkpoints(directory: Path) -> None:
    """Remove a finished run's checkpoints.

    They only serve to resume an interrupted run, and each holds the whole network
    (about 270 MB for ResNet-50 at any image size): a worker that kept them would fill
    its disk by one job, fold or search trial at a time. Keras' BackupAndRestore deletes
    its backup at the end of training for the same reason.
    """
    shutil.rmtree(directory, ignore_errors=True)


class _EpochCallback(keras.callbacks.Callback):
    """Checkpoint, early-stop, report progress and honour cancellation at batch boundaries."""

    def __init__(
        self,
        *,
        saved: keras.Model,
        last: Path,
        best: Path,
        checkpoints: Checkpoints,
        state: RunState,
        phase: int,
        epochs: int,
        steps: int,
        later_steps: int,
        patience: int,
        hooks: Hooks,
        phase_name: str = "",
    ) -> None:
        super().__init__()
        # What the phase trains, for people watching progress (head, fine-tune, whole network).
        self.phase_name = phase_name or ("head" if phase == 1 else "fine-tune")
        self.saved = saved
        self.last = last
        self.best = best
        self.checkpoints = checkpoints
        self.state = state
        self.phase = phase
        self.epochs = epochs
        self.steps = steps
        self.later_steps = later_steps
        self.patience = patience
        self.hooks = hooks
        self._epoch_start = time.monotonic()
        self._last_report = 0.0
        self._step_times: list[float] = []
        self._batch_start = time.monotonic()
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._epoch_start = time.monotonic()
        self._batch_start = self._epoch_start

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.monotonic()
        self._step_times.append(now - self._batch_start)
        self._step_times = self._step_times[-50:]
        self._batch_start = now
        if self.hooks.should_stop and self.hooks.should_stop():
            raise Cancelled("training cancelled")
        if self.hooks.on_progress and now - self._last_report >= _PROGRESS_INTERVAL_S:
            self._last_report = now
            per_step = float(np.median(self._step_times))
            remaining = (self.epochs - self._epoch - 1) * self.steps + (self.steps - batch - 1)
            self.hooks.on_progress(
                {
                    "stage": "train",
                    "phase": self.phase,
                    "phase_name": self.phase_name,
                    "epoch": self._epoch + 1,
                    "epochs": self.epochs,
                    "batch": batch + 1,
                    "steps": self.steps,
                    "metrics": _floats(logs),
                    "eta_seconds": round(per_step * (remaining + self.later_steps), 1),
                }
            )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = _floats(logs)
        record = {
            "phase": self.phase,
            "epoch": epoch + 1,
            "seconds": round(time.monotonic() - self._epoch_start, 3),
            **logs,
        }
        optimizer = self.model.optimizer
        record["learning_rate"] = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        self.state.history.append(record)
        self.state.epoch = epoch + 1
        self.state.step = int(keras.ops.convert_to_numpy(optimizer.iterations))
        val_loss = logs.get("val_loss", math.inf)
        if val_loss < self.state.best_val_loss - 1e-6:
            self.state.best_val_loss = val_loss
            self.state.best_epoch = len(self.state.history) - 1
            self.state.wait = 0
            self.checkpoints.save_weights(self.saved, self.best)
        else:
            self.state.wait += 1
        self.checkpoints.save_weights(self.saved, self.last)
        self.state.save(self.checkpoints.state_path)
        if self.patience and self.state.wait >= self.patience:
            self.model.stop_training = True
        if self.hooks.on_progress:
            self.hooks.on_progress(
                {
                    "stage": "train",
                    "phase": self.phase,
                    "phase_name": self.phase_name,
                    "epoch": epoch + 1,
                    "epochs": self.epochs,
                    "batch": self.steps,
                    "steps": self.steps,
                    "metrics": logs,
                    "eta_seconds": None,
                }
            )
        if self.hooks.should_stop and self.hooks.should_stop():
            raise Cancelled("training cancelled")


class _FreshStatisticsValidation(keras.callbacks.Callback):
    """from_scratch: validate with BatchNorm statistics of this epoch's weights.

    BatchNorm's moving averages (momentum 0.99) trail weights that change fast from
    random initialisation: on small data validation through them stays near chance
    long after training accuracy is high, and early stopping would keep the wrong
    epoch. So each epoch ends by estimating the statistics from training images and
    only then evaluating; the val_* values it adds are what the next callbacks see.
    """

    def __init__(
        self, classifier: Classifier, sample: tf.data.Dataset, val: tf.data.Dataset
    ) -> None:
        super().__init__()
        self.classifier = classifier
        self.sample = sample
        self.val = val

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        estimate_bn_statistics(self.classifier, self.sample)
        results = self.model.evaluate(self.val, verbose=0, return_dict=True)
        if logs is not None:
            logs.update({f"val_{k}": v for k, v in results.items()})


def _floats(logs: dict | None) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in (logs or {}).items()}


def _optimizer(
    config: TrainConfig, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule
) -> keras.optimizers.Optimizer:
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=config.momentum)
    return keras.optimizers.Adam(learning_rate=learning_rate)


def _compile(
    model: keras.Model,
    config: TrainConfig,
    optimizer: keras.optimizers.Optimizer,
    jit_compile: bool = False,
) -> None:
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=jit_compile,
    )


def scratch_schedule(
    config: TrainConfig, steps: int, learning_rate: float
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Linear warmup from learning_rate / 10 to learning_rate over warmup_epochs, then
    cosine decay to 1% of it at the end of head_epochs + fine_tune_epochs."""
    total = max(1, (config.head_epochs + config.fine_tune_epochs) * steps)
    warmup = min(total - 1, config.warmup_epochs * steps)
    return keras.optimizers.schedules.CosineDecay(
        learning_rate / 10 if warmup else learning_rate,
        decay_steps=max(1, total - warmup),
        alpha=0.01,
        warmup_target=learning_rate if warmup else None,
        warmup_steps=warmup,
    )


def _cached_features(classifier: Classifier, ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Run the frozen base once; phase 1 then trains the head on these features."""
    feats, labels = [], []
    for images, onehot in ds:
        feats.append(classifier.features(images, training=False).numpy())
        labels.append(onehot.numpy())
    x, y = np.concatenate(feats), np.concatenate(labels)
    return x, y


def train_phases(
    classifier: Classifier,
    config: TrainConfig,
    *,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    eval_train_ds: tf.data.Dataset,
    steps: int,
    checkpoint_dir: Path,
    class_weight: dict[int, float] | None,
    hooks: Hooks | None = None,
    tensorboard_dir: Path | None = None,
    verbose: int = 0,
    jit_compile: bool = False,
    learning_rate_scale: float = 1.0,
) -> RunState:
    """Run (or resume) the classifier's recipe; returns the final state with the full history.

    `eval_train_ds` is the training split without augmentation, used for cached
    features (fine_tune) or BatchNorm statistics (from_scratch). When this returns,
    the model holds the best weights seen. `learning_rate_scale` multiplies every
    learning rate (the device count when one step spans several devices).
    """
    hooks = hooks or Hooks()
    checkpoints = Checkpoints(checkpoint_dir)
    state = RunState.load(checkpoints.state_path)
    if classifier.recipe == FROM_SCRATCH:
        return _train_from_scratch(
            classifier,
            config,
            state=state,
            checkpoints=checkpoints,
            train_ds=train_ds,
            val_ds=val_ds,
            eval_train_ds=eval_train_ds,
            steps=steps,
            class_weight=class_weight,
            hooks=hooks,
            tensorboard_dir=tensorboard_dir,
            verbose=verbose,
            jit_compile=jit_compile,
            learning_rate=config.learning_rate * learning_rate_scale,
        )
    if state.phase == 1 and state.history:
        checkpoints.load_weights(classifier.base, checkpoints.base)
        checkpoints.load_weights(classifier.head, checkpoints.head_last)
    elif state.phase > 1:
        checkpoints.load_weights(classifier.model, checkpoints.last)
    model = classifier.model
    patience = config.early_stopping_patience
    phase2_steps = config.fine_tune_epochs * steps

    def callbacks(phase: int, epochs: int, phase_steps: int, later: int) -> list:
        head_only = phase == 1
        cbs: list = [
            _EpochCallback(
                saved=classifier.head if head_only else model,
                last=checkpoints.head_last if head_only else checkpoints.last,
                best=checkpoints.head_best if head_only else checkpoints.best,
                checkpoints=checkpoints,
                state=state,
                phase=phase,
                epochs=epochs,
                steps=phase_steps,
                later_steps=later,
                patience=patience,
                hooks=hooks,
            )
        ]
        if tensorboard_dir is not None:
            earlier = sum(1 for h in state.history if h["phase"] < phase)
            cbs.append(
                _ContinuousTensorBoard(
                    earlier, log_dir=str(tensorboard_dir / f"phase{phase}"), write_graph=False
                )
            )
        return cbs

    def finish_phase(phase: int, started: float) -> None:
        if phase == 1:
            if checkpoints.head_best.is_file():
                checkpoints.load_weights(classifier.head, checkpoints.head_best)
            # Phase 2 starts from, and falls back to, phase 1's best weights.
            checkpoints.save_weights(model, checkpoints.best)
        elif checkpoints.best.is_file():
            checkpoints.load_weights(model, checkpoints.best)
        checkpoints.save_weights(model, checkpoints.last)
        state.phase = phase + 1
        state.epoch = 0
        state.step = 0
        state.wait = 0
        key = f"phase{phase}"
        state.phase_seconds[key] = round(
            state.phase_seconds.get(key, 0.0) + time.monotonic() - started, 3
        )
        state.save(checkpoints.state_path)

    if state.phase == 1:
        started = time.monotonic()
        freeze_base(classifier)
        if not checkpoints.base.is_file():
            checkpoints.save_weights(classifier.base, checkpoints.base)
        if config.head_epochs > state.epoch and not (patience and state.wait >= patience):
            use_cache = config.cache_features and augmentation_for(config) == "none"
            if use_cache:
                x, y = _cached_features(classifier, eval_train_ds)
                vx, vy = _cached_features(classifier, val_ds)
                fit_model = classifier.head
                fit_args = {
                    "x": x,
                    "y": y,
                    "batch_size": config.batch_size,
                    "shuffle": True,
                    "validation_data": (vx, vy),
                }
            else:
                fit_model = model
                fit_args = {"x": train_ds, "validation_data": val_ds, "shuffle": False}
            _compile(
                fit_model,
                config,
                _optimizer(config, config.learning_rate * learning_rate_scale),
                jit_compile,
            )
            fit_model.fit(
                **fit_args,
                epochs=config.head_epochs,
                initial_epoch=state.epoch,
                class_weight=class_weight,
                callbacks=callbacks(1, config.head_epochs, steps, phase2_steps),
                verbose=verbose,
            )
        finish_phase(1, started)

    if state.phase == 2:
        started = time.monotonic()
        if config.fine_tune_epochs > state.epoch and not (patience and state.wait >= patience):
            unfreeze_top(classifier, config.fine_tune_from)
            schedule = keras.optimizers.schedules.CosineDecay(
                config.fine_tune_learning_rate * learning_rate_scale,
                decay_steps=max(1, phase2_steps),
                alpha=0.05,
            )
            optimizer = _optimizer(config, schedule)
            _compile(model, config, optimizer, jit_compile)
            optimizer.iterations.assign(state.step)
            model.fit(
                train_ds,
                validation_data=val_ds,
                shuffle=False,  # the dataset reshuffles itself every epoch
                epochs=config.fine_tune_epochs,
                initial_epoch=state.epoch,
                class_weight=class_weight,
                callbacks=callbacks(2, config.fine_tune_epochs, steps, 0),
                verbose=verbose,
            )
        finish_phase(2, started)
    freeze_base(classifier)
    return state


def _train_from_scratch(
    classifier: Classifier,
    config: TrainConfig,
    *,
    state: RunState,
    checkpoints: Checkpoints,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset,
    eval_train_ds: tf.data.Dataset,
    steps: int,
    class_weight: dict[int, float] | None,
    hooks: Hooks,
    tensorboard_dir: Path | None,
    verbose: int,
    jit_compile: bool,
    learning_rate: float,
) -> RunState:
    """One phase over the whole network; see the module docstring for the recipe."""
    model = classifier.model
    epochs = config.head_epochs + config.fine_tune_epochs
    patience = config.early_stopping_patience
    if state.phase == 1:
        started = time.monotonic()
        if state.history:
            checkpoints.load_weights(model, checkpoints.last)
        else:
            # Before any step: statistics of the initial weights on these images, so
            # even the first validation pass sees normalised activations.
            estimate_bn_statistics(classifier, eval_train_ds)
        unfreeze_all(classifier)
        if epochs > state.epoch and not (patience and state.wait >= patience):
            optimizer = _optimizer(config, scratch_schedule(config, steps, learning_rate))
            _compile(model, config, optimizer, jit_compile)
            optimizer.iterations.assign(state.step)
            sample_batches = -(-config.bn_statistics_images // config.batch_size)
            cbs: list = [
                _FreshStatisticsValidation(classifier, eval_train_ds.take(sample_batches), val_ds),
                _EpochCallback(
                    saved=model,
                    last=checkpoints.last,
                    best=checkpoints.best,
                    checkpoints=checkpoints,
                    state=state,
                    phase=1,
                    epochs=epochs,
                    steps=steps,
                    later_steps=0,
                    patience=patience,
                    hooks=hooks,
                    phase_name="whole network",
                ),
            ]
            if tensorboard_dir is not None:
                cbs.append(
                    keras.callbacks.TensorBoard(log_dir=str(tensorboard_dir), write_graph=False)
                )
            model.fit(
                train_ds,
                shuffle=False,  # the dataset reshuffles itself every epoch
                epochs=epochs,
                initial_epoch=state.epoch,
                class_weight=class_weight,
                callbacks=cbs,
                verbose=verbose,
            )
        if checkpoints.best.is_file():
            checkpoints.load_weights(model, checkpoints.best)
        # The moving averages trail the weights; the final weights get their own statistics.
        estimate_bn_statistics(classifier, eval_train_ds)
        checkpoints.save_weights(model, checkpoints.last)
        state.phase = 3
        state.epoch = 0
        state.step = 0
        state.wait = 0
        state.phase_seconds["phase1"] = round(
            state.phase_seconds.get("phase1", 0.0) + time.monotonic() - started, 3
        )
        state.save(checkpoints.state_path)
    else:
        checkpoints.load_weights(model, checkpoints.last)
    return state
