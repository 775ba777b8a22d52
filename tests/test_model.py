"""Model builder and the freezing rules: GAP head, frozen base, BatchNorm statistics untouched."""

import keras
import numpy as np
import pytest

from imgclf.config import parse_config
from imgclf.errors import WeightsUnavailableError
from imgclf.trainer import model as model_module
from imgclf.trainer.model import build_classifier, freeze_base, unfreeze_top
from imgclf.trainer.training import train_phases


def small(num_classes=3, **kw):
    args = {"image_size": 32, "weights": "none", "dropout": 0.2, "l2": 1e-4}
    args.update(kw)
    return build_classifier(num_classes, **args)


def test_head_is_pooling_dropout_dense_not_flatten():
    clf = small(num_classes=2)
    kinds = [type(layer).__name__ for layer in clf.head.layers]
    assert kinds == ["Dropout", "Dense"]
    assert not any(isinstance(layer, keras.layers.Flatten) for layer in clf.model.layers)
    assert clf.head.count_params() == 2048 * 2 + 2
    assert clf.model.output_shape == (None, 2)
    assert clf.head.layers[-1].kernel_regularizer is not None


def test_optional_hidden_layer():
    clf = small(hidden_units=64)
    assert [layer.name for layer in clf.head.layers] == [
        "hidden_dropout",
        "hidden",
        "dropout",
        "probabilities",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1}, "num_classes"),
        ({"image_size": 16}, "image_size"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        small(**kwargs)


def test_phase_freezing_rules():
    clf = small()
    freeze_base(clf)
    assert clf.base.trainable_weights == []
    assert len(clf.head.trainable_weights) == 2
    unfreeze_top(clf, "conv5")
    names = {w.path for w in clf.base.trainable_weights}
    assert names and all(n.startswith("conv5_") for n in names)
    assert not any("_bn" in n for n in names)
    unfreeze_top(clf, "conv4")
    stages = {w.path[:5] for w in clf.base.trainable_weights}
    assert stages == {"conv4", "conv5"}
    bn_layers = [
        layer for layer in clf.base.layers if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert bn_layers and not any(layer.trainable for layer in bn_layers)


def test_fine_tuning_leaves_batchnorm_statistics_unchanged(tmp_path):
    """Phase 2 updates conv5 kernels but never BN moving mean/variance (nor gamma/beta)."""
    import tensorflow as tf

    from imgclf.trainer.training import Hooks

    config = parse_config(
        {
            "image_size": 32,
            "weights": "none",
            "batch_size": 8,
            "head_epochs": 1,
            "fine_tune_epochs": 2,
            "augmentation": "none",
            "early_stopping_patience": 0,
        }
    )
    clf = small(num_classes=2)
    rng = np.random.default_rng(0)
    labels = np.arange(16) % 2
    x = rng.normal(0, 20, (16, 32, 32, 3)) + np.where(labels, 40, -40)[:, None, None, None]
    y = np.eye(2, dtype="float32")[labels]
    ds = tf.data.Dataset.from_tensor_slices((x.astype("float32"), y)).batch(8)
    bn_weights = [w for w in clf.base.weights if "_bn/" in w.path]
    assert len(bn_weights) == 53 * 4  # gamma, beta, moving mean and variance of every BN layer
    bn_before = [w.numpy().copy() for w in bn_weights]
    conv5 = clf.base.get_layer("conv5_block3_3_conv").kernel
    conv1 = clf.base.get_layer("conv1_conv").kernel
    conv5_before, conv1_before = conv5.numpy().copy(), conv1.numpy().copy()
    seen = []

    def on_progress(event):
        if event.get("phase") == 2 and event["batch"] == event["steps"]:  # end of a phase-2 epoch
            seen.append(event["epoch"])
            assert not np.array_equal(conv5.numpy(), conv5_before)
            np.testing.assert_array_equal(conv1.numpy(), conv1_before)
            for w, before in zip(bn_weights, bn_before, strict=True):
                np.testing.assert_array_equal(w.numpy(), before, err_msg=w.path)

    state = train_phases(
        clf,
        config,
        train_ds=ds,
        val_ds=ds,
        eval_train_ds=ds,
        steps=2,
        checkpoint_dir=tmp_path / "ckpt",
        class_weight=None,
        hooks=Hooks(on_progress=on_progress),
    )
    assert [h["phase"] for h in state.history] == [1, 2, 2]
    assert seen == [1, 2]
    for w, before in zip(bn_weights, bn_before, strict=True):
        np.testing.assert_array_equal(w.numpy(), before, err_msg=w.path)


def test_imagenet_offline_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(model_module, "_DOWNLOAD_TIMEOUT_S", 3.0)
    monkeypatch.setattr(model_module, "IMAGENET_NOTOP_URL", "http://127.0.0.1:9/nothing.h5")
    with pytest.raises(WeightsUnavailableError) as info:
        model_module.resolve_weights("imagenet", keras_home=tmp_path)
    message = str(info.value)
    assert model_module.IMAGENET_NOTOP_FILE in message
    assert str(tmp_path / "models" / model_module.IMAGENET_NOTOP_FILE) in message
    assert "weights=none" in message


def test_imagenet_from_cache_and_weights_path(tmp_path):
    clf = small(num_classes=2)
    cache = tmp_path / "models"
    cache.mkdir()
    # Write the same legacy HDF5 layout as Keras' published ImageNet file.
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(cache / model_module.IMAGENET_NOTOP_FILE, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, clf.base)
    resolved = model_module.resolve_weights("imagenet", keras_home=tmp_path)
    assert resolved == str(cache / model_module.IMAGENET_NOTOP_FILE)
    again = small(num_classes=2, weights=resolved)
    np.testing.assert_array_equal(
        again.base.get_layer("conv1_conv").kernel.numpy(),
        clf.base.get_layer("conv1_conv").kernel.numpy(),
    )
    keras3 = tmp_path / "base.weights.h5"
    clf.base.save_weights(keras3)
    np.testing.assert_array_equal(
        small(num_classes=2, weights=str(keras3)).base.get_layer("conv1_conv").kernel.numpy(),
        clf.base.get_layer("conv1_conv").kernel.numpy(),
    )
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        model_module.resolve_weights(str(tmp_path / "nope.h5"))
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(WeightsUnavailableError, match="could not load"):
        small(num_classes=2, weights=str(tmp_path / "junk.h5"))
