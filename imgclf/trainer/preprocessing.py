"""The one preprocessing function, and augmentation for the training branch only.

`make_preprocess(size)` returns a `tf.function` from encoded image bytes to the
float tensor ResNet-50 expects. The trainer's tf.data pipelines call it, and the
exporter saves the very same function inside the SavedModel, so there is no second
implementation to drift: no `/255`, no BGR/RGB mix-up, no resize difference.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import tensorflow as tf

from imgclf import contract
from imgclf.trainer.data import NOT_DECODABLE, read_image_file

_MEANS_BGR = tf.constant(contract.IMAGENET_BGR_MEANS, dtype=tf.float32)

PreprocessFn = Callable[[tf.Tensor], tf.Tensor]


def make_preprocess(image_size: int) -> tf.types.experimental.PolymorphicFunction:
    """bytes (string scalar, JPEG/PNG/GIF/BMP) -> float32 [image_size, image_size, 3].

    Steps: decode to 3 channels (grayscale becomes RGB, alpha is dropped, a GIF
    gives its first frame), bilinear resize with antialiasing, then Keras'
    ResNet-50 `preprocess_input` once (caffe mode: RGB->BGR, minus ImageNet means).
    """
    if not isinstance(image_size, int) or image_size < 32:
        raise ValueError(f"image_size must be an int >= 32, got {image_size!r}")

    @tf.function(input_signature=[tf.TensorSpec([], tf.string, name=contract.INPUT_IMAGE_BYTES)])
    def preprocess(image_bytes: tf.Tensor) -> tf.Tensor:
        image = tf.io.decode_image(image_bytes, channels=3, dtype=tf.uint8, expand_animations=False)
        image = tf.ensure_shape(image, [None, None, 3])
        image = tf.image.resize(
            tf.cast(image, tf.float32), [image_size, image_size], method="bilinear", antialias=True
        )
        image = keras.applications.resnet50.preprocess_input(image)
        return tf.ensure_shape(image, [image_size, image_size, 3])

    return preprocess


def image_problem(preprocess: PreprocessFn, path: Path) -> str | None:
    """None when `preprocess` accepts the file, else a short reason. Used to skip bad files."""
    data = read_image_file(path)
    if isinstance(data, str):
        return data
    try:
        preprocess(tf.constant(data))
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        return NOT_DECODABLE
    return None


_PRESETS: dict[str, dict[str, float]] = {
    "none": {},
    # No flip and no rotation: for images whose orientation carries the class (digits,
    # letters, arrows, documents). Small shifts and scale changes only.
    "shift": {
        "flip": 0.0,
        "rotation": 0.0,
        "zoom": 0.05,
        "translation": 0.0625,
        "contrast": 0.0,
        "brightness": 0.0,
    },
    "light": {
        "flip": 1.0,
        "rotation": 0.03,
        "zoom": 0.05,
        "translation": 0.0,
        "contrast": 0.05,
        "brightness": 0.05,
    },
    "standard": {
        "flip": 1.0,
        "rotation": 0.08,
        "zoom": 0.1,
        "translation": 0.1,
        "contrast": 0.15,
        "brightness": 0.1,
    },
    "strong": {
        "flip": 1.0,
        "rotation": 0.2,
        "zoom": 0.2,
        "translation": 0.15,
        "contrast": 0.3,
        "brightness": 0.2,
    },
}


def make_augmenter(preset: str, seed: int) -> Callable[[tf.Tensor], tf.Tensor] | None:
    """A batch augmenter for preprocessed images (float32 [batch, H, W, 3], caffe space).

    Only the training pipeline calls it. Geometric changes use Keras' layers;
    brightness and contrast are done here because Keras' versions clip to a
    0-255 range, which is wrong after mean subtraction. Returns None for 'none'.
    """
    if preset not in _PRESETS:
        raise ValueError(f"augmentation must be one of {sorted(_PRESETS)}, got {preset!r}")
    params = _PRESETS[preset]
    if not params:
        return None
    layers: list[keras.layers.Layer] = []
    if params["flip"]:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if params["rotation"]:
        layers.append(keras.layers.RandomRotation(params["rotation"], seed=seed + 1))
    if params["zoom"]:
        layers.append(keras.layers.RandomZoom(params["zoom"], seed=seed + 2))
    if params["translation"]:
        t = params["translation"]
        layers.append(keras.layers.RandomTranslation(t, t, seed=seed + 3))
    geometric = keras.Sequential(layers, name=f"augment_{preset}")
    contrast, brightness = params["contrast"], params["brightness"]
    low, high = -_MEANS_BGR, 255.0 - _MEANS_BGR
    generator = tf.random.Generator.from_seed(seed + 4)

    def augment(images: tf.Tensor) -> tf.Tensor:
        images = geometric(images, training=True)
        batch = tf.shape(images)[0]
        factor = generator.uniform([batch, 1, 1, 1], 1.0 - contrast, 1.0 + contrast)
        mean = tf.reduce_mean(images, axis=[1, 2], keepdims=True)
        images = (images - mean) * factor + mean
        delta = generator.uniform([batch, 1, 1, 1], -brightness, brightness) * 255.0
        return tf.clip_by_value(images + delta, low, high)

    return augment
