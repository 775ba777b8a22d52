"""The one answer type of a classification, used by the server core, both protocol
codecs and `imgclf predict`. NumPy only, so the CLI can use it without the server.

A `class_name` is what the model predicts (assets/labels.txt); it is never a
version alias (stable, canary), which lives in imgclf.registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from imgclf import contract


class ClassScore(NamedTuple):
    class_name: str
    score: float


@dataclass(frozen=True)
class Prediction:
    """Which version answered, and probabilities float32 [n, classes] in class order."""

    model: str
    version: int
    probabilities: np.ndarray
    class_names: list[str]

    def classes(self) -> np.ndarray:
        """int64 [n]: the index of the most probable class per image."""
        return self.probabilities.argmax(axis=1).astype(np.int64)

    def predicted_names(self) -> list[str]:
        names = self.class_names
        return [names[i] for i in self.classes()]

    def top_k(self, k: int = contract.DEFAULT_TOP_K) -> list[list[ClassScore]]:
        """Per image, the k most probable (class name, score), best first (ties: class order)."""
        k = max(1, min(int(k), len(self.class_names)))
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [
            [ClassScore(self.class_names[i], float(row[i])) for i in idx]
            for row, idx in zip(self.probabilities, order, strict=True)
        ]
