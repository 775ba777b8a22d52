"""Hyperparameter search: spaces are checked at submission, the Keras Tuner loop ranks,
budgets and resumes, and a real worker runs a small search end to end.

The loop tests score trials with a cheap made-up objective (no training), so they pin
the bookkeeping; the tests at the end train real (tiny) models.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import get_args

import pytest

from imgclf import registry, repository
from imgclf.errors import Cancelled, ConfigError
from imgclf.jobs.service import KIND_TASKS, submit_job, task_for
from imgclf.jobs.spec import JobKind, SearchSpace, parse_job
from imgclf.jobs.store import SqliteJobStore, open_store
from imgclf.settings import Settings
from imgclf.trainer.search import (
    SearchFailed,
    hyperband_trials,
    run_search,
    search_loop,
    split_epochs,
)
from imgclf.trainer.training import Hooks
from tests.workers import WorkerProcess, isolated_queue

# Head-only trials on cached features: a few seconds each on 2 CPU cores.
TINY = {
    "image_size": 32,
    "weights": "none",
    # head-only on cached features keeps trials cheap; from_scratch is tested in test_recipe.py
    "recipe": "fine_tune",
    "batch_size": 16,
    "head_epochs": 2,
    "fine_tune_epochs": 0,
    "augmentation": "none",
    "learning_rate": 2e-3,
    "early_stopping_patience": 0,
}
SPACE = {
    "learning_rate": {"min": 1e-3, "max": 2e-2, "log": True},
    "dropout": {"min": 0, "max": 0.3},
}


def job(**fields) -> dict:
    """A search job document; a field given as None is left out."""
    document = {"name": "shapes", "data": "shapes", "kind": "search", **TINY}
    document.update({"search_space": SPACE, **fields})
    return {k: v for k, v in document.items() if v is not None}


def lr_distance(trial_id: str, config, trial_dir: Path) -> dict[str, float]:
    """A made-up objective: best at learning_rate 3e-3."""
    loss = abs(math.log10(config.learning_rate) - math.log10(3e-3))
    return {"val_loss": loss, "val_accuracy": 1 - loss}


# --- submission ---------------------------------------------------------------------


@pytest.fixture
def local(tmp_path, shapes_dir):
    sent: list[tuple[str, str]] = []
    settings = Settings(data_roots=[shapes_dir.parent], model_dir=tmp_path / "models")
    store = SqliteJobStore(tmp_path / "jobs.sqlite")

    def submit(**fields) -> dict:
        document = {**job(**fields), "data": str(shapes_dir)}
        return submit_job(document, settings=settings, store=store, send=lambda *a: sent.append(a))

    return SimpleNamespace(submit=submit, store=store, sent=sent)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"search_space": {"learning_rate": {"min": 0.1, "max": 0.001}}},
            ["'search_space.learning_rate'", "min 0.1 is greater than max 0.001"],
        ),
        (
            {"search_space": {"augmentation": ["light", "extreme"]}},
            ["'search_space.augmentation.1'", "'extreme'", "'standard'"],
        ),
        ({"tuner": "grid"}, ["'tuner'", "'grid'", "'hyperband'", "'random'", "'bayesian'"]),
        ({"objective": "accuracy"}, ["'objective'", "'val_loss'", "'val_accuracy'"]),
        (
            {"search_space": {"dropout": {"min": 0.1, "max": 0.95}}},
            ["'search_space.dropout'", "max 0.95 is not a valid dropout", "0.9"],
        ),
        (
            {"search_space": {"l2": {"min": 0, "max": 0.01, "log": True}}},
            ["'search_space.l2'", "log sampling needs min > 0"],
        ),
        (
            {"search_space": {"dropuot": {"min": 0, "max": 0.1}}},
            ["'search_space.dropuot': unknown field", "known fields: augmentation"],
        ),
        (
            {"search_space": {"batch_size": [16, 0]}},
            ["'search_space.batch_size.1'", "greater than or equal to 1"],
        ),
        ({"search_space": {"batch_size": []}}, ["'search_space.batch_size'", "empty"]),
        ({"search_space": {}}, ["search_space searches nothing"]),
        (
            {"search_space": {"fine_tune_from": ["conv4", "conv5"]}},
            ["fine_tune_from", "phase 2 never runs"],
        ),
        ({"max_trials": 0}, ["'max_trials'", "greater than or equal to 1"]),
        ({"max_search_seconds": 1}, ["'max_search_seconds'", "greater than or equal to 10"]),
        (
            {"kind": "train", "search_space": None, "tuner": "random"},
            ["'tuner' applies only to jobs of kind 'search'"],
        ),
        (
            {"kind": "train", "search_space": None, "then_train": True},
            ["'then_train' applies only to jobs of kind 'search' or 'kfold'"],
        ),
    ],
)
def test_invalid_search_jobs_are_refused_at_submission(local, fields, expected):
    with pytest.raises(ConfigError) as info:
        local.submit(**fields)
    for part in expected:
        assert part in str(info.value)
    assert local.store.list() == []
    assert local.sent == []


def test_each_kind_is_sent_to_its_own_task(local):
    assert set(KIND_TASKS) == set(get_args(JobKind))
    search = local.submit()
    kfold = local.submit(kind="kfold", search_space=None, folds=3)
    train = local.submit(kind="train", search_space=None)
    assert local.sent == [(search["id"], "search"), (kfold["id"], "kfold"), (train["id"], "train")]
    assert [task_for(kind) for _, kind in local.sent] == [
        "imgclf.search",
        "imgclf.kfold",
        "imgclf.train",
    ]
    assert search["kind"] == "search" and search["result"] is None
    assert search["spec"]["search_space"]["dropout"] == {"min": 0.0, "max": 0.3, "log": False}


def test_every_search_and_kfold_field_is_documented():
    from imgclf.config import TrainConfig
    from imgclf.jobs.spec import DEFAULT_SPACE, KIND_FIELDS, JobSpec

    docs = Path(__file__).resolve().parent.parent / "docs"
    assert set(KIND_FIELDS) | {"kind"} <= set(JobSpec.model_fields) - set(TrainConfig.model_fields)
    for name, kinds in KIND_FIELDS.items():
        page = "audit.md" if kinds == ("audit",) else "experiments.md"
        assert f"| `{name}` |" in (docs / page).read_text(), name
    text = (docs / "experiments.md").read_text()
    for name in DEFAULT_SPACE.searched():
        assert f"  {name}:" in text, name


def test_a_job_without_a_space_searches_the_default_one():
    spec = parse_job({"name": "m", "data": "d", "kind": "search"})
    assert spec.search_space.searched() == list(SearchSpace.model_fields)
    assert spec.search_space.learning_rate.log
    narrow = parse_job(job())
    assert narrow.search_space.searched() == ["learning_rate", "dropout"]
    assert parse_job(narrow.model_dump(mode="json")) == narrow  # the worker re-reads it


# --- the Keras Tuner loop with a made-up objective -----------------------------------


def test_split_epochs_follows_the_jobs_phase_ratio():
    config = parse_job(job(head_epochs=10, fine_tune_epochs=10)).train_config()
    assert split_epochs(20, config) == (10, 10)
    assert split_epochs(3, config) == (2, 1)
    assert split_epochs(1, config) == (1, 0)
    head_only = parse_job(job()).train_config()
    assert split_epochs(5, head_only) == (5, 0)


def test_trials_are_ranked_and_the_best_config_keeps_the_job_recipe(tmp_path):
    spec = parse_job(job(tuner="random", max_trials=5, trial_epochs=1, head_epochs=3))
    updates = []
    found = search_loop(spec, tmp_path, lr_distance, on_update=updates.append)
    rows = found.result["trials"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["objective"] for r in rows] == sorted(r["objective"] for r in rows)
    assert all(r["status"] == "completed" and r["epochs"] == 1 for r in rows)
    best = rows[0]["hyperparameters"]
    assert set(best) == {"learning_rate", "dropout"}
    assert found.best_config.learning_rate == best["learning_rate"]
    assert found.best_config.dropout == best["dropout"]
    assert found.best_config.head_epochs == 3  # the job's recipe, not the trial budget
    assert found.result["completed"] == 5 and found.result["stopped"] == "finished"
    assert len(updates) >= 6  # once before the first trial, then after each one
    assert json.loads(found.path.read_text())["best"]["trial_id"] == rows[0]["trial_id"]


def test_val_accuracy_ranks_the_highest_first(tmp_path):
    spec = parse_job(job(tuner="random", max_trials=4, objective="val_accuracy"))
    rows = search_loop(spec, tmp_path, lr_distance).result["trials"]
    assert [r["objective"] for r in rows] == sorted((r["objective"] for r in rows), reverse=True)


def test_hyperband_runs_its_brackets_with_growing_budgets(tmp_path):
    spec = parse_job(job(trial_epochs=4, head_epochs=4, fine_tune_epochs=2))
    seen: list[tuple[int, int]] = []

    def run(trial_id, config, trial_dir):
        seen.append((config.head_epochs, config.fine_tune_epochs))
        return lr_distance(trial_id, config, trial_dir)

    found = search_loop(spec, tmp_path, run)
    assert found.result["planned_trials"] == hyperband_trials(4, 3) == len(seen) == 10
    assert set(seen) == {(1, 1), (3, 1)}  # 2 then 4 epochs, shared 2:1 like the job's phases
    assert {r["epochs"] for r in found.result["trials"]} == {2, 4}


def test_wall_time_budget_stops_starting_trials(tmp_path):
    spec = parse_job(job(tuner="random", max_trials=10, max_search_seconds=10))
    now = {"t": 0.0}

    def run(trial_id, config, trial_dir):
        now["t"] += 6.0  # every trial takes 6 s
        return lr_distance(trial_id, config, trial_dir)

    found = search_loop(spec, tmp_path, run, clock=lambda: now["t"])
    assert found.result["completed"] == 2  # started at 0 s and 6 s; none at 12 s
    assert found.result["stopped"] == "max_search_seconds"


def test_a_failing_config_is_recorded_and_the_search_goes_on(tmp_path):
    spec = parse_job(job(tuner="random", max_trials=3))

    def run(trial_id, config, trial_dir):
        if trial_id == "1":
            raise FloatingPointError("loss became NaN")
        return lr_distance(trial_id, config, trial_dir)

    rows = search_loop(spec, tmp_path, run).result["trials"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert [(r["trial_id"], r["rank"]) for r in failed] == [("1", None)]
    assert "loss became NaN" in failed[0]["error"]
    assert [r["rank"] for r in rows if r["status"] == "completed"] == [1, 2]
    with pytest.raises(SearchFailed, match="no trial finished"):
        search_loop(
            parse_job(job(tuner="random", max_trials=2)),
            tmp_path / "all-fail",
            lambda *a: 1 / 0,
        )


def test_interrupted_loop_retries_only_the_unfinished_trial(tmp_path):
    spec = parse_job(job(tuner="random", max_trials=3))
    first: list[tuple[str, float]] = []

    def interrupted(trial_id, config, trial_dir):
        first.append((trial_id, config.learning_rate))
        if trial_id == "1":
            raise Cancelled("worker went away")
        return lr_distance(trial_id, config, trial_dir)

    with pytest.raises(Cancelled):
        search_loop(spec, tmp_path, interrupted)
    second: list[tuple[str, float]] = []

    def resumed(trial_id, config, trial_dir):
        second.append((trial_id, config.learning_rate))
        return lr_distance(trial_id, config, trial_dir)

    found = search_loop(spec, tmp_path, resumed)
    assert [t for t, _ in second] == ["1", "2"]  # trial 0 was not run again
    assert second[0] == first[1]  # the interrupted trial is retried with its own values
    assert found.result["completed"] == 3


def test_bayesian_optimization_runs(tmp_path):
    """keras-tuner[bayesian] (scipy, scikit-learn) is a dependency, so this always runs."""
    spec = parse_job(job(tuner="bayesian", max_trials=3))
    assert search_loop(spec, tmp_path, lr_distance).result["completed"] == 3


# --- real training --------------------------------------------------------------------


def test_interrupted_search_resumes_without_rerunning_finished_trials(tmp_path, shapes_dir):
    spec = parse_job(job(tuner="random", max_trials=3, data=str(shapes_dir)))
    first_trials: list[str] = []

    def stop_at_second_trial() -> bool:
        return "1" in first_trials

    with pytest.raises(Cancelled):
        run_search(
            spec,
            data=shapes_dir,
            run_dir=tmp_path,
            hooks=Hooks(
                on_progress=lambda e: first_trials.append(e["trial"]),
                should_stop=stop_at_second_trial,
            ),
        )
    trial0 = tmp_path / "tuner/search/trial_0/result.json"
    saved = trial0.read_text()
    assert not (tmp_path / "tuner/search/trial_1/result.json").exists()
    assert not (tmp_path / "tuner/search/trial_0/run/checkpoints").exists()

    second_trials: list[str] = []
    found = run_search(
        spec,
        data=shapes_dir,
        run_dir=tmp_path,
        hooks=Hooks(on_progress=lambda e: second_trials.append(e["trial"])),
    )
    assert set(second_trials) == {"1", "2"}  # trial 0 was not trained again
    assert trial0.read_text() == saved
    rows = found.result["trials"]
    assert sorted(r["trial_id"] for r in rows) == ["0", "1", "2"]
    assert all(r["status"] == "completed" and 0 <= r["val_accuracy"] <= 1 for r in rows)
    assert not list((tmp_path / "tuner/search").glob("trial_*/run/checkpoints"))
    assert [r["val_loss"] for r in rows] == sorted(r["val_loss"] for r in rows)
    assert (
        found.result["best_config"]["learning_rate"] == rows[0]["hyperparameters"]["learning_rate"]
    )


@pytest.fixture
def queue(tmp_path, redis_url, shapes_dir):
    """A real worker on its own queue and key prefix, against the test Redis."""
    settings, env = isolated_queue(tmp_path, redis_url, [shapes_dir.parent])
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        yield SimpleNamespace(
            env=env, store=open_store(redis_url, settings.key_prefix), models=settings.model_dir
        )
    finally:
        worker.stop()


def test_search_command_ranks_trials_and_trains_the_best(queue, tmp_path, shapes_dir):
    (tmp_path / "search.json").write_text(json.dumps(job(name=None, data=None, kind=None)))
    command = [sys.executable, "-m", "imgclf.cli", "search", "--data", str(shapes_dir)]
    options = ["--name", "shapes", "--config", str(tmp_path / "search.json"), "--follow"]
    budget = ["--max-trials", "3", "--trial-epochs", "2", "--then-train"]
    shown = subprocess.run(
        command + options + budget, env=queue.env, capture_output=True, text=True, timeout=300
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    job_id = shown.stdout.split()[1]
    done = queue.store.get(job_id)
    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    assert result["tuner"] == "hyperband" and result["completed"] == 3
    rows = result["trials"]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert [r["objective"] for r in rows] == sorted(r["objective"] for r in rows)
    assert rows[0]["objective"] == pytest.approx(rows[0]["val_loss"], abs=1e-6)
    assert done["progress"]["final"] is True  # the last thing it did: train the best config
    # The best config went through the normal path: report, parity, gate, stable label.
    assert done["version"] == 1 and done["promotion"]["decision"] == "promote"
    assert registry.aliases(queue.models, "shapes") == {"stable": 1}
    card = repository.read_model_card(queue.models / "shapes/1")
    assert card["config"] == result["best_config"]
    assert card["config"]["learning_rate"] == rows[0]["hyperparameters"]["learning_rate"]
    assert card["parity"]["passed"]
    # What the person at the terminal saw: progress, the ranked table, the outcome.
    assert "trial 0 (0/3 done)" in shown.stderr
    lines = shown.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["rank", "trial"])
    assert [line.split()[1] for line in lines[header + 1 : header + 4]] == [
        r["trial_id"] for r in rows
    ]
    assert "best config: learning_rate=" in shown.stdout and "version 1" in shown.stdout


def test_search_command_refuses_a_bad_space_before_queueing(tmp_path, shapes_dir, capsys):
    from imgclf.cli import main

    bad = '{"learning_rate": {"min": 0.1, "max": 0.01}}'
    status = main(
        ["search", "--data", str(shapes_dir), "--name", "m", "--set", f"search_space={bad}"]
    )
    assert status == 2
    assert "'search_space.learning_rate': min 0.1 is greater than max 0.01" in (
        capsys.readouterr().err
    )


def test_every_kind_has_a_task_and_the_janitor_requeues_by_kind(tmp_path):
    from imgclf.worker.celery_app import make_celery
    from imgclf.worker.tasks import register_tasks, start_janitor

    settings = Settings(
        broker_url="memory://", result_backend="db+sqlite:///unused", janitor_interval=0.05
    )
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    app = make_celery(settings)
    register_tasks(app, settings, store)
    assert set(KIND_TASKS.values()) <= set(app.tasks)

    for job_id, kind in (("a", "search"), ("b", "kfold"), ("c", "train")):
        store.create({"id": job_id, "kind": kind, "status": "running"}, None)
    sent: list[tuple[str, list]] = []
    fake = SimpleNamespace(send_task=lambda name, args, queue: sent.append((name, args)))
    stop = start_janitor(fake, settings, store)
    try:
        deadline = time.monotonic() + 10
        while len(sent) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
    assert sorted(sent) == [
        ("imgclf.kfold", ["b"]),
        ("imgclf.search", ["a"]),
        ("imgclf.train", ["c"]),
    ]
    assert {store.get(i)["status"] for i in "abc"} == {"queued"}
