"""How much a test accuracy measured on few images can be trusted.

A 6-image test split that scores 66.7% is compatible with a model anywhere between
30% and 90%: the report and the promotion gate must say so instead of printing one
number. The Wilson score interval is used because it stays inside [0, 1] and behaves
at small counts and at accuracies near 0 or 1, where the normal approximation fails.
"""

from __future__ import annotations

import math
from statistics import NormalDist

Z_95 = 1.959963984540054
# Fewer test images per class than this, and the split is too small to tell.
MIN_TEST_PER_CLASS = 10
# An interval wider than this (upper - lower) is too wide to tell versions apart.
MAX_INTERVAL_WIDTH = 0.20


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion `correct / total`, as (low, high)."""
    if total <= 0:
        return 0.0, 1.0
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def z_for(confidence: float) -> float:
    """The two-sided normal quantile of `confidence` (0.95 -> 1.96)."""
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def accuracy_uncertainty(
    accuracy: float, count: int, classes: int, confidence: float = 0.95
) -> dict:
    """The interval of a test accuracy and, when the split is too small, a warning."""
    correct = round(accuracy * count)
    low, high = wilson_interval(correct, count, z_for(confidence))
    per_class = count / max(1, classes)
    warning = None
    if per_class < MIN_TEST_PER_CLASS or high - low > MAX_INTERVAL_WIDTH:
        warning = (
            f"the test split is too small to tell: {count} images ({per_class:.1f} per class) "
            f"give a {confidence:.0%} interval of {low:.0%}-{high:.0%} for the accuracy; add "
            "test images "
            f"(at least {MIN_TEST_PER_CLASS} per class) before trusting this number"
        )
    return {
        "accuracy": accuracy,
        "count": count,
        "low": round(low, 6),
        "high": round(high, 6),
        "confidence": confidence,
        "method": "wilson",
        "warning": warning,
    }
