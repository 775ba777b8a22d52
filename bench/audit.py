"""How long a data audit takes, and what it finds, on N generated images.

    python -m bench.audit --images 10000

Images are distinct random textures (smooth noise at two scales, 128 px JPEG) in
class folders under train/ and test/; 1% of the test images get a copy in training
(resized, recompressed or shifted by a pixel). Reports the audit's own timings, the
candidate pairs it compared (against N^2/2 for all pairs), the planted copies found
and the groups that hold no planted copy (false groups).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import RESULTS_DIR, format_table, load_average, machine, workdir, write_results

SIZE = 128


def _texture(rng: np.random.Generator) -> np.ndarray:
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    fine = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a = np.asarray(Image.fromarray(coarse).resize((SIZE, SIZE), Image.Resampling.BICUBIC), float)
    b = np.asarray(Image.fromarray(fine).resize((SIZE, SIZE), Image.Resampling.BICUBIC), float)
    return np.clip(0.7 * a + 0.3 * b, 0, 255).astype(np.uint8)


def make_data(root: Path, images: int, classes: int = 10, seed: int = 0) -> list[tuple[str, str]]:
    """Write the folder once; returns the planted (test, train copy) pairs."""
    rng = np.random.default_rng(seed)
    planted = []
    plants = (
        lambda t: np.asarray(Image.fromarray(t).resize((96, 96), Image.Resampling.LANCZOS)),
        lambda t: t,  # saved again at quality 60 below
        lambda t: np.roll(t, 1, axis=1),
    )
    for i in range(images):
        split = "test" if i % 5 == 0 else "train"
        label = f"c{(i // 5) % classes}"
        folder = root / split / label
        folder.mkdir(parents=True, exist_ok=True)
        pixels = _texture(rng)
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
        if split == "test" and i % 100 == 0:
            kind = (i // 100) % 3
            copy = root / "train" / label / f"copy{kind}_{i:06d}.jpg"
            copy.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(plants[kind](pixels)).save(copy, quality=60 if kind == 1 else 90)
            planted.append((f"test/{label}/{i:06d}.jpg", copy.relative_to(root).as_posix()))
    return planted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    from imgclf.audit import audit_folder

    with workdir(args.workdir) as root:
        data = root / f"audit-{args.images}"
        t = time.monotonic()
        planted = make_data(data, args.images)
        generate_s = time.monotonic() - t
        load = load_average()
        t = time.monotonic()
        report = audit_folder(data)
        wall = time.monotonic() - t
    groups = [{m["path"] for m in g["members"]} for g in report["near_duplicates"]]
    found = sum(any(set(p) <= g for g in groups) for p in planted)
    planted_paths = {p for pair in planted for p in pair}
    false = sum(1 for g in groups if not g & planted_paths)
    s = report["summary"]
    row = {
        "images": s["images"],
        "wall_s": round(wall, 1),
        "scan_hash_s": s["seconds"]["scan_and_hash"],
        "index_s": s["seconds"]["index"],
        "compared": s["pairs_compared"],
        "all_pairs": s["images"] * (s["images"] - 1) // 2,
        "planted": len(planted),
        "found": found,
        "false_groups": false,
        "load_avg": load,
    }
    print(
        format_table(
            f"audit of {s['images']} generated images (generated in {generate_s:.0f} s)",
            [(k, k) for k in row],
            [row],
        )
    )
    path = write_results("audit", {"machine": machine(), "result": row}, None, args.out)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
