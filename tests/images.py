"""Encoded test images in every format the preprocess must accept (PIL, test-only)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def rgb_array(height: int = 32, width: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def png(pixels: np.ndarray) -> bytes:
    return encode(Image.fromarray(pixels), "PNG")


def jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    return encode(Image.fromarray(pixels), "JPEG", quality=quality)


def animated_gif(frames: list[np.ndarray]) -> bytes:
    images = [Image.fromarray(f).convert("P", palette=Image.Palette.ADAPTIVE) for f in frames]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=100)
