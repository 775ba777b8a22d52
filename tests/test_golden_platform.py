"""Golden files travel with a version to other machines: they record the platform that
computed them, and a server elsewhere replays them with a tolerance for other kernels
(an export must load on a server with another CPU) that still refuses a drifted model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from imgclf import contract
from imgclf.artifact import OTHER_PLATFORM_HEATMAP_TOLERANCE, numeric_platform, replay_golden
from tests.golden_fakes import FakeVersion, golden_folder

STORED = [[0.9, 0.1], [0.2, 0.8]]
# This machine as it would be with a GPU (the worker's export, a CPU server's replay).
ANOTHER_PLATFORM = {**numeric_platform(), "gpus": ["NVIDIA H100 80GB HBM3"]}


def test_probabilities_from_another_platform_replay_within_its_tolerance(tmp_path):
    moved = np.array(STORED, np.float32) + np.array([-0.005, 0.005], np.float32)
    for name, platform in (("legacy", None), ("here", numeric_platform())):
        folder = golden_folder(tmp_path / name, STORED, platform=platform)
        with pytest.raises(RuntimeError, match="tolerance 1e-05"):
            replay_golden(FakeVersion(folder, moved))  # recorded here (or before the record)

    there = golden_folder(tmp_path / "there", STORED, platform=ANOTHER_PLATFORM)
    assert replay_golden(FakeVersion(there, moved)) == pytest.approx(0.005, abs=1e-6)
    too_far = np.array(STORED, np.float32) + np.array([-0.02, 0.02], np.float32)
    with pytest.raises(RuntimeError, match=r"tolerance 1e-02 \(golden files recorded on another"):
        replay_golden(FakeVersion(there, too_far))
    with pytest.raises(RuntimeError, match="another platform: gpus differ"):
        replay_golden(FakeVersion(there, too_far))  # the message names what differs


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
    moved = nudged.copy()
    moved[0, 1, 1] += 2 * OTHER_PLATFORM_HEATMAP_TOLERANCE  # one pixel moves too far
    with pytest.raises(RuntimeError, match=r"max difference .* another platform"):
        replay_golden(FakeVersion(there, probabilities, moved))


def test_an_export_records_the_platform_that_computed_its_golden_outputs(trained):
    manifest = json.loads((trained.version_dir / contract.GOLDEN_MANIFEST).read_text())
    assert manifest["platform"] == numeric_platform()
