"""Cancellation publishes nothing; a rerun in the same run folder resumes from its last epoch."""

import json

import pytest

from imgclf import repository
from imgclf.config import parse_config
from imgclf.errors import Cancelled
from imgclf.trainer.run import train_and_export
from imgclf.trainer.training import Hooks
from tests.conftest import FAST


def _cancel_after_epoch(config, epoch: int, *, data, models, run_dir) -> dict:
    """Run until phase 1's `epoch` ends, cancel, and return the saved checkpoint state."""
    stop = {"now": False}

    def on_progress(event):
        if event["stage"] == "train" and event["phase"] == 1 and event["epoch"] == epoch:
            stop["now"] = event["batch"] == event["steps"]

    with pytest.raises(Cancelled):
        train_and_export(
            config,
            data=data,
            name="m",
            model_dir=models,
            run_dir=run_dir,
            hooks=Hooks(on_progress=on_progress, should_stop=lambda: stop["now"]),
        )
    return json.loads((run_dir / "checkpoints/state.json").read_text())


def _train_recording(config, *, data, models, run_dir):
    """A full run; returns its result and the (phase, epoch) of every training event."""
    events: list[tuple[int, int]] = []
    result = train_and_export(
        config,
        data=data,
        name="m",
        model_dir=models,
        run_dir=run_dir,
        hooks=Hooks(
            on_progress=lambda e: e["stage"] == "train" and events.append((e["phase"], e["epoch"]))
        ),
    )
    return result, events


def test_cancel_then_resume_from_the_last_epoch(tmp_path, shapes_dir):
    config = parse_config({**FAST, "head_epochs": 3, "fine_tune_epochs": 1})
    paths = {"data": shapes_dir, "models": tmp_path / "models", "run_dir": tmp_path / "run"}
    state = _cancel_after_epoch(config, 2, **paths)
    assert repository.list_versions(paths["models"], "m") == []
    assert not list(paths["models"].glob("m/.staging-*"))
    assert (state["phase"], state["epoch"]) == (1, 2)
    assert (paths["run_dir"] / "checkpoints/head-last.weights.h5").is_file()  # phase 1

    result, events = _train_recording(config, **paths)
    assert result.version == 1
    assert min(events) == (1, 3)  # epochs 1 and 2 were not run again
    assert not (paths["run_dir"] / "checkpoints").exists()  # published: nothing to resume
    history = result.card["history"]
    assert [(h["phase"], h["epoch"]) for h in history] == [(1, 1), (1, 2), (1, 3), (2, 1)]
    assert history[:2] == state["history"]


def test_changed_config_does_not_reuse_checkpoints(tmp_path, shapes_dir):
    config = parse_config({**FAST, "head_epochs": 3, "fine_tune_epochs": 0, "augmentation": "none"})
    paths = {"data": shapes_dir, "models": tmp_path / "models", "run_dir": tmp_path / "run"}
    state = _cancel_after_epoch(config, 1, **paths)  # a checkpoint of epoch 1, first config
    assert (state["phase"], state["epoch"]) == (1, 1)
    other = parse_config({**FAST, "head_epochs": 2, "fine_tune_epochs": 0, "augmentation": "none"})
    result, events = _train_recording(other, **paths)
    assert result.version == 1
    assert min(events) == (1, 1)  # epoch 1 was trained again, not taken from the old checkpoint
    assert [(h["phase"], h["epoch"]) for h in result.card["history"]] == [(1, 1), (1, 2)]
