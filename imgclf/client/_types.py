"""Result types shared by both transports, so REST and gRPC answers look the same."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "rejected", "cancelled"})


@dataclass(frozen=True)
class LabelScore:
    label: str
    score: float


@dataclass(frozen=True)
class Prediction:
    """One image's answer: the top label and every class's probability.

    `scores` is ordered by score, highest first (ties in class-index order), over REST
    and gRPC alike, so `next(iter(scores))` is `label` unless the server abstained:
    then `label` is "unknown" (the top score was below min_score) and `score` is still
    the top score.
    """

    label: str
    score: float
    scores: dict[str, float]
    model: str
    version: int

    def top(self, k: int) -> list[LabelScore]:
        ranked = sorted(self.scores.items(), key=lambda item: -item[1])[: max(1, k)]
        return [LabelScore(label, score) for label, score in ranked]


@dataclass(frozen=True)
class Explanation:
    """One image's explanation: the answer, and where the model looked.

    `label` is the top-1 class, or "unknown" when its score is below min_score.
    `heatmap_png`: 8-bit grayscale PNG (image_size x image_size), Grad-CAM of the
    predicted class, 255 = most evidence. `overlay_png`: RGB PNG of that map over the
    image as the model saw it. `heatmap()` decodes the first to floats in [0, 1].
    """

    label: str
    score: float
    top: list[LabelScore]
    heatmap_png: bytes = field(repr=False)
    overlay_png: bytes = field(repr=False)
    model: str
    version: int

    def heatmap(self) -> Any:
        """float32 NumPy array [H, W] in [0, 1] (needs NumPy and Pillow)."""
        import io

        import numpy as np
        from PIL import Image

        with Image.open(io.BytesIO(self.heatmap_png)) as image:
            return np.asarray(image, dtype=np.float32) / 255.0


@dataclass(frozen=True)
class Job:
    id: str
    status: str
    name: str
    version: int | None
    error: str | None
    progress: dict[str, Any] | None = None
    record: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Job:
        return cls(
            id=record["id"],
            status=record["status"],
            name=record.get("name") or "",
            version=record.get("version") or None,
            error=record.get("error") or None,
            progress=record.get("progress"),
            record=record,
        )


def prediction_from_scores(
    model: str,
    version: int,
    class_names: list[str],
    probabilities: list[float],
    answer: str | None = None,
) -> Prediction:
    """`answer` is the server's label (the top class, or "unknown"); None = the top class."""
    pairs = zip(class_names, (float(p) for p in probabilities), strict=True)
    # sorted() is stable: equal scores keep the class-index order.
    scores = dict(sorted(pairs, key=lambda pair: -pair[1]))
    top = next(iter(scores))
    return Prediction(
        label=answer or top, score=scores[top], scores=scores, model=model, version=int(version)
    )
