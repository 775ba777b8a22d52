"""Cancellation publishes nothing; a rerun in the same run folder resumes from its last epoch."""

import json

import pytest

from imgclf import repository
from imgclf.config import parse_config
from imgclf.errors import Cancelled
from imgclf.trainer.run import train_and_export
from imgclf.trainer.training import Hooks
from tests.conftest import FAST


def test_cancel_then_resume_from_the_last_epoch(tmp_path, shapes_dir):
    config = parse_config({**FAST, "head_epochs": 3, "fine_tune_epochs": 1})
    models, run_dir = tmp_path / "models", tmp_path / "run"
    stop = {"now": False}
    first_events = []

    def on_progress(event):
        if event["stage"] != "train":
            return
        first_events.append((event["phase"], event["epoch"]))
        if event["phase"] == 1 and event["epoch"] == 2 and event["batch"] == event["steps"]:
            stop["now"] = True

    with pytest.raises(Cancelled):
        train_and_export(
            config,
            data=shapes_dir,
            name="m",
            model_dir=models,
            run_dir=run_dir,
            hooks=Hooks(on_progress=on_progress, should_stop=lambda: stop["now"]),
        )
    assert repository.list_versions(models, "m") == []
    assert not list(models.glob("m/.staging-*"))
    state = json.loads((run_dir / "checkpoints/state.json").read_text())
    assert (state["phase"], state["epoch"]) == (1, 2)
    saved_history = state["history"]

    second_events = []
    result = train_and_export(
        config,
        data=shapes_dir,
        name="m",
        model_dir=models,
        run_dir=run_dir,
        hooks=Hooks(
            on_progress=lambda e: (
                e["stage"] == "train" and second_events.append((e["phase"], e["epoch"]))
            )
        ),
    )
    assert result.version == 1
    assert min(second_events) == (1, 3)  # epochs 1 and 2 were not run again
    history = result.card["history"]
    assert [(h["phase"], h["epoch"]) for h in history] == [(1, 1), (1, 2), (1, 3), (2, 1)]
    assert history[:2] == saved_history


def test_changed_config_does_not_reuse_checkpoints(tmp_path, shapes_dir):
    config = parse_config({**FAST, "head_epochs": 3, "fine_tune_epochs": 0, "augmentation": "none"})
    models, run_dir = tmp_path / "models", tmp_path / "run"
    stop = {"now": False}

    def on_progress(event):
        if event["stage"] == "train" and event["epoch"] == 1 and event["batch"] == event["steps"]:
            stop["now"] = True

    with pytest.raises(Cancelled):  # leaves a checkpoint of epoch 1 under the first config
        train_and_export(
            config,
            data=shapes_dir,
            name="m",
            model_dir=models,
            run_dir=run_dir,
            hooks=Hooks(on_progress=on_progress, should_stop=lambda: stop["now"]),
        )
    state = json.loads((run_dir / "checkpoints/state.json").read_text())
    assert (state["phase"], state["epoch"]) == (1, 1)
    other = parse_config({**FAST, "head_epochs": 2, "fine_tune_epochs": 0, "augmentation": "none"})
    epochs = []
    result = train_and_export(
        other,
        data=shapes_dir,
        name="m",
        model_dir=models,
        run_dir=run_dir,
        hooks=Hooks(on_progress=lambda e: e["stage"] == "train" and epochs.append(e["epoch"])),
    )
    assert result.version == 1
    assert min(epochs) == 1  # epoch 1 was trained again, not taken from the old checkpoint
    assert [(h["phase"], h["epoch"]) for h in result.card["history"]] == [(1, 1), (1, 2)]
