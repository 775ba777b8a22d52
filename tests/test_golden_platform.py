"""Golden files travel with a version to other machines: they record the platform that
computed them, and a server elsewhere replays them with a tolerance for other kernels
(a GPU worker's export must load on a CPU server) that still refuses a changed answer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imgclf import contract
from imgclf.artifact import OTHER_PLATFORM_TOLERANCE, numeric_platform, replay_golden
from tests.golden_fakes import FakeVersion, golden_folder

STORED = [[0.9, 0.1], [0.2, 0.8]]
ANOTHER_PLATFORM = {"tensorflow": "2.21.0", "gpus": ["NVIDIA H100 80GB HBM3"], "cpu_features": []}


def test_probabilities_from_another_platform_replay_within_its_tolerance(tmp_path):
    moved = np.array(STORED, np.float32) + np.array([-0.005, 0.005], np.float32)
    for name, platform in (("legacy", None), ("here", numeric_platform())):
        folder = golden_folder(tmp_path / name, STORED, platform=platform)
        with pytest.raises(RuntimeError, match="tolerance 1e-05"):
            replay_golden(FakeVersion(folder, moved))  # recorded here (or before the record)

    there = golden_folder(tmp_path / "there", STORED, platform=ANOTHER_PLATFORM)
    assert replay_golden(FakeVersion(there, moved)) == pytest.approx(0.005, abs=1e-6)
    too_far = np.array(STORED, np.float32) + np.array([-0.02, 0.02], np.float32)
    with pytest.raises(RuntimeError, match="another platform"):
        replay_golden(FakeVersion(there, too_far))
    flipped = np.array(STORED, np.float32)
    flipped[0] = [0.495, 0.505]  # within no tolerance here; a clear answer changed
    with pytest.raises(RuntimeError, match="top-1"):
        replay_golden(FakeVersion(there, flipped))


def test_heatmaps_from_another_platform_compare_by_their_mean_difference(tmp_path):
    ramp = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    stored = np.stack([ramp, ramp.T])
    nudged = stored.copy()
    nudged[:, 0, 0] += 0.004  # one pixel moves by 4e-3: a max difference, a tiny mean
    probabilities = np.array(STORED, np.float32)
    here = golden_folder(tmp_path / "here", STORED, stored, platform=numeric_platform())
    with pytest.raises(RuntimeError, match="heatmap mismatch"):
        replay_golden(FakeVersion(here, probabilities, nudged))

    there = golden_folder(tmp_path / "there", STORED, stored, platform=ANOTHER_PLATFORM)
    replay_golden(FakeVersion(there, probabilities, nudged))
    shifted = np.clip(stored + 2 * OTHER_PLATFORM_TOLERANCE, 0, 1)
    with pytest.raises(RuntimeError, match=r"mean difference per map .* another platform"):
        replay_golden(FakeVersion(there, probabilities, shifted))


def test_an_export_records_the_platform_that_computed_its_golden_outputs(trained):
    manifest = json.loads((trained.version_dir / contract.GOLDEN_MANIFEST).read_text())
    assert manifest["platform"] == numeric_platform()
    assert manifest["platform"]["tensorflow"] and "cpu_features" in manifest["platform"]
