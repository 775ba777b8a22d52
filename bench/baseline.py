"""The classic pipeline from tutorials, reproduced as the training baseline.

`ImageDataGenerator.flow_from_directory` with augmentation feeding a ResNet-50 with
a frozen base and a Flatten -> Dense(1024) -> Dense(512) -> Dense(256) head, trained
with `fit`. It is written the way those tutorials write it (Keras' legacy
generator, reached as `tf.keras.preprocessing.image`), with two honest fixes so the
comparison is about speed only: ResNet's own `preprocess_input` instead of `/255`,
and no augmentation on the validation generator.

The Flatten head is the classic multi-gigabyte mistake: at 224 px it flattens
7 x 7 x 2048 = 100,352 features into 1024 units, about 103 M weights.
"""

from __future__ import annotations

from pathlib import Path

FEATURE_CHANNELS = 2048
HEAD_UNITS = (1024, 512, 256)
VALIDATION_SPLIT = 0.3


def generators(data: Path, image_size: int, batch_size: int, seed: int = 0):
    """(train, validation) DirectoryIterators over class folders under `data`."""
    import tensorflow as tf

    image = tf.keras.preprocessing.image
    preprocess = tf.keras.applications.resnet50.preprocess_input
    train_gen = image.ImageDataGenerator(
        rotation_range=20,
        width_shift_range=0.1,
        height_shift_range=0.1,
        zoom_range=0.1,
        horizontal_flip=True,
        preprocessing_function=preprocess,
        validation_split=VALIDATION_SPLIT,
    )
    val_gen = image.ImageDataGenerator(
        preprocessing_function=preprocess, validation_split=VALIDATION_SPLIT
    )
    options = {
        "target_size": (image_size, image_size),
        "batch_size": batch_size,
        "class_mode": "categorical",
        "seed": seed,
    }
    train = train_gen.flow_from_directory(str(data), subset="training", shuffle=True, **options)
    val = val_gen.flow_from_directory(str(data), subset="validation", shuffle=False, **options)
    return train, val


def build_model(num_classes: int, image_size: int):
    """ResNet-50 (frozen, random init offline) + Flatten + Dense(1024, 512, 256) + softmax."""
    import keras

    base = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(image_size, image_size, 3)
    )
    for layer in base.layers:
        layer.trainable = False
    x = keras.layers.Flatten()(base.output)
    for units in HEAD_UNITS:
        x = keras.layers.Dense(units, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(base.input, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def head_parameters(image_size: int, num_classes: int, flatten: bool) -> int:
    """Weights in the head: Flatten + Dense(1024, 512, 256) (baseline), or imgclf's
    GlobalAveragePooling + Dense(classes). ResNet-50 downsamples by 32 (rounding up)."""
    side = -(-image_size // 32)
    inputs = side * side * FEATURE_CHANNELS if flatten else FEATURE_CHANNELS
    if not flatten:
        return inputs * num_classes + num_classes
    total, width = 0, inputs
    for units in (*HEAD_UNITS, num_classes):
        total += width * units + units
        width = units
    return total
