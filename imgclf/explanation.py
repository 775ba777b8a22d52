"""The answer type of an explanation and the PNGs it carries (NumPy and Pillow only).

The server core builds `Explanations` once and both protocol codecs encode the same
PNG bytes; the trainer's report draws its gallery with the same `overlay`. No
matplotlib here: the colour map is a small table, so the serving path stays light.

    heatmap PNG: 8-bit grayscale, image_size x image_size, value = round(heatmap * 255)
    overlay PNG: RGB, the image as the model saw it (after its own resize) with the
                 heatmap colour-mapped on top, weighted by the heatmap itself
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from imgclf import contract
from imgclf.prediction import Prediction

OVERLAY_ALPHA = 0.6  # how much colour a heatmap value of 1.0 puts over the image

# Anchor colours of a "jet"-like map (blue -> cyan -> green -> yellow -> red) at 0..1.
_ANCHORS = np.array(
    [
        [0.0, 0, 0, 128],
        [0.125, 0, 0, 255],
        [0.375, 0, 255, 255],
        [0.5, 128, 255, 128],
        [0.625, 255, 255, 0],
        [0.875, 255, 0, 0],
        [1.0, 128, 0, 0],
    ]
)
_LUT = np.stack(
    [np.interp(np.linspace(0, 1, 256), _ANCHORS[:, 0], _ANCHORS[:, c]) for c in (1, 2, 3)],
    axis=1,
).astype(np.uint8)  # [256, 3]


def quantise(heatmap: np.ndarray) -> np.ndarray:
    """float [H, W] in [0, 1] -> uint8 [H, W] (round(h * 255)), as the heatmap PNG holds."""
    return np.round(np.clip(heatmap, 0.0, 1.0) * 255.0).astype(np.uint8)


def model_view(image: np.ndarray) -> np.ndarray:
    """The preprocessed image (float32 [H, W, 3], BGR minus ImageNet means, as the model's
    `preprocess` signature returns it) back to uint8 RGB: what the model looked at."""
    bgr = image + np.asarray(contract.IMAGENET_BGR_MEANS, np.float32)
    return np.clip(np.round(bgr[..., ::-1]), 0, 255).astype(np.uint8)


def colorize(heatmap: np.ndarray) -> np.ndarray:
    """float [H, W] in [0, 1] -> uint8 RGB [H, W, 3] through the colour table."""
    return _LUT[quantise(heatmap)]


def overlay(image_rgb: np.ndarray, heatmap: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] with the colour-mapped heatmap over it (same H, W)."""
    weight = (OVERLAY_ALPHA * np.clip(heatmap, 0.0, 1.0))[..., None]
    mixed = (1.0 - weight) * image_rgb.astype(np.float32) + weight * colorize(heatmap)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def png(pixels: np.ndarray) -> bytes:
    """uint8 [H, W] (grayscale) or [H, W, 3] (RGB) -> PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def heatmap_png(heatmap: np.ndarray) -> bytes:
    return png(quantise(heatmap))


def overlay_png(preprocessed: np.ndarray, heatmap: np.ndarray) -> bytes:
    return png(overlay(model_view(preprocessed), heatmap))


@dataclass(frozen=True)
class Explanations:
    """One answer of :explain: the prediction (which carries min_score and so the
    "unknown" rule, imgclf.prediction) plus, per image, the heatmap and the two PNGs."""

    prediction: Prediction
    heatmaps: np.ndarray  # float32 [n, H, W] in [0, 1], the `explain` signature's output
    heatmap_pngs: list[bytes]
    overlay_pngs: list[bytes]
