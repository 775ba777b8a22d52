"""Evaluation metrics computed from predicted probabilities (NumPy only, easy to test)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def top_k_accuracy(y_true: Sequence[int], probabilities: np.ndarray, k: int) -> float:
    k = min(k, probabilities.shape[1])
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return float(np.mean([t in row for t, row in zip(y_true, top, strict=True)]))


def classification_metrics(
    y_true: Sequence[int], probabilities: np.ndarray, classes: Sequence[str], top_k: int = 5
) -> dict:
    """Accuracy, top-k, per-class precision/recall/F1/support and the confusion matrix."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    y_true_arr = np.asarray(y_true, dtype=np.int64)
    if probabilities.ndim != 2 or len(y_true_arr) != len(probabilities):
        raise ValueError("probabilities must be [n, classes] with one row per label")
    y_pred = probabilities.argmax(axis=1)
    matrix = confusion_matrix(y_true_arr, y_pred, len(classes))
    per_class = {}
    for i, name in enumerate(classes):
        tp = int(matrix[i, i])
        predicted = int(matrix[:, i].sum())
        support = int(matrix[i, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": round(precision, 6),
            "recall": round(recall, 6),
            "f1": round(f1, 6),
            "support": support,
        }
    eps = 1e-12
    loss = -np.mean(np.log(probabilities[np.arange(len(y_true_arr)), y_true_arr] + eps))
    k = min(top_k, len(classes))
    return {
        "accuracy": float(np.mean(y_pred == y_true_arr)) if len(y_true_arr) else 0.0,
        f"top_{k}_accuracy": top_k_accuracy(y_true_arr, probabilities, k),
        "loss": float(loss),
        "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
        "count": len(y_true_arr),
    }
