"""Grad-CAM of the predicted class on ResNet-50's last convolutional stage.

One implementation, used by three callers so they cannot disagree: the exported
`explain` signature (traced into the SavedModel, GradientTape included), the golden
heatmaps written next to the golden predictions at export, and the report's gallery
of confident mistakes.

The last convolutional stage is the layer named `conv5_block3_out` inside the Keras
ResNet-50 (the base's own output, stride 32): 7x7 at 224 px, 2x2 at 64 px and 1x1 at
32 px, where the map carries no spatial information (a constant heatmap). The class
score differentiated is the head's logit (before softmax), as in Grad-CAM's paper:
the softmax output saturates at 1.0 for confident answers and its gradient vanishes.
Temperature scaling divides every logit by the same positive number, which a map
normalised to [0, 1] does not see.

Because the stage is the base's output, the backward pass runs through the pooling
and the head only: an explanation costs little more than a prediction.
"""

from __future__ import annotations

import keras
import tensorflow as tf

LAST_CONV_LAYER = "conv5_block3_out"
POOL_LAYER = "avg_pool"
HEAD_LAYER = "head"


def _base_of(model: keras.Model) -> keras.Model:
    """The nested ResNet-50 that holds LAST_CONV_LAYER (model.build_classifier's base)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and any(
            inner.name == LAST_CONV_LAYER for inner in layer.layers
        ):
            return layer
    raise ValueError(f"model {model.name!r} has no nested base with a layer {LAST_CONV_LAYER!r}")


class GradCam:
    """Grad-CAM for a classifier built by `imgclf.trainer.model.build_classifier`.

    `features` maps images to the last stage's activations; `head` and `pool` are the
    model's own layers (shared weights), so probabilities equal the model's.
    """

    def __init__(self, model: keras.Model, image_size: int) -> None:
        base = _base_of(model)
        self.features = keras.Model(
            base.inputs, base.get_layer(LAST_CONV_LAYER).output, name="gradcam_features"
        )
        self.pool = model.get_layer(POOL_LAYER)
        self.head = model.get_layer(HEAD_LAYER)
        self.head_model = model
        self.image_size = image_size
        # The whole model with the last stage's activations as a second output (the pooling
        # layer's input is the base's output): the export traces the network once and
        # serves both predictions and explanations from it.
        self.network = keras.Model(
            model.inputs, [self.pool.input, model.output], name="gradcam_network"
        )
        self.grid = int(self.features.output.shape[1])
        self.channels = int(self.features.output.shape[-1])

    def logits_and_probabilities(self, activations: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Head logits and probabilities [batch, classes] float32 from activations."""
        hidden = self.pool(activations)
        for layer in self.head.layers[:-1]:
            hidden = layer(hidden, training=False)
        dense = self.head.layers[-1]
        logits = tf.cast(tf.matmul(hidden, tf.cast(dense.kernel, hidden.dtype)), tf.float32)
        if dense.use_bias:
            logits += tf.cast(dense.bias, tf.float32)
        probabilities = tf.cast(dense(hidden, training=False), tf.float32)
        return logits, probabilities

    def __call__(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """images float32 [batch, S, S, 3] (preprocessed) -> (heatmap float32 [batch, S, S]
        in [0, 1], probabilities float32 [batch, classes]).

        The heatmap of each image is for its own top-1 class; an image whose map is
        nowhere positive gets zeros.
        """
        activations = tf.cond(
            tf.shape(images)[0] > 0,
            lambda: tf.cast(self.features(images, training=False), tf.float32),
            lambda: tf.zeros([0, self.grid, self.grid, self.channels], tf.float32),
        )
        return self.from_activations(activations)

    def from_activations(self, activations: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Grad-CAM from the last stage's activations float32 [batch, g, g, k] (what
        `features` gives): (heatmap [batch, S, S] in [0, 1], probabilities [batch, classes]).
        The export passes the activations of its one traced network (`network`)."""
        with tf.GradientTape() as tape:
            tape.watch(activations)
            logits, probabilities = self.logits_and_probabilities(activations)
            predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
            chosen = tf.gather(logits, predicted, batch_dims=1)
        gradients = tape.gradient(chosen, activations)
        return self.heatmap(activations, gradients), probabilities

    def heatmap(self, activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
        """Grad-CAM from a stage's activations and the class score's gradients [b, h, w, k]:
        ReLU of the gradient-weighted channel sum, upsampled to [b, S, S], scaled to [0, 1]."""
        weights = tf.reduce_mean(gradients, axis=[1, 2], keepdims=True)  # alpha_k per image
        cam = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1, keepdims=True))
        cam = tf.image.resize(cam, [self.image_size, self.image_size], method="bilinear")
        cam = tf.squeeze(cam, axis=-1)
        peak = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
        return tf.clip_by_value(tf.math.divide_no_nan(cam, peak), 0.0, 1.0)

    def at_stage(self, images: tf.Tensor, layer: str) -> tuple[tf.Tensor, tf.Tensor]:
        """Eager Grad-CAM on an earlier stage of the base (e.g. conv3_block4_out, stride 8),
        for analysis: the served signature always uses LAST_CONV_LAYER. Non-empty batches."""
        base = _base_of(self.head_model)
        staged = keras.Model(base.inputs, [base.get_layer(layer).output, base.output])
        with tf.GradientTape() as tape:
            activations, last = staged(images, training=False)
            logits, probabilities = self.logits_and_probabilities(tf.cast(last, tf.float32))
            predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
            chosen = tf.gather(logits, predicted, batch_dims=1)
        gradients = tape.gradient(chosen, activations)
        activations = tf.cast(activations, tf.float32)
        return self.heatmap(activations, tf.cast(gradients, tf.float32)), probabilities


def compiled_gradcam(model: keras.Model, image_size: int, images: tf.Tensor) -> tuple:
    """(heatmaps, probabilities) as NumPy, compiled as the exported `explain` runs: eager
    mode fuses the convolutions differently, and on a network trained from random weights
    the last stage's activations then differ by up to 1% (64 px, measured), enough to move
    a map ten times the heatmap tolerance. The golden files and the report's gallery use
    it, so both show the maps a server answers."""
    heatmaps, probabilities = tf.function(GradCam(model, image_size).__call__)(images)
    return heatmaps.numpy(), probabilities.numpy()
