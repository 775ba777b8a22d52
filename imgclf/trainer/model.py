"""ResNet-50 with a small head, the two recipes' BatchNorm rules and the freezing rules.

Which recipe fits depends on where the weights start (`recipe_for`):

- fine_tune (pretrained weights): the base is called with `training=False`, so its
  BatchNormalization layers use their moving statistics in both phases (Keras 3
  semantics) and stay non-trainable in phase 2: ImageNet's statistics are better
  than what a few small batches could estimate.
- from_scratch (weights=none): random initial weights come with moving statistics of
  0 and 1, which normalise nothing. The base follows the training flag (BatchNorm in
  training mode while fitting), and `estimate_bn_statistics` sets the moving
  statistics from the training images before training and again once the weights
  are final, so evaluation and export use statistics of the final weights.

The head is GlobalAveragePooling -> Dropout -> Dense: about 2048 x classes weights
instead of the hundreds of millions of a Flatten head.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from imgclf.config import TrainConfig
from imgclf.errors import WeightsUnavailableError

IMAGENET_NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_NOTOP_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + IMAGENET_NOTOP_FILE
)
IMAGENET_NOTOP_HASH = "4d473c1dd8becc155b73f8504c6f6626"
FEATURE_DIM = 2048
STAGES = ("conv1", "conv2", "conv3", "conv4", "conv5")
FINE_TUNE = "fine_tune"
FROM_SCRATCH = "from_scratch"
RECIPES = {
    FINE_TUNE: "pretrained base: head first on a frozen base, then the top stages at a low "
    "learning rate; BatchNorm frozen in inference mode",
    FROM_SCRATCH: "random initial weights: BatchNorm statistics estimated from the training "
    "images, the whole network trained with BatchNorm in training mode (warmup + cosine, early "
    "stopping with best-weight restore), statistics estimated again for the final weights",
}
_DOWNLOAD_TIMEOUT_S = 20.0


@dataclass
class Classifier:
    """The trainable model plus handles on its parts, which share the same layers."""

    model: keras.Model  # images [batch, H, W, 3] float32 -> probabilities [batch, classes]
    base: keras.Model  # ResNet-50 without top
    head: keras.Model  # pooled features [batch, 2048] -> probabilities
    features: keras.Model  # images -> pooled features [batch, 2048]
    recipe: str = FINE_TUNE
    # estimate_bn_statistics' compiled passes, by image shape (traced once per classifier)
    statistics_passes: dict = field(default_factory=dict, repr=False, compare=False)


def recipe_for(config: TrainConfig) -> str:
    """The config's recipe, 'auto' resolved from the starting point of the weights."""
    if config.recipe != "auto":
        return config.recipe
    return FROM_SCRATCH if config.weights == "none" else FINE_TUNE


def augmentation_for(config: TrainConfig) -> str:
    """The config's augmentation preset, 'auto' resolved from the recipe.

    A pretrained base only adapts its top, so augmentation widens what little it sees.
    A network learning every feature from a few hundred images underfits a strongly
    augmented task (digits 0.61 with standard vs 0.83 without, textures 0.78 vs 0.92,
    same 8 epochs), while small shifts without flips generalise best on the whole sets
    (digits 0.930 vs 0.885 without: docs/BENCHMARKS.md), and never turn one class into
    another (a mirrored digit), so from_scratch gets `shift`.
    """
    if config.augmentation != "auto":
        return config.augmentation
    return "shift" if recipe_for(config) == FROM_SCRATCH else "standard"


def keras_cache_dir(keras_home: str | Path | None = None) -> Path:
    """Where Keras keeps downloaded weights: $IMGCLF_KERAS_HOME/models, default ~/.keras/models."""
    home = Path(keras_home).expanduser() if keras_home else Path("~/.keras").expanduser()
    return home / "models"


def resolve_weights(weights: str, keras_home: str | Path | None = None) -> str | None:
    """Return a local weights file for `weights` ('imagenet', 'none' or a path), or None.

    Offline, 'imagenet' fails after one short try with a message that names the
    file to place in the Keras cache, instead of hanging or failing deep in Keras.
    """
    if weights == "none":
        return None
    if weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(
                f"weights file {path} does not exist; set weights to 'imagenet', 'none', or the "
                f"path of a ResNet-50 no-top .h5 file such as {IMAGENET_NOTOP_FILE}"
            )
        return str(path)
    cached = keras_cache_dir(keras_home) / IMAGENET_NOTOP_FILE
    if cached.is_file():
        return str(cached)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        return keras.utils.get_file(
            IMAGENET_NOTOP_FILE,
            IMAGENET_NOTOP_URL,
            cache_subdir="models",
            file_hash=IMAGENET_NOTOP_HASH,
            cache_dir=str(keras_cache_dir(keras_home).parent),
        )
    except Exception as exc:  # urllib, socket and hash errors all mean "not available"
        raise WeightsUnavailableError(
            f"ImageNet weights are not available offline ({type(exc).__name__}: {exc}). "
            f"Download {IMAGENET_NOTOP_URL} on a connected machine and place it at {cached} "
            f"(the Keras cache: $IMGCLF_KERAS_HOME/models, default ~/.keras/models), or set "
            f"weights to a local .h5 path, or "
            f"weights=none to train from scratch (much lower accuracy)."
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def build_classifier(
    num_classes: int,
    *,
    image_size: int,
    weights: str,
    dropout: float,
    l2: float,
    hidden_units: int = 0,
    keras_home: str | Path | None = None,
    recipe: str = FINE_TUNE,
) -> Classifier:
    """ResNet-50 (no top) + GlobalAveragePooling + head; softmax outputs in float32.

    With recipe=fine_tune the base always runs BatchNorm in inference mode; with
    from_scratch it follows the training flag of the call (fit: training mode).
    """
    if recipe not in (FINE_TUNE, FROM_SCRATCH):
        raise ValueError(f"recipe must be {FINE_TUNE!r} or {FROM_SCRATCH!r}, got {recipe!r}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 (ResNet-50's minimum), got {image_size}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    weights_file = resolve_weights(weights, keras_home)
    base = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(image_size, image_size, 3)
    )
    if weights_file is not None:
        try:
            base.load_weights(weights_file)
        except Exception as exc:
            raise WeightsUnavailableError(
                f"could not load ResNet-50 no-top weights from {weights_file}: {exc}"
            ) from None
    regularizer = keras.regularizers.L2(l2) if l2 > 0 else None
    head_layers: list[keras.layers.Layer] = [keras.Input((FEATURE_DIM,), name="features")]
    if hidden_units:
        head_layers += [
            keras.layers.Dropout(dropout, name="hidden_dropout"),
            keras.layers.Dense(
                hidden_units, activation="relu", kernel_regularizer=regularizer, name="hidden"
            ),
        ]
    head_layers += [
        keras.layers.Dropout(dropout, name="dropout"),
        keras.layers.Dense(
            num_classes,
            activation="softmax",
            kernel_regularizer=regularizer,
            dtype="float32",
            name="probabilities",
        ),
    ]
    head = keras.Sequential(head_layers, name="head")
    images = keras.Input((image_size, image_size, 3), name="images")
    base_out = base(images, training=False) if recipe == FINE_TUNE else base(images)
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(base_out)
    model = keras.Model(images, head(pooled), name="imgclf_resnet50")
    features = keras.Model(images, pooled, name="resnet50_features")
    return Classifier(model=model, base=base, head=head, features=features, recipe=recipe)


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    return [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def estimate_bn_statistics(classifier: Classifier, images: tf.data.Dataset) -> int:
    """Set every BatchNorm's moving mean and variance to their average over `images`.

    `images` yields (images float32 [b, H, W, 3], labels) batches, unaugmented. Each
    batch passes through the base in training mode with every momentum at 0, which
    leaves that batch's statistics in the moving variables; their average over the
    batches (each batch weighs the same) is what the layers keep. The weights are not
    changed. The pass is compiled once per base: run eagerly, ResNet-50's ~170 layers
    cost about 8x the compiled pass, which on small data was most of an epoch.
    Returns the number of images seen.
    """
    layers = batchnorm_layers(classifier.base)
    saved = [layer.momentum for layer in layers]
    totals: list[np.ndarray] | None = None
    batches = seen = 0
    try:
        for layer in layers:
            layer.momentum = 0.0
        for batch, _labels in images:
            statistics = _statistics_pass(classifier, batch.shape[1:])(batch)
            values = [np.asarray(v, np.float64) for v in statistics]
            totals = (
                values if totals is None else [t + v for t, v in zip(totals, values, strict=True)]
            )
            batches += 1
            seen += int(np.shape(batch)[0])
        if totals is not None:
            variables = [v for layer in layers for v in (layer.moving_mean, layer.moving_variance)]
            for variable, total in zip(variables, totals, strict=True):
                variable.assign((total / batches).astype(variable.dtype))
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum
    return seen


def _statistics_pass(
    classifier: Classifier, image_shape: tf.TensorShape
) -> tf.types.experimental.PolymorphicFunction:
    """The base's training-mode forward pass returning every BatchNorm's moving mean and
    variance after it. Traced on first use, while `estimate_bn_statistics` holds every
    momentum at 0 (a traced call keeps the momentum it was traced with)."""
    passes = classifier.statistics_passes
    key = tuple(image_shape)
    if key not in passes:
        base = classifier.base
        layers = batchnorm_layers(base)

        @tf.function(input_signature=[tf.TensorSpec([None, *key], tf.float32)])
        def statistics(batch: tf.Tensor) -> list[tf.Tensor]:
            base(batch, training=True)
            return [
                tf.identity(v)
                for layer in layers
                for v in (layer.moving_mean, layer.moving_variance)
            ]

        passes[key] = statistics
    return passes[key]


def unfreeze_all(classifier: Classifier) -> int:
    """from_scratch: every layer learns, BatchNorm's scale and offset included."""
    classifier.base.trainable = True
    for layer in classifier.base.layers:
        layer.trainable = True
    classifier.head.trainable = True
    return len(classifier.base.trainable_weights)


def stage_of(layer_name: str) -> str | None:
    for stage in STAGES:
        if layer_name.startswith(stage + "_") or layer_name == stage:
            return stage
    return None


def freeze_base(classifier: Classifier) -> None:
    """Phase 1: only the head learns."""
    classifier.base.trainable = False
    classifier.head.trainable = True


def unfreeze_top(classifier: Classifier, fine_tune_from: str) -> int:
    """Phase 2: stages from `fine_tune_from` upwards learn; every BatchNormalization stays frozen.

    Returns the number of trainable base weights. Callers must recompile afterwards
    (Keras 3 reads `trainable` at compile time).
    """
    if fine_tune_from not in STAGES[1:]:
        raise ValueError(f"fine_tune_from must be one of {STAGES[1:]}, got {fine_tune_from!r}")
    first = STAGES.index(fine_tune_from)
    classifier.base.trainable = True
    for layer in classifier.base.layers:
        stage = stage_of(layer.name)
        unfrozen = stage is not None and STAGES.index(stage) >= first
        layer.trainable = unfrozen and not isinstance(layer, keras.layers.BatchNormalization)
    classifier.head.trainable = True
    return len(classifier.base.trainable_weights)
