"""The one answer type of a classification, used by the server core, both protocol
codecs and `imgclf predict`. NumPy only, so the CLI can use it without the server.

A `class_name` is what the model predicts (assets/labels.txt); it is never a
version alias (stable, canary), which lives in imgclf.registry.

Abstention lives here too, so every answer that names a label (REST :classify, :upload
and :explain, gRPC Classify, `imgclf predict`) applies the same rule: when the top
score is below `min_score`, the label is contract.UNKNOWN_LABEL; the scores stay listed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from imgclf import contract
from imgclf.errors import InvalidInput, quote


class ClassScore(NamedTuple):
    class_name: str
    score: float


def parse_min_score(value: object) -> float | None:
    """A request's min_score (number, or text from a form or query) -> float in [0, 1];
    None when the request gives none. Anything else is InvalidInput naming the value."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError
        score = float(value)
    except ValueError:
        score = math.nan
    if not 0.0 <= score <= 1.0:  # also refuses NaN
        raise InvalidInput(
            f"min_score must be a number between 0 and 1, got {quote(value)}; an image whose "
            f"top score is below it is answered {contract.UNKNOWN_LABEL!r}"
        )
    return score


def card_min_score(card: dict) -> float:
    """The model card's default min_score (0 = always answer; older cards have none)."""
    value = card.get(contract.MIN_SCORE_CARD_KEY)
    return float(value) if isinstance(value, int | float) and 0.0 <= value <= 1.0 else 0.0


def answer_label(class_name: str, score: float, min_score: float) -> str:
    """`class_name`, or contract.UNKNOWN_LABEL when its score is below `min_score`."""
    return contract.UNKNOWN_LABEL if score < min_score else class_name


@dataclass(frozen=True)
class Prediction:
    """Which version answered, probabilities float32 [n, classes] in class order, and
    the min_score under which an image is answered "unknown" (0 = never)."""

    model: str
    version: int
    probabilities: np.ndarray
    class_names: list[str]
    min_score: float = 0.0

    def classes(self) -> np.ndarray:
        """int64 [n]: the index of the most probable class per image."""
        return self.probabilities.argmax(axis=1).astype(np.int64)

    def predicted_names(self) -> list[str]:
        names = self.class_names
        return [names[i] for i in self.classes()]

    def labels(self) -> list[ClassScore]:
        """Per image, the answer: (top class or "unknown" under min_score, top score)."""
        scores = self.probabilities.max(axis=1) if len(self.probabilities) else []
        return [
            ClassScore(answer_label(name, float(score), self.min_score), float(score))
            for name, score in zip(self.predicted_names(), scores, strict=True)
        ]

    def top_k(self, k: int = contract.DEFAULT_TOP_K) -> list[list[ClassScore]]:
        """Per image, the k most probable (class name, score), best first (ties: class order)."""
        k = max(1, min(int(k), len(self.class_names)))
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [
            [ClassScore(self.class_names[i], float(row[i])) for i in idx]
            for row, idx in zip(self.probabilities, order, strict=True)
        ]
