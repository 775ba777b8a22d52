"""What a score threshold (`min_score`) costs and buys, measured on a labelled split.

The server answers "unknown" when an image's top score is below min_score. At a
threshold t, the model answers class c for an image when c is its top class and the
score is at least t. Per class this gives precision (of the answers c) and recall (of
the images truly c); over all classes it gives coverage (the share of images answered)
and the accuracy of the answered ones. NumPy only; the report plots what it returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# The PR curves' thresholds, and the few the report tabulates.
CURVE_THRESHOLDS = tuple(round(i / 20, 2) for i in range(21))
TABLE_THRESHOLDS = (0.0, 0.5, 0.7, 0.9)
COVERAGE_THRESHOLDS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def _answers(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.size == 0:
        return np.zeros(0, np.int64), np.zeros(0)
    return probabilities.argmax(axis=1), probabilities.max(axis=1)


def coverage_accuracy(
    probabilities: np.ndarray,
    labels: Sequence[int],
    thresholds: Sequence[float] = COVERAGE_THRESHOLDS,
) -> list[dict]:
    """Per threshold: coverage (answered / all) and accuracy of the answered images
    (None when nothing is answered)."""
    predicted, score = _answers(probabilities)
    labels = np.asarray(labels, dtype=np.int64)
    rows = []
    for t in thresholds:
        answered = score >= t
        count = int(answered.sum())
        rows.append(
            {
                "min_score": float(t),
                "coverage": float(count / len(labels)) if len(labels) else 0.0,
                "accuracy": float((predicted[answered] == labels[answered]).mean())
                if count
                else None,
                "answered": count,
            }
        )
    return rows


def per_class_pr(
    probabilities: np.ndarray,
    labels: Sequence[int],
    classes: Sequence[str],
    thresholds: Sequence[float] = CURVE_THRESHOLDS,
) -> dict[str, list[dict]]:
    """Per class, per threshold: precision and recall of answering that class (precision
    is None when the class is never answered at that threshold)."""
    predicted, score = _answers(probabilities)
    labels = np.asarray(labels, dtype=np.int64)
    out: dict[str, list[dict]] = {}
    for c, name in enumerate(classes):
        truly = labels == c
        rows = []
        for t in thresholds:
            answered = (predicted == c) & (score >= t)
            hits = int((answered & truly).sum())
            rows.append(
                {
                    "min_score": float(t),
                    "precision": hits / int(answered.sum()) if answered.any() else None,
                    "recall": hits / int(truly.sum()) if truly.any() else None,
                }
            )
        out[name] = rows
    return out


def threshold_summary(
    probabilities: np.ndarray, labels: Sequence[int], classes: Sequence[str]
) -> dict:
    """What the model card keeps for the report: coverage vs accuracy and per-class PR."""
    return {
        "coverage": coverage_accuracy(probabilities, labels),
        "per_class": per_class_pr(probabilities, labels, classes),
    }
