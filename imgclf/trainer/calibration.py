"""Temperature scaling: make a softmax score mean what it says.

A network trained to minimise cross-entropy is often over-confident (or, with label
smoothing, under-confident): its 0.9 scores are right 70% of the time. Temperature
scaling (Guo et al. 2017) divides the logits by one number T fitted on the validation
split, which changes every score but never the ranking, so accuracy stays the same.

The exported head ends in a softmax, so the logits are recovered as log(p): softmax(log(p)
/ T) equals softmax(logits / T) exactly, because log(p) differs from the logits only by a
per-row constant. Probabilities of exactly 0 (float32 underflow) are floored at LOG_FLOOR
before the log. The one TensorFlow function `temperature_scale` is used inside the
SavedModel (export.py) and on the training side (evaluation, golden files), so the served
and training paths apply the same arithmetic.

A validation split the model gets entirely right makes the plain NLL fall for ever as
T -> 0 (every score would become 1.0). So T is fitted against targets smoothed the way
Laplace's rule of succession estimates a rate from n successes in n trials: each image's
target keeps 1 - 1/(n + 2) on its label and spreads 1/(n + 2) over all classes. With 13
validation images that caps the belief near 93%; with thousands the smoothing vanishes.

Expected calibration error (ECE) uses equal-width confidence bins: the weighted mean of
|accuracy - mean confidence| over bins, confidence being the top score.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

LOG_FLOOR = 1e-30  # probabilities below this are taken as this before the log
ECE_BINS = 10
# The search range of T; T = 1 (no change) is always a candidate too.
MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0
_SEARCH_STEPS = 80


def temperature_scale(probabilities: tf.Tensor, temperature: float) -> tf.Tensor:
    """float32 [batch, classes] softmax outputs -> the same, recalibrated by `temperature`.

    T = 1 returns the input untouched (no op in the graph): an export with calibration
    off is the same graph as before calibration existed.
    """
    if temperature == 1.0:
        return probabilities
    floored = tf.maximum(probabilities, tf.constant(LOG_FLOOR, probabilities.dtype))
    return tf.nn.softmax(tf.math.log(floored) / tf.constant(temperature, probabilities.dtype))


def calibrate(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """The training side's copy of what the SavedModel serves: float32 [n, classes]."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if temperature == 1.0 or probabilities.size == 0:
        return probabilities
    return temperature_scale(tf.constant(probabilities), temperature).numpy()


def _logits(probabilities: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(np.asarray(probabilities, dtype=np.float64), LOG_FLOOR))


def nll(probabilities: np.ndarray, labels: Sequence[int], temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of `labels` under the probabilities scaled by T."""
    logits = _logits(probabilities) / temperature
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 0.0
    top = logits.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(log_norm - logits[np.arange(len(labels)), labels]))


def fitting_loss(probabilities: np.ndarray, labels: Sequence[int], temperature: float) -> float:
    """Cross-entropy of the T-scaled scores against Laplace-smoothed targets (see above):
    what `fit_temperature` minimises."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return 0.0
    logits = _logits(probabilities) / temperature
    top = logits.max(axis=1, keepdims=True)
    log_p = logits - (top + np.log(np.exp(logits - top).sum(axis=1, keepdims=True)))
    smoothing = 1.0 / (len(labels) + 2)
    on_label = log_p[np.arange(len(labels)), labels]
    return float(-np.mean((1 - smoothing) * on_label + smoothing * log_p.mean(axis=1)))


def fit_temperature(probabilities: np.ndarray, labels: Sequence[int]) -> float:
    """The T in [MIN_TEMPERATURE, MAX_TEMPERATURE] that minimises `fitting_loss` on the
    validation split (the NLL, Laplace-smoothed so a split without mistakes stays finite).

    The loss is convex in 1/T, hence unimodal in log T: a golden-section search finds the
    minimum without SciPy. T = 1 is kept when nothing beats it (no labels, one class, or
    an already calibrated model).
    """
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities)
    if len(labels) == 0 or probabilities.ndim != 2 or probabilities.shape[1] < 2:
        return 1.0

    def loss(log_t: float) -> float:
        return fitting_loss(probabilities, labels, math.exp(log_t))

    low, high = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = low + (1 - ratio) * (high - low), low + ratio * (high - low)
    fa, fb = loss(a), loss(b)
    for _ in range(_SEARCH_STEPS):
        if fa <= fb:
            high, b, fb = b, a, fa
            a = low + (1 - ratio) * (high - low)
            fa = loss(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = loss(b)
    best = round(math.exp((low + high) / 2), 6)
    return best if loss(math.log(best)) < loss(0.0) else 1.0


def reliability(
    probabilities: np.ndarray, labels: Sequence[int], bins: int = ECE_BINS
) -> list[dict]:
    """Per equal-width confidence bin: its range, image count, accuracy and mean confidence
    (accuracy and confidence are None in an empty bin). The reliability diagram's data."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    out = []
    if len(labels) == 0:
        confidence = correct = index = np.zeros(0)
    else:
        confidence = probabilities.max(axis=1)
        correct = probabilities.argmax(axis=1) == labels
        index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        out.append(
            {
                "low": round(b / bins, 6),
                "high": round((b + 1) / bins, 6),
                "count": count,
                "accuracy": float(correct[members].mean()) if count else None,
                "confidence": float(confidence[members].mean()) if count else None,
            }
        )
    return out


def expected_calibration_error(
    probabilities: np.ndarray, labels: Sequence[int], bins: int = ECE_BINS
) -> float:
    """ECE: sum over bins of (bin share) * |accuracy - mean confidence|; 0 = calibrated."""
    table = reliability(probabilities, labels, bins)
    total = sum(row["count"] for row in table)
    if not total:
        return 0.0
    gaps = (
        row["count"] / total * abs(row["accuracy"] - row["confidence"])
        for row in table
        if row["count"]
    )
    return float(sum(gaps))


def split_summary(probabilities: np.ndarray, labels: Sequence[int], temperature: float) -> dict:
    """ECE and NLL before and after scaling, and both reliability tables, for one split."""
    after = calibrate(probabilities, temperature)
    return {
        "count": len(labels),
        "ece_before": round(expected_calibration_error(probabilities, labels), 6),
        "ece_after": round(expected_calibration_error(after, labels), 6),
        "nll_before": round(nll(probabilities, labels), 6),
        "nll_after": round(nll(after, labels), 6),
        "reliability_before": reliability(probabilities, labels),
        "reliability_after": reliability(after, labels),
    }
