"""Small real image sets built offline from installed packages, with their baselines.

Each builder writes train/, val/ and test/ folders of PNGs (one subfolder per class)
that `imgclf train` reads as given splits, and returns the root. The same sets feed
the quality tests (tests/test_quality.py) and `python -m bench.training --quality`.

- digits: scikit-learn's handwritten digits (1,797 scans of 8x8 px, 10 classes), by
  scikit-learn's own order split (no writer is on both sides of a split).
- textures: scikit-image's brick, grass and gravel photos (512x512 grey), cut into
  64 px crops; train, validation and test crops come from separate bands of each
  photo so no crop overlaps one from another split.
- patches: generated colour-coded patches (3 classes; a hue per class under noise,
  random brightness and a random stripe texture).

`logistic_baseline` fits scikit-learn's logistic regression on simple features of
the same splits: the bar a ResNet-50 from random weights must clear.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


def _write(root: Path, split: str, label: str, index: int, image: np.ndarray) -> None:
    from PIL import Image

    folder = root / split / label
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(folder / f"{index:05d}.png")


def digits(root: Path, per_class: int | None = None, seed: int = 0) -> Path:
    """scikit-learn digits as 8x8 grey PNGs; 70/15/15 split; `per_class` caps train."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images = np.clip(data.images * (255.0 / 16.0), 0, 255).astype(np.uint8)
    n = len(images)
    bounds = {
        "train": (0, int(n * 0.7)),
        "val": (int(n * 0.7), int(n * 0.85)),
        "test": (int(n * 0.85), n),
    }
    for split, (start, stop) in bounds.items():
        taken: dict[int, int] = {}
        for i in range(start, stop):
            label = int(data.target[i])
            if split == "train" and per_class and taken.get(label, 0) >= per_class:
                continue
            taken[label] = taken.get(label, 0) + 1
            _write(root, split, str(label), i, images[i])
    return root


def textures(root: Path, size: int = 64, per_class: int = 60, seed: int = 0) -> Path:
    """Crops of scikit-image's brick / grass / gravel photos, split by photo band.

    Rows 0-299 give training crops, 300-405 validation, 406-511 test (`per_class`
    training crops, a third as many for each held-out split).
    """
    from skimage import data as skdata

    rng = np.random.default_rng(seed)
    bands = {"train": (0, 300), "val": (300, 406), "test": (406, 512)}
    counts = {"train": per_class, "val": max(10, per_class // 3), "test": max(10, per_class // 3)}
    for label in ("brick", "grass", "gravel"):
        photo = getattr(skdata, label)()
        for split, (top, bottom) in bands.items():
            for i in range(counts[split]):
                y = int(rng.integers(top, bottom - size + 1))
                x = int(rng.integers(0, photo.shape[1] - size + 1))
                crop = photo[y : y + size, x : x + size]
                if rng.random() < 0.5:
                    crop = crop[:, ::-1]
                _write(root, split, label, i, np.ascontiguousarray(crop))
    return root


PATCH_HUES = {"red": (200, 60, 50), "green": (60, 180, 70), "blue": (60, 80, 200)}


def patches(root: Path, size: int = 64, per_class: int = 40, seed: int = 0) -> Path:
    """Colour-coded patches: the class is the hue, under noise, brightness and stripes."""
    rng = np.random.default_rng(seed)
    counts = {"train": per_class, "val": max(10, per_class // 3), "test": max(10, per_class // 3)}
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for split in SPLITS:
        for label, rgb in PATCH_HUES.items():
            for i in range(counts[split]):
                angle, period = rng.uniform(0, np.pi), rng.uniform(4, 16)
                stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
                colour = np.array(rgb, np.float32) * rng.uniform(0.6, 1.2)
                image = colour + 30 * stripes[..., None] + rng.normal(0, 25, (size, size, 3))
                _write(root, split, label, i, np.clip(image, 0, 255).astype(np.uint8))
    return root


BUILDERS: dict[str, Callable[..., Path]] = {
    "digits": digits,
    "textures": textures,
    "patches": patches,
}


def _features(path: Path) -> np.ndarray:
    """Per-channel mean, std and a 4x4 grid of grey means: colour statistics and layout."""
    from PIL import Image

    image = np.asarray(Image.open(path).convert("RGB").resize((16, 16)), np.float32) / 255.0
    grey = image.mean(axis=2)
    grid = grey.reshape(4, 4, 4, 4).mean(axis=(1, 3)).ravel()
    return np.concatenate([image.mean(axis=(0, 1)), image.std(axis=(0, 1)), grid, grey.ravel()])


def logistic_baseline(root: Path) -> float:
    """Test accuracy of a logistic regression on `_features` (train split only)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def split(name: str) -> tuple[np.ndarray, np.ndarray]:
        files = sorted((root / name).glob("*/*.png"))
        return np.stack([_features(f) for f in files]), np.array([f.parent.name for f in files])

    x, y = split("train")
    tx, ty = split("test")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(x, y)
    return float(model.score(tx, ty))
