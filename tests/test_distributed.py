"""One job on several devices: MirroredStrategy over 2 logical CPU devices stands in for
2 GPUs (a fresh process, since logical devices must be set before TensorFlow starts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CODE = r"""
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pathlib import Path
from imgclf.config import parse_config
from imgclf.trainer import experiment, hardware
from imgclf.trainer.pipeline import load_for_config

config = parse_config({"image_size": 32, "weights": "none", "batch_size": 8, "head_epochs": 1,
    "fine_tune_epochs": 0, "augmentation": "none", "early_stopping_patience": 0,
    "bn_statistics_images": 16})
dataset, preprocess = load_for_config(config, sys.argv[1])
plan = hardware.Plan(precision="float32", jit_compile=False, replicas=2, device="cpu",
    global_batch_size=16, learning_rate_scale=2.0)
strategy = hardware.strategy_for(plan, devices=["/cpu:0", "/cpu:1"])
clf, state = experiment.fit(config, classes=dataset.classes, train=dataset.splits["train"],
    val=dataset.splits["val"], preprocess=preprocess, checkpoint_dir=Path(sys.argv[2]),
    run_plan=plan, strategy=strategy)
print("RESULT " + json.dumps({
    "replicas": strategy.num_replicas_in_sync,
    "variable": type(clf.model.weights[0].value).__name__,
    "train": len(dataset.splits["train"]),
    "history": state.history,
    "phase": state.phase,
}))
"""


def test_one_job_trains_on_two_devices(tmp_path, shapes_dir):
    done = subprocess.run(
        [sys.executable, "-c", CODE, str(shapes_dir), str(tmp_path / "ckpt")],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    assert result["replicas"] == 2
    assert "Mirrored" in result["variable"]
    assert result["phase"] == 3 and len(result["history"]) == 1
    assert "val_accuracy" in result["history"][0]
    # the schedule ends at 1% of the peak, and the peak is scaled: 1% of 2 x 1e-3
    assert abs(result["history"][0]["learning_rate"] - 2e-5) < 1e-9
