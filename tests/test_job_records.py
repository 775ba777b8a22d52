"""Typed job records and progress events, the one renderer, and job-id prefixes."""

from __future__ import annotations

import pytest

from imgclf.errors import InvalidInput
from imgclf.jobs.progress import describe, status_line
from imgclf.jobs.records import JobRecord, ProgressEvent
from imgclf.jobs.store import JobNotFound, SqliteJobStore


def test_progress_events_render_phase_percent_metrics_and_eta():
    event = ProgressEvent(
        stage="train",
        phase=2,
        epoch=2,
        epochs=4,
        batch=5,
        steps=10,
        metrics={"loss": 0.5, "val_accuracy": 0.75, "lr": 0.1},
        eta_seconds=125,
    )
    assert event.fraction() == pytest.approx(15 / 40)
    line = status_line("abc", "running", "train pets", event)
    assert line == (
        "job abc running (train pets): phase 2 (fine-tune) epoch 2/4 batch 5/10 38% "
        "loss 0.500 val_accuracy 0.750 ETA 2m05s"
    )
    assert status_line("abc", "succeeded", "train pets", event) == "job abc succeeded (train pets)"
    trial = ProgressEvent(stage="export", trial="3", trials_done=2, trials_planned=5)
    assert status_line("abc", "running", "", trial) == (
        "job abc running: trial 3 (2/5 done), export"
    )


def test_records_keep_unknown_fields_and_old_records_still_read():
    record = JobRecord.model_validate(
        {"id": "x", "status": "running", "progress": {"stage": "evaluate"}, "new_field": 1}
    )
    assert record.progress.stage == "evaluate" and record.document()["new_field"] == 1
    assert describe(record) == "job x running (train): evaluate"
    with pytest.raises(ValueError):
        ProgressEvent.model_validate({"epoch": "first"})


def test_a_unique_prefix_names_a_job_like_git(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    for job_id in ("abcd1111", "abcd2222", "ffff0000"):
        store.create({"id": job_id, "status": "queued", "name": "m"}, None)
    assert store.get("ffff")["id"] == "ffff0000"
    assert store.get("abcd1")["id"] == "abcd1111"
    assert store.record("abcd2").id == "abcd2222"
    with pytest.raises(InvalidInput, match=r"matches 2 jobs .*abcd1111, abcd2222.*more characters"):
        store.get("abcd")
    with pytest.raises(JobNotFound):
        store.get("fff")  # shorter than MIN_PREFIX: only an exact id
    with pytest.raises(JobNotFound):
        store.get("0123")
