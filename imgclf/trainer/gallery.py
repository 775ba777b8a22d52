"""The report's gallery of the most confident mistakes on the test split.

A person deciding whether to trust a model learns more from its worst confident
errors than from an accuracy figure: each entry shows the image with the Grad-CAM
heatmap of the (wrong) predicted class over it, the true label and the two top labels.
The heatmaps come from gradcam.compiled_gradcam: the code the `explain` signature runs,
compiled as it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from imgclf.explanation import model_view, overlay, png
from imgclf.trainer.gradcam import compiled_gradcam

MISTAKES_DIR = "mistakes"
GALLERY_SIZE = 12


def confident_mistakes(
    probabilities: np.ndarray, truth: Sequence[int], count: int = GALLERY_SIZE
) -> list[int]:
    """Indices of wrongly predicted rows, most confident first, at most `count`."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != np.asarray(truth))
    order = np.argsort(-probabilities[wrong].max(axis=1), kind="stable")
    return [int(i) for i in wrong[order][:count]]


def write_gallery(
    folder: Path,
    model: keras.Model,
    image_size: int,
    load_images: Callable[[list[int]], np.ndarray],
    probabilities: np.ndarray,
    truth: Sequence[int],
    sources: Sequence[str],
    classes: Sequence[str],
    count: int = GALLERY_SIZE,
) -> list[dict]:
    """Write folder/mistakes/NN.png (heatmap over the image) for the most confident
    mistakes and return their entries for the model card, most confident first:
    {"file", "source", "true", "top": [[label, score], [label, score]]}.

    `load_images(indices)` returns those test images preprocessed, float32
    [len(indices), S, S, 3]; only the chosen few are loaded, never the whole split.
    `probabilities` [n, classes], `truth` and `sources` share the split's order.
    """
    chosen = confident_mistakes(probabilities, truth, count)
    target = folder / MISTAKES_DIR
    target.mkdir(parents=True, exist_ok=True)
    for old in target.glob("*.png"):
        old.unlink()
    if not chosen:
        return []
    images = load_images(chosen)
    heatmaps, _ = compiled_gradcam(model, image_size, tf.constant(images))
    entries = []
    for rank, (index, image, heatmap) in enumerate(zip(chosen, images, heatmaps, strict=True)):
        name = f"{MISTAKES_DIR}/{rank:02d}.png"
        (folder / name).write_bytes(png(overlay(model_view(image), heatmap)))
        top = np.argsort(-probabilities[index], kind="stable")[:2]
        entries.append(
            {
                "file": name,
                "source": sources[index],
                "true": classes[truth[index]],
                "top": [[classes[i], round(float(probabilities[index][i]), 4)] for i in top],
            }
        )
    return entries
