"""Temperature scaling, ECE and thresholds on synthetic scores (no training)."""

from __future__ import annotations

import numpy as np
import pytest

from imgclf.trainer import calibration, thresholds


def _overconfident(n: int = 3000, classes: int = 4, sharpen: float = 4.0, seed: int = 0):
    """Labels drawn from softmax(logits); the "model" reports softmax(sharpen * logits)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, size=(n, classes))
    true = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(classes, p=row) for row in true])
    sharp = np.exp(sharpen * logits)
    return (sharp / sharp.sum(axis=1, keepdims=True)).astype(np.float32), labels


def test_scaling_an_overconfident_model_lowers_ece_and_recovers_the_temperature():
    probabilities, labels = _overconfident()
    t = calibration.fit_temperature(probabilities[:2000], labels[:2000])
    assert t == pytest.approx(4.0, rel=0.15)  # it undoes the sharpening
    held_out, held_labels = probabilities[2000:], labels[2000:]
    summary = calibration.split_summary(held_out, held_labels, t)
    assert summary["ece_before"] > 0.1
    assert summary["ece_after"] < summary["ece_before"] / 3
    assert summary["nll_after"] < summary["nll_before"]
    after = calibration.calibrate(held_out, t)
    # Same ranking: accuracy cannot change.
    assert (after.argmax(axis=1) == held_out.argmax(axis=1)).all()
    np.testing.assert_allclose(after.sum(axis=1), 1.0, atol=1e-5)


def test_temperature_is_one_when_nothing_beats_it():
    assert calibration.fit_temperature(np.zeros((0, 3)), []) == 1.0
    # Already calibrated scores: T stays within a few percent of 1 (or exactly 1).
    probabilities, labels = _overconfident(sharpen=1.0)
    assert calibration.fit_temperature(probabilities, labels) == pytest.approx(1.0, abs=0.08)
    same = calibration.calibrate(probabilities, 1.0)
    assert same is not None and np.array_equal(same, probabilities)


def test_zero_probabilities_are_floored_not_nan():
    probabilities = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
    after = calibration.calibrate(probabilities, 3.0)
    assert np.isfinite(after).all() and (after.argmax(axis=1) == [0, 1]).all()
    assert calibration.nll(probabilities, [1, 1], 3.0) > 0


def test_reliability_bins_and_ece_by_hand():
    probabilities = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.35, 0.65]])
    labels = [0, 1, 0, 1]
    bins = calibration.reliability(probabilities, labels)
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 1, 1, 0, 0, 2]
    assert bins[9]["accuracy"] == 0.5 and bins[9]["confidence"] == pytest.approx(0.95)
    # (2/4)|0.5-0.95| + (1/4)|1-0.55| + (1/4)|1-0.65|
    expected = 0.5 * 0.45 + 0.25 * 0.45 + 0.25 * 0.35
    assert calibration.expected_calibration_error(probabilities, labels) == pytest.approx(expected)


def test_thresholds_coverage_and_per_class_precision_recall():
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    labels = [0, 1, 1, 0]
    rows = {r["min_score"]: r for r in thresholds.coverage_accuracy(probabilities, labels)}
    assert rows[0.0]["coverage"] == 1.0 and rows[0.0]["accuracy"] == 0.5
    assert rows[0.6]["coverage"] == 0.75 and rows[0.6]["accuracy"] == pytest.approx(2 / 3)
    assert rows[0.7]["answered"] == 2 and rows[0.7]["accuracy"] == 1.0
    assert rows[0.99]["coverage"] == 0.0 and rows[0.99]["accuracy"] is None
    pr = thresholds.per_class_pr(probabilities, labels, ["a", "b"], thresholds=(0.0, 0.8))
    assert pr["a"][0] == {"min_score": 0.0, "precision": 0.5, "recall": 0.5}
    assert pr["a"][1] == {"min_score": 0.8, "precision": 1.0, "recall": 0.5}
    assert pr["b"][1] == {"min_score": 0.8, "precision": None, "recall": 0.0}


def test_a_validation_split_without_mistakes_does_not_make_every_score_one():
    """Plain NLL would send T to its lower bound; the Laplace-smoothed targets stop near
    the rate (n + 1) / (n + 2) that n right answers out of n support."""
    rng = np.random.default_rng(1)
    labels = np.arange(13) % 3
    probabilities = np.full((13, 3), 0.2, np.float32)
    probabilities[np.arange(13), labels] = 0.6 + rng.uniform(-0.05, 0.05, 13)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    t = calibration.fit_temperature(probabilities, labels)
    assert calibration.MIN_TEMPERATURE < t < 1.0  # sharpened, not to the bound
    top = calibration.calibrate(probabilities, t).max(axis=1)
    assert 0.85 < top.mean() < 0.97  # near 14/15, not 1.0
    assert calibration.fitting_loss(probabilities, labels, t) < calibration.fitting_loss(
        probabilities, labels, 1.0
    )


def test_config_switches_calibration_and_bounds_min_score():
    from imgclf.config import parse_config
    from imgclf.errors import ConfigError

    assert parse_config().calibration == "temperature" and parse_config().min_score == 0.0
    assert parse_config(calibration="none", min_score=0.6).min_score == 0.6
    with pytest.raises(ConfigError, match=r"calibration.*'temperature', 'none'"):
        parse_config(calibration="platt")
    with pytest.raises(ConfigError, match=r"min_score.*<= 1\.0"):
        parse_config(min_score=1.5)
