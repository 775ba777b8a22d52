"""Quality on real images nobody here drew, with weights=none (the from_scratch recipe).

Small real sets built offline (bench/datasets.py): scikit-learn's handwritten digits,
scikit-image's texture photos and generated colour patches, each with given train/val/
test folders. These runs are cut down to fit the test budget (fewer images and epochs
than the goals in docs/BENCHMARKS.md, which `python -m bench.quality` measures), so the
bars here are lower than the goals but far above chance and above what the frozen-BN
recipe reached on the same sets (issue #13: 0.57 / 0.66 / 0.62 at 4 + 4 epochs).
"""

from __future__ import annotations

import pytest

from bench import datasets
from imgclf.config import parse_config
from imgclf.trainer.run import train_and_export

CASES = {
    # set: (builder kwargs, image size, config overrides, minimum test accuracy)
    "patches": ({"per_class": 24}, 32, {"head_epochs": 3, "fine_tune_epochs": 3}, 0.95),
    "digits": ({"per_class": 20}, 32, {"head_epochs": 3, "fine_tune_epochs": 3}, 0.6),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_from_scratch_learns_real_images(tmp_path, name):
    kwargs, size, overrides, minimum = CASES[name]
    data = datasets.BUILDERS[name](tmp_path / "data", **kwargs)
    config = parse_config({"weights": "none", "image_size": size, **overrides})
    result = train_and_export(
        config, data=data, name=name, model_dir=tmp_path / "models", run_dir=tmp_path / "run"
    )
    assert result.card["recipe"]["name"] == "from_scratch"
    baseline = datasets.logistic_baseline(data)
    assert result.metrics["accuracy"] >= minimum, (result.metrics["accuracy"], baseline)
