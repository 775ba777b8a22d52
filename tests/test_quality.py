"""Quality on real images nobody here drew: weights=none with the recipe and augmentation
`auto` picks (from_scratch, augmentation shift), on scikit-learn's handwritten digits.

Before the from_scratch recipe, the default training reached 0.66 on digits against a
logistic regression's 0.96 (issue #13). This run is a shortened default (8 epochs on 400
training images, so it fits a test suite); `python -m bench.quality` measures the full
defaults on the whole sets against the goals and records them in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import pytest

from bench import datasets
from imgclf.config import parse_config
from imgclf.trainer import experiment, run
from imgclf.trainer.model import FROM_SCRATCH, augmentation_for, recipe_for

pytestmark = pytest.mark.slow

# Measured on this configuration with augmentation none: 0.83 test (8 epochs, 2-core AMD
# EPYC); the floor leaves room for run-to-run noise and stays well above the old recipe's
# 0.66. With `shift` (the default since stop 13) it passed too, in 288 s.
DIGITS_FLOOR = 0.75


def test_from_scratch_learns_handwritten_digits(tmp_path):
    data = datasets.digits(tmp_path / "digits", per_class=40)
    config = parse_config(
        {
            "weights": "none",
            "image_size": 32,
            "batch_size": 16,
            "head_epochs": 4,
            "fine_tune_epochs": 4,
        }
    )
    assert recipe_for(config) == FROM_SCRATCH and augmentation_for(config) == "shift"
    # The run's own load and fit stages (what `imgclf train` runs before export).
    loaded = run.load(config, data, tmp_path / "run")
    dataset, preprocess = loaded.dataset, loaded.preprocess
    assert len(dataset.classes) == 10 and len(dataset.splits["train"]) == 400
    fitted = run.fit(config, loaded, tmp_path / "run")
    metrics = experiment.score(
        fitted.classifier, dataset.splits["test"], dataset.classes, preprocess, config
    )
    curve = [round(h["val_accuracy"], 2) for h in fitted.state.history]
    baseline = datasets.logistic_baseline(data)
    assert metrics["accuracy"] >= DIGITS_FLOOR, (metrics["accuracy"], curve, baseline)
    # it learns every digit, not a few of them
    recalls = [row["recall"] for row in metrics["per_class"].values()]
    assert min(recalls) >= 0.4, metrics["per_class"]
