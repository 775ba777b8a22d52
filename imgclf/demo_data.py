"""A small generated image set (coloured shapes) for the demo and the tests.

Real photos cannot be downloaded here, so the demo draws its own: each class is a
shape with a typical colour, at a random place and size over a noisy background,
saved as JPEG or PNG. Easy enough to learn from random weights at 32-64 px.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "ring", "stripes")
_COLOURS = {
    "circle": (220, 40, 40),
    "square": (40, 200, 60),
    "triangle": (50, 70, 230),
    "cross": (230, 210, 30),
    "ring": (200, 40, 210),
    "stripes": (30, 210, 210),
}


def draw_shape(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [size, size, 3]: one shape over a noisy background."""
    background = rng.integers(60, 140, size=3)
    image = np.clip(background + rng.normal(0, 12, size=(size, size, 3)), 0, 255).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cx, cy = rng.uniform(0.35, 0.65, size=2) * size
    r = rng.uniform(0.18, 0.32) * size
    if shape == "circle":
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
    elif shape == "square":
        mask = (np.abs(xx - cx) <= r * 0.85) & (np.abs(yy - cy) <= r * 0.85)
    elif shape == "triangle":
        mask = (yy >= cy - r) & (yy <= cy + r) & (np.abs(xx - cx) <= (yy - (cy - r)) * 0.6)
    elif shape == "cross":
        mask = ((np.abs(xx - cx) <= r * 0.3) & (np.abs(yy - cy) <= r)) | (
            (np.abs(yy - cy) <= r * 0.3) & (np.abs(xx - cx) <= r)
        )
    elif shape == "ring":
        d = (xx - cx) ** 2 + (yy - cy) ** 2
        mask = (d <= r**2) & (d >= (0.6 * r) ** 2)
    elif shape == "stripes":
        mask = ((xx // max(2, int(r / 3))) % 2 == 0) & (np.abs(yy - cy) <= r)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    colour = np.clip(np.array(_COLOURS[shape]) + rng.normal(0, 20, size=3), 0, 255)
    image[mask] = colour
    return image.astype(np.uint8)


def make_shapes_dataset(
    root: str | Path,
    *,
    classes: int = 3,
    per_class: int = 30,
    size: int = 64,
    seed: int = 0,
    counts: dict[str, int] | None = None,
) -> Path:
    """Write root/<shape>/<i>.jpg|png and return root. `counts` overrides per-class sizes."""
    import tensorflow as tf  # encoding only; imported here so the module stays light

    if not 2 <= classes <= len(SHAPES):
        raise ValueError(f"classes must be between 2 and {len(SHAPES)}, got {classes}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for shape in SHAPES[:classes]:
        folder = root / shape
        folder.mkdir(parents=True, exist_ok=True)
        for i in range((counts or {}).get(shape, per_class)):
            pixels = draw_shape(shape, size, rng)
            if i % 2:
                data = tf.io.encode_png(pixels).numpy()
                (folder / f"{i:04d}.png").write_bytes(data)
            else:
                data = tf.io.encode_jpeg(pixels, quality=92).numpy()
                (folder / f"{i:04d}.jpg").write_bytes(data)
    return root
