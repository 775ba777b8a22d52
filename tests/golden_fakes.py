"""Golden files written by hand and a version that replays chosen outputs, to test the
replay's rules alone (no model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from imgclf import contract


class FakeVersion:
    """Answers every golden input with `outputs` (and `heatmaps` through `explain`)."""

    def __init__(self, path: Path, outputs: np.ndarray, heatmaps: np.ndarray | None = None):
        self.path = path
        self.outputs = outputs
        self.heatmaps = heatmaps
        self.has_explain = heatmaps is not None

    def preprocess(self, image: bytes) -> np.ndarray:
        return np.zeros((2, 2, 3), np.float32)

    def predict_images(self, images: np.ndarray) -> np.ndarray:
        return self.outputs

    def explain_bytes(self, images: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        return self.heatmaps, self.outputs


def golden_folder(
    folder: Path,
    stored: list[list[float]],
    heatmaps: np.ndarray | None = None,
    platform: dict | None = None,
) -> Path:
    """A version folder holding only golden files: `stored` probabilities, optionally
    heatmaps, and the platform that recorded them (none: written before the record)."""
    (folder / contract.GOLDEN_DIR).mkdir(parents=True)
    entries = []
    for i, probabilities in enumerate(stored):
        (folder / contract.GOLDEN_DIR / f"{i}.img").write_bytes(b"x")
        entry = {"file": f"{contract.GOLDEN_DIR}/{i}.img", "probabilities": probabilities}
        if heatmaps is not None:
            np.save(folder / contract.GOLDEN_DIR / f"{i}.heatmap.npy", heatmaps[i])
            entry["heatmap"] = f"{contract.GOLDEN_DIR}/{i}.heatmap.npy"
        entries.append(entry)
    manifest: dict = {"tolerance": contract.PARITY_TOLERANCE, "inputs": entries}
    if platform is not None:
        manifest["platform"] = platform
    (folder / contract.GOLDEN_MANIFEST).write_text(json.dumps(manifest))
    return folder
