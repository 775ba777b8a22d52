"""IMGCLF_BFLOAT16: the server really runs the model in bfloat16, still passes its golden
replay, and keeps the answers; the relaxed replay still refuses a changed top-1.

The option is process-wide (TensorFlow's graph rewrite settings), so the server under
test runs in its own `imgclf serve` process and this test process stays in fp32.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import requests
import tensorflow as tf

from imgclf import contract
from imgclf.artifact import BF16_MARGIN, BF16_TOLERANCE, replay_golden
from imgclf.cpu import cpu_has_bf16
from tests.golden_fakes import FakeVersion, golden_folder
from tests.servers import copy_version, serve_process


@pytest.mark.skipif(not cpu_has_bf16(), reason="needs a CPU with AVX512-BF16 or AMX-BF16")
def test_bfloat16_server_runs_in_bf16_and_keeps_the_answers(trained, tmp_path):
    model_dir = tmp_path / "models"
    copy_version(trained.version_dir, model_dir, "shapes", 1)
    env = {"IMGCLF_BFLOAT16": "true"}
    with serve_process(model_dir, tmp_path / "serve.log", env) as base:
        images = sorted((trained.version_dir / contract.GOLDEN_DIR).glob("*.img"))
        images = [p.read_bytes() for p in images]
        body = {"instances": [{"b64": base64.b64encode(i).decode()} for i in images]}
        answer = requests.post(
            f"{base}/v1/models/shapes:predict", data=json.dumps(body), timeout=60
        )
        assert answer.status_code == 200, answer.text
        served = np.array([p["probabilities"] for p in answer.json()["predictions"]])

        fp32 = tf.saved_model.load(str(trained.version_dir)).signatures["serving_default"]
        expected = fp32(image_bytes=tf.constant(images))["probabilities"].numpy()
        diff = float(np.max(np.abs(served - expected)))
        # fp32 servers match to 1e-5 (the parity tolerance); bf16 rounding moves them more.
        assert diff > contract.PARITY_TOLERANCE, (
            f"outputs equal fp32 ({diff:.1e}): bf16 not applied"
        )
        assert diff <= BF16_TOLERANCE
        assert (served.argmax(axis=1) == expected.argmax(axis=1)).all()


def test_bf16_replay_allows_rounding_but_not_a_changed_answer(tmp_path):
    stored = [[0.9, 0.1], [0.2, 0.8], [0.5 + BF16_MARGIN / 4, 0.5 - BF16_MARGIN / 4]]
    folder = golden_folder(tmp_path / "v", stored)
    rounded = np.array(stored, np.float32) + np.array([-0.02, 0.02], np.float32)
    with pytest.raises(RuntimeError, match="tolerance"):
        replay_golden(FakeVersion(folder, rounded))  # fp32: 1e-5
    assert replay_golden(FakeVersion(folder, rounded), bfloat16=True) <= BF16_TOLERANCE

    tie_flipped = rounded.copy()
    tie_flipped[2] = [0.49, 0.51]  # a near tie may flip
    replay_golden(FakeVersion(folder, tie_flipped), bfloat16=True)

    flipped = np.array(stored, np.float32)
    flipped[0] = [0.45, 0.55]  # within no tolerance, but a clear answer changed
    with pytest.raises(RuntimeError, match="top-1"):
        replay_golden(FakeVersion(folder, flipped), bfloat16=True)
    too_far = np.array(stored, np.float32) + np.array([-0.06, 0.06], np.float32)
    with pytest.raises(RuntimeError, match="tolerance"):
        replay_golden(FakeVersion(folder, too_far), bfloat16=True)


def test_bfloat16_is_off_by_default():
    from imgclf.settings import Settings

    assert Settings().bfloat16 is False
    assert not tf.config.optimizer.get_experimental_options().get(
        "auto_mixed_precision_onednn_bfloat16", False
    )
