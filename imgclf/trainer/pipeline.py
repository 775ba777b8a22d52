"""tf.data input pipelines built around the one preprocessing function.

Training branch:   shuffle -> read -> preprocess -> [cache] -> batch -> augment -> prefetch
Evaluation branch: read -> preprocess -> [cache] -> batch -> prefetch
(evaluation keeps file order and is never augmented)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import tensorflow as tf

from imgclf.config import TrainConfig
from imgclf.trainer.data import Dataset, Sample, load_dataset
from imgclf.trainer.model import augmentation_for
from imgclf.trainer.preprocessing import image_problem, make_augmenter, make_preprocess

log = logging.getLogger(__name__)

_FLOAT_BYTES = 4
# Fixed parallelism instead of tf.data.AUTOTUNE: with autotuning on, tearing an iterator
# down (Keras makes a new one every epoch, every evaluate and predict) waited for the
# autotuner's thread to finish its sleep, which grows with the iterator's age (up to 60 s):
# 2 of 5 epochs of 7 s then waited 3.0 and 1.6 s, none without it, at the same epoch time
# (python -m bench.teardown; bench/results/perf/tfdata-teardown.json).
_PARALLEL_CALLS = (
    len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
)
_PREFETCH_BATCHES = 2


def _fixed_parallelism(ds: tf.data.Dataset) -> tf.data.Dataset:
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def _fits_cache(count: int, image_size: int, budget_mb: int) -> bool:
    return count * image_size * image_size * 3 * _FLOAT_BYTES <= budget_mb * 1024 * 1024


def make_dataset(
    samples: Sequence[Sample],
    classes: Sequence[str],
    preprocess: Callable[[tf.Tensor], tf.Tensor],
    *,
    image_size: int,
    batch_size: int,
    training: bool,
    augment: Callable[[tf.Tensor], tf.Tensor] | None = None,
    seed: int = 0,
    cache_mb: int = 0,
) -> tf.data.Dataset:
    """Yield (images float32 [b, H, W, 3], one-hot float32 [b, classes]) batches.

    `augment` is only accepted with `training=True`: evaluation data must reach
    the model exactly as the exported `preprocess` signature produces it.
    """
    if augment is not None and not training:
        raise ValueError("augmentation is only allowed on the training branch")
    if not samples:
        raise ValueError("cannot build a dataset from zero samples")
    index = {label: i for i, label in enumerate(classes)}
    paths = [str(s.path) for s in samples]
    labels = [index[s.label] for s in samples]
    depth = len(classes)
    cache = cache_mb > 0 and _fits_cache(len(samples), image_size, cache_mb)

    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    if training and not cache:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    def load(path: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return preprocess(tf.io.read_file(path)), tf.one_hot(label, depth, dtype=tf.float32)

    ds = ds.map(load, num_parallel_calls=_PARALLEL_CALLS, deterministic=True)
    if cache:
        ds = ds.cache()
        if training:
            ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment is not None:
        ds = ds.map(lambda x, y: (augment(x), y), num_parallel_calls=_PARALLEL_CALLS)
    return _fixed_parallelism(ds.prefetch(_PREFETCH_BATCHES))


def load_for_config(
    config: TrainConfig, data: str | Path
) -> tuple[Dataset, tf.types.experimental.PolymorphicFunction]:
    """Scan and split `data` as `config` says, with the preprocess function every pipeline
    of the run uses (it also decides which files are usable). Warnings are logged."""
    preprocess = make_preprocess(config.image_size)
    dataset = load_dataset(
        data,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
        is_image=lambda p: image_problem(preprocess, p),
        allow_missing_classes=config.allow_missing_classes,
    )
    for warning in dataset.warnings:
        log.warning(warning)
    return dataset, preprocess


def label_indices(samples: Sequence[Sample], classes: Sequence[str]) -> list[int]:
    index = {label: i for i, label in enumerate(classes)}
    return [index[s.label] for s in samples]


def training_dataset(
    samples: Sequence[Sample],
    classes: Sequence[str],
    preprocess: Callable[[tf.Tensor], tf.Tensor],
    config: TrainConfig,
) -> tf.data.Dataset:
    """The training branch as a config describes it: augmentation preset, seed, cache budget."""
    return make_dataset(
        samples,
        classes,
        preprocess,
        image_size=config.image_size,
        batch_size=config.batch_size,
        training=True,
        augment=make_augmenter(augmentation_for(config), config.seed),
        seed=config.seed,
        cache_mb=config.cache_images_mb,
    )


def evaluation_dataset(
    samples: Sequence[Sample],
    classes: Sequence[str],
    preprocess: Callable[[tf.Tensor], tf.Tensor],
    config: TrainConfig,
    batch_size: int | None = None,
) -> tf.data.Dataset:
    """The evaluation branch: file order kept, never augmented."""
    return make_dataset(
        samples,
        classes,
        preprocess,
        image_size=config.image_size,
        batch_size=batch_size or config.batch_size,
        training=False,
        cache_mb=config.cache_images_mb,
    )
