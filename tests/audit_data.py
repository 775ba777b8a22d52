"""Real offline images with planted data problems, for the audit tests and the bench.

Photos from scikit-image cut into textured 96x96 tiles (one class per photo), laid out
as train/val/test folders; then copies of test images are planted into training after
resizing, JPEG recompression or a one-pixel shift, and training images are copied
under a wrong label.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

TILE = 96


def photo_tiles() -> dict[str, list[np.ndarray]]:
    from skimage import data

    photos = {
        "astronaut": data.astronaut(),
        "coffee": data.coffee(),
        "chelsea": data.chelsea(),
        "rocket": data.rocket(),
    }
    out = {}
    for name, photo in photos.items():
        height, width = photo.shape[:2]
        out[name] = [
            photo[y : y + TILE, x : x + TILE]
            for y in range(0, height - TILE + 1, TILE)
            for x in range(0, width - TILE + 1, TILE)
            if photo[y : y + TILE, x : x + TILE].std() >= 12
        ]
    return out


def _save(pixels: np.ndarray, path: Path, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)


def _jpeg_again(pixels: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


PLANTS = {
    "resized": lambda t: np.asarray(Image.fromarray(t).resize((64, 64), Image.Resampling.LANCZOS)),
    "jpeg": lambda t: _jpeg_again(t, 60),
    "shifted": lambda t: np.roll(t, 1, axis=1),
}


def planted_folder(root: Path, per_kind: int = 4, wrong_labels: int = 3) -> dict:
    """Write the folder; returns what was planted ({"leaks": [(test, train)], "cross": [...]})."""
    rng = np.random.default_rng(0)
    planted: dict = {"leaks": [], "cross": []}
    test_images: list[tuple[str, np.ndarray]] = []
    train_images: list[tuple[str, str, np.ndarray]] = []
    for label, tiles in photo_tiles().items():
        order = rng.permutation(len(tiles))
        for rank, i in enumerate(order):
            split = "test" if rank % 6 == 0 else "val" if rank % 6 == 1 else "train"
            rel = f"{split}/{label}/{label}_{i:03d}.png"
            _save(tiles[i], root / rel)
            if split == "test":
                test_images.append((rel, tiles[i]))
            elif split == "train":
                train_images.append((rel, label, tiles[i]))
    picks = rng.permutation(len(test_images))
    for n, (kind, make) in enumerate(PLANTS.items()):
        for k in picks[n * per_kind : (n + 1) * per_kind]:
            rel, pixels = test_images[k]
            label = rel.split("/")[1]
            copy = f"train/{label}/copy_{kind}_{Path(rel).stem}.jpg"
            _save(make(pixels), root / copy, quality=90)
            planted["leaks"].append((rel, copy))
    labels = sorted({label for _, label, _ in train_images})
    for k in rng.permutation(len(train_images))[:wrong_labels]:
        rel, label, pixels = train_images[k]
        other = labels[(labels.index(label) + 1) % len(labels)]
        copy = f"train/{other}/relabelled_{Path(rel).stem}.png"
        _save(pixels, root / copy)
        planted["cross"].append((rel, copy))
    return planted


def digits_folder(root: Path, digits=(0, 1, 4), per_split=(40, 10, 10), wrong=2, leaks=3) -> dict:
    """scikit-learn's handwritten digits at 32 px in train/val/test folders, with `wrong`
    training images per class moved into the next class and `leaks` test images copied
    (shifted by a pixel) into training. Returns {"wrong": [path], "leaks": [(test, copy)]}."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    planted: dict = {"wrong": [], "leaks": []}
    names = [str(d) for d in digits]
    for position, digit in enumerate(digits):
        images = bunch.images[bunch.target == digit][: sum(per_split)]
        start = 0
        for split, count in zip(("train", "val", "test"), per_split, strict=True):
            for i, image in enumerate(images[start : start + count]):
                pixels = np.asarray(
                    Image.fromarray((image * 15).astype(np.uint8)).resize(
                        (32, 32), Image.Resampling.BILINEAR
                    )
                )
                label = names[position]
                if split == "train" and i < wrong:
                    label = names[(position + 1) % len(names)]
                rel = f"{split}/{label}/d{digit}_{i:03d}.png"
                _save(pixels, root / rel)
                if label != names[position]:
                    planted["wrong"].append(rel)
                if split == "test" and i < leaks // len(digits) + (position < leaks % len(digits)):
                    copy = f"train/{label}/copy_d{digit}_{i:03d}.png"
                    _save(np.roll(pixels, 1, axis=1), root / copy)
                    planted["leaks"].append((rel, copy))
            start += count
    return planted
