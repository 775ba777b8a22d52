"""Augmentation reaches the training branch only; evaluation sees exactly `preprocess(bytes)`."""

import numpy as np
import pytest
import tensorflow as tf

from imgclf.trainer.data import Sample
from imgclf.trainer.pipeline import make_dataset
from imgclf.trainer.preprocessing import make_augmenter, make_preprocess
from tests.images import png, rgb_array


@pytest.fixture
def samples(tmp_path):
    out = []
    for i in range(6):
        path = tmp_path / f"{i}.png"
        path.write_bytes(png(rgb_array(40, 40, seed=i)))
        out.append(Sample(path, "ab"[i % 2]))
    return out


def collect(ds):
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in ds], strict=True)
    return np.concatenate(images), np.concatenate(labels)


@pytest.mark.parametrize("cache_mb", [0, 64])
def test_evaluation_images_are_untouched(samples, cache_mb):
    preprocess = make_preprocess(32)
    ds = make_dataset(
        samples,
        ["a", "b"],
        preprocess,
        image_size=32,
        batch_size=4,
        training=False,
        cache_mb=cache_mb,
    )
    images, labels = collect(ds)
    expected = np.stack([preprocess(tf.constant(s.path.read_bytes())).numpy() for s in samples])
    np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(labels.argmax(1), [0, 1, 0, 1, 0, 1])
    # Twice the same: no randomness anywhere in the evaluation branch.
    np.testing.assert_array_equal(collect(ds)[0], images)


def test_training_branch_is_augmented(samples):
    preprocess = make_preprocess(32)
    ds = make_dataset(
        samples,
        ["a", "b"],
        preprocess,
        image_size=32,
        batch_size=6,
        training=True,
        augment=make_augmenter("strong", seed=1),
        seed=1,
    )
    images, labels = collect(ds)
    assert sorted(labels.argmax(1).tolist()) == [0, 0, 0, 1, 1, 1]  # labels survive
    originals = np.stack([preprocess(tf.constant(s.path.read_bytes())).numpy() for s in samples])
    # No augmented image equals any original image.
    for image in images:
        assert min(np.abs(image - o).max() for o in originals) > 1.0


def test_augmentation_on_evaluation_is_refused(samples):
    with pytest.raises(ValueError, match="only allowed on the training branch"):
        make_dataset(
            samples,
            ["a", "b"],
            make_preprocess(32),
            image_size=32,
            batch_size=2,
            training=False,
            augment=make_augmenter("light", seed=0),
        )


def test_augmenter_presets():
    assert make_augmenter("none", seed=0) is None
    with pytest.raises(ValueError, match="augmentation must be one of"):
        make_augmenter("extreme", seed=0)
    images = tf.zeros([2, 32, 32, 3])
    out = make_augmenter("standard", seed=0)(images)
    assert out.shape == images.shape


@pytest.mark.parametrize("training", [True, False])
def test_pipelines_run_without_the_autotuner(samples, training):
    """The autotuner's thread made every epoch's iterator teardown wait for its sleep
    (seconds per epoch: bench/teardown.py); both branches run with fixed parallelism."""
    ds = make_dataset(
        samples, ["a", "b"], make_preprocess(32), image_size=32, batch_size=2, training=training
    )
    assert ds.options().autotune.enabled is False
    assert ds.take(1).options().autotune.enabled is False  # what the statistics pass takes
    images, labels = collect(ds)
    assert images.shape == (6, 32, 32, 3) and labels.shape == (6, 2)
