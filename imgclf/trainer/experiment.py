"""What a run, search trials and cross-validation folds share: one config trained on
given train/validation samples through the normal input pipeline and the recipe's loop,
then scored on samples it did not train on.

`fit` is the one build-and-train step (`train_and_export`'s fit stage calls it too),
fed by `make_dataset` with the one preprocess function; only which samples go where
differs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from imgclf.config import TrainConfig
from imgclf.trainer import hardware
from imgclf.trainer.data import Dataset, Sample, class_weights
from imgclf.trainer.metrics import classification_metrics
from imgclf.trainer.model import Classifier, build_classifier, recipe_for
from imgclf.trainer.pipeline import evaluation_dataset, label_indices, training_dataset
from imgclf.trainer.preprocessing import PreprocessFn
from imgclf.trainer.training import Hooks, RunState, train_phases

log = logging.getLogger(__name__)

IDENTITY_FILE = "identity.json"


def build(
    config: TrainConfig,
    num_classes: int,
    run_plan: hardware.Plan,
    keras_home: str | Path | None = None,
) -> Classifier:
    """The classifier of `config`'s recipe, built under the plan's precision policy."""
    with hardware.dtype_policy(run_plan.precision):
        return build_classifier(
            num_classes,
            image_size=config.image_size,
            weights=config.weights,
            dropout=config.dropout,
            l2=config.l2,
            hidden_units=config.hidden_units,
            keras_home=keras_home,
            recipe=recipe_for(config),
        )


def mixed_order(samples: Sequence[Sample], seed: int) -> list[Sample]:
    """The samples in one fixed shuffled order, for the unaugmented training pipeline.

    Splits list their samples class by class, so batches in file order hold one class
    each. from_scratch estimates BatchNorm statistics from these batches in training
    mode: within a one-class batch every layer removes the class's own mean, and the
    deeper layers' statistics then describe activations that inference never produces
    (validation loss of 10-60 on colour patches). Mixed batches look like training's.
    """
    order = list(samples)
    np.random.default_rng(seed).shuffle(order)
    return order


def fit(
    config: TrainConfig,
    *,
    classes: Sequence[str],
    train: Sequence[Sample],
    val: Sequence[Sample],
    preprocess: PreprocessFn,
    checkpoint_dir: Path,
    hooks: Hooks | None = None,
    keras_home: str | Path | None = None,
    verbose: int = 0,
    tensorboard_dir: Path | None = None,
    run_plan: hardware.Plan | None = None,
    strategy: tf.distribute.Strategy | None = None,
) -> tuple[Classifier, RunState]:
    """Train a fresh classifier on `train`, early-stopping on `val`; resumes from checkpoints.

    The one build-and-train step of a run, a search trial and a fold. Keras' global
    state is cleared first, so a long search or many folds do not pile up graphs and
    layer names in one process. With several devices (`run_plan.replicas`), each step
    takes batch_size images per device and the learning rates scale with the count.
    """
    keras.backend.clear_session()
    keras.utils.set_random_seed(config.seed)
    run_plan = run_plan or hardware.plan(config)
    strategy = strategy or hardware.strategy_for(run_plan)
    stepped = config.model_copy(update={"batch_size": run_plan.global_batch_size})
    split = Dataset(root=Path("."), classes=list(classes), splits={"train": list(train)})
    with strategy.scope():
        classifier = build(config, len(classes), run_plan, keras_home)
        state = train_phases(
            classifier,
            config,
            train_ds=training_dataset(train, classes, preprocess, stepped),
            val_ds=evaluation_dataset(val, classes, preprocess, stepped),
            eval_train_ds=evaluation_dataset(
                mixed_order(train, config.seed), classes, preprocess, stepped
            ),
            steps=-(-len(train) // stepped.batch_size),
            checkpoint_dir=checkpoint_dir,
            class_weight=class_weights(split, config.class_weight),
            hooks=hooks,
            tensorboard_dir=tensorboard_dir,
            verbose=verbose,
            jit_compile=run_plan.jit_compile,
            learning_rate_scale=run_plan.learning_rate_scale,
        )
    if run_plan.precision != "float32":
        classifier = in_float32(classifier, config, len(classes), run_plan, keras_home)
    infer_as_served(classifier)
    return classifier, state


def in_float32(
    classifier: Classifier,
    config: TrainConfig,
    num_classes: int,
    run_plan: hardware.Plan,
    keras_home: str | Path | None = None,
) -> Classifier:
    """The trained classifier rebuilt with every layer computing in float32.

    Mixed precision speeds training up, but a model exported from it computes in that
    precision wherever it is served: on an AVX512-BF16 CPU the bfloat16-trained model ran
    batch 1 at 0.49x the float32 one, and CPUs without bfloat16 units emulate it. The
    weights are float32 under mixed precision, so they copy over unchanged (the rebuild
    starts from random weights rather than loading ImageNet's again only to overwrite
    them). Evaluation, calibration, the parity check and the export then all run float32,
    on every machine alike; a server can still opt into bfloat16 where it pays
    (IMGCLF_BFLOAT16).
    """
    float32_plan = dataclasses.replace(run_plan, precision="float32")
    same_layers = config.model_copy(update={"weights": "none", "recipe": classifier.recipe})
    rebuilt = build(same_layers, num_classes, float32_plan, keras_home)
    rebuilt.model.set_weights(classifier.model.get_weights())
    return rebuilt


def infer_as_served(classifier: Classifier) -> None:
    """After training, predict without XLA, as the exported signatures do.

    Evaluation, calibration and the export's parity check all call Keras' predict; when
    the train step was XLA-compiled that would run XLA's fused kernels too, which round
    differently from the exported graph (1.6e-5 in probabilities on a from_scratch model,
    over parity's 1e-5 tolerance, so the export was refused). The metrics a run reports
    are then computed by the arithmetic the server runs.
    """
    model = classifier.model
    if model.jit_compile:
        model.jit_compile = False
        model.predict_function = None
        model.test_function = None


def score(
    classifier: Classifier,
    samples: Sequence[Sample],
    classes: Sequence[str],
    preprocess: PreprocessFn,
    config: TrainConfig,
) -> dict:
    """Metrics of the classifier's predictions on `samples` (see `classification_metrics`).

    The loss here is the plain cross-entropy of the predicted probabilities: unlike
    Keras' `val_loss` it holds no label smoothing and no L2 term, so configs that differ
    in those are compared fairly.
    """
    probabilities = predict(classifier, samples, classes, preprocess, config)
    return classification_metrics(
        label_indices(samples, classes), probabilities, classes, config.top_k
    )


def predict(
    classifier: Classifier,
    samples: Sequence[Sample],
    classes: Sequence[str],
    preprocess: PreprocessFn,
    config: TrainConfig,
) -> np.ndarray:
    """Probabilities float32 [len(samples), classes], in sample order, never augmented."""
    return classifier.model.predict(
        evaluation_dataset(samples, classes, preprocess, config), verbose=0
    )


def headline(metrics: dict) -> dict[str, float]:
    """The scalar metrics worth a table column: accuracy, top-k, loss, macro F1."""
    return {k: round(float(v), 6) for k, v in metrics.items() if isinstance(v, int | float)}


def reset_if_changed(folder: Path, identity: dict[str, Any]) -> None:
    """Keep `folder` only if it was made for the same `identity` (config, data, ...).

    A resumed job finds its own state here; anything made for other settings or other
    data is removed rather than silently reused.
    """
    path = folder / IDENTITY_FILE
    if path.is_file() and json.loads(path.read_text(encoding="utf-8")) != identity:
        log.warning("%s was made for other settings or data; starting it over", folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(path, identity)


def write_json(path: Path, data: Any) -> None:
    """Write atomically, so a crash never leaves half a result that a resume would trust."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
