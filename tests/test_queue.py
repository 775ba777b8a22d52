"""The training queue against a real Redis and real worker processes."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis

from imgclf import registry, repository
from imgclf.demo_data import make_shapes_dataset
from imgclf.errors import ConfigError, Conflict, InvalidInput
from imgclf.jobs.service import cancel_job, celery_sender, submit_job
from imgclf.jobs.store import open_store
from imgclf.settings import Settings
from tests.workers import WorkerProcess, frozen, isolated_queue, wait_final, wait_for

JOB = {
    "image_size": 32,
    "weights": "none",
    "recipe": "fine_tune",  # the cheap recipe: these test the queue, not the recipe
    "batch_size": 16,
    "head_epochs": 2,
    "fine_tune_epochs": 1,
    "augmentation": "none",
    "learning_rate": 2e-3,
    "fine_tune_learning_rate": 1e-4,
}
# Enough epochs to act on a job mid-run; the tests hold it there by stopping its
# training process (tests.workers.frozen), so it need not be slow.
LONGER = {**JOB, "head_epochs": 6}


@pytest.fixture
def q(tmp_path, redis_url, shapes_dir):
    settings, env = isolated_queue(
        tmp_path, redis_url, [shapes_dir.parent, tmp_path], lease_seconds=4, janitor_interval=1
    )
    store = open_store(redis_url, settings.key_prefix)
    workers: list[WorkerProcess] = []

    def start_worker() -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path / f"worker{len(workers)}.log")
        workers.append(worker)
        return worker.wait_ready()

    def submit(**fields) -> dict:
        return submit_job(
            {**JOB, "data": str(shapes_dir), "name": "shapes", **fields},
            settings=settings,
            store=store,
            send=celery_sender(settings),
        )

    yield SimpleNamespace(
        settings=settings,
        store=store,
        submit=submit,
        env=env,
        start_worker=start_worker,
        workers=workers,
        models=tmp_path / "models",
        root=tmp_path,
        redis=redis.Redis.from_url(redis_url),
        queue=settings.queue,
    )
    for worker in workers:
        worker.stop()


def shuffled_labels_dataset(root: Path) -> Path:
    """train/ and val/ with random labels, test/ with true ones: a deliberately bad recipe."""
    source = make_shapes_dataset(root / "src", classes=3, per_class=30, size=48, seed=9)
    rng = random.Random(0)
    classes = ["circle", "square", "triangle"]
    for label in classes:
        files = sorted((source / label).iterdir())
        for i, path in enumerate(files):
            split = "test" if i < 8 else ("val" if i < 13 else "train")
            target = rng.choice(classes) if split != "test" else label
            (root / "bad" / split / target).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, root / "bad" / split / target / f"{label}-{path.name}")
    return root / "bad"


def test_submit_runs_publishes_and_gates_a_worse_candidate(q, tmp_path):
    q.start_worker()
    job = q.submit()
    assert job["status"] == "queued"
    done = wait_final(q.store, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["version"] == 1
    assert done["attempts"] == 1
    assert done["metrics"]["accuracy"] > 0.5
    assert done["diagnosis"]["summary"]
    assert done["promotion"]["decision"] == "promote"
    assert done["progress"] is not None and done["started_at"] and done["finished_at"]
    assert (q.models / "shapes/1/saved_model.pb").is_file()
    assert registry.aliases(q.models, "shapes") == {"stable": 1}

    bad = q.submit(data=str(shuffled_labels_dataset(tmp_path)))
    rejected = wait_final(q.store, bad["id"])
    assert rejected["status"] == "rejected", rejected["error"]
    comparison = rejected["promotion"]
    assert comparison["decision"] == "reject"
    assert comparison["stable_version"] == 1
    assert comparison["stable"]["accuracy"] > comparison["candidate"]["accuracy"]
    assert any("below stable" in r for r in comparison["reasons"])
    assert repository.list_versions(q.models, "shapes") == [1]
    assert registry.aliases(q.models, "shapes") == {"stable": 1}


def test_invalid_config_and_paths_are_refused_at_submit(q, tmp_path, shapes_dir):
    with pytest.raises(ConfigError, match="'learning_rate'"):
        q.submit(learning_rate=-1)
    with pytest.raises(ConfigError, match="'epochs': unknown field"):
        q.submit(epochs=3)
    with pytest.raises(InvalidInput, match="invalid model name"):
        q.submit(name="../etc")
    with pytest.raises(InvalidInput, match="outside the allowed data roots"):
        q.submit(data="/etc")
    with pytest.raises(InvalidInput, match="outside the allowed data roots"):
        q.submit(data=str(tmp_path / ".." / ".." / ".." / "etc"))
    (tmp_path / "escape").symlink_to("/usr/share")
    with pytest.raises(InvalidInput, match="outside the allowed data roots"):
        q.submit(data=str(tmp_path / "escape"))
    assert q.store.list() == []
    assert q.redis.llen(q.queue) == 0


def test_idempotent_resubmit_and_cancel_queued(q):
    first = q.submit(idempotency_key="nightly-2026-11-22")
    again = q.submit(idempotency_key="nightly-2026-11-22", head_epochs=5)
    assert again["id"] == first["id"]
    assert q.redis.llen(q.queue) == 1  # one message, not two
    cancelled = cancel_job(q.store, first["id"])
    assert cancelled["status"] == "cancelled"
    with pytest.raises(Conflict, match="already ended"):
        cancel_job(q.store, first["id"])
    q.start_worker()
    wait_for(q.store, first["id"], lambda r: q.redis.llen(q.queue) == 0, timeout=30)
    record = q.store.get(first["id"])
    assert record["status"] == "cancelled"
    assert record["attempts"] == 0  # it never ran
    assert repository.list_versions(q.models, "shapes") == []


def test_cancel_running_job_publishes_nothing(q):
    q.start_worker()
    job = q.submit(**LONGER)
    child = q.workers[0].training_pid(job["id"])
    wait_for(q.store, job["id"], lambda r: (r.get("progress") or {}).get("stage") == "train")
    run_dir = q.settings.runs_dir() / "jobs" / job["id"]
    with frozen(child):  # still training when the cancel lands
        assert (run_dir / "checkpoints").is_dir()
        requested = cancel_job(q.store, job["id"])
    assert requested["cancel_requested"] is True
    done = wait_final(q.store, job["id"], timeout=60)
    assert done["status"] == "cancelled"
    assert not list(run_dir.rglob("checkpoints"))  # a finished job is never resumed
    assert repository.list_versions(q.models, "shapes") == []
    assert not list(q.models.glob("shapes/.staging-*"))


def test_sigkill_mid_training_resumes_and_finishes_once(q):
    worker = q.start_worker()
    job = q.submit(**LONGER)
    child = worker.training_pid(job["id"])
    run_dir = q.settings.runs_dir() / "jobs" / job["id"]
    wait_for(
        q.store,
        job["id"],
        lambda r: (
            (r.get("progress") or {}).get("epoch", 0) >= 3
            and (run_dir / "checkpoints/state.json").is_file()
        ),
    )
    with frozen(child):  # killed while held mid-run
        before = json.loads((run_dir / "checkpoints/state.json").read_text())["history"]
        assert before
        worker.sigkill()
        assert q.store.get(job["id"])["status"] == "running"
    q.start_worker()
    done = wait_final(q.store, job["id"], timeout=400)  # resumed run: as on RabbitMQ
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 2
    assert repository.list_versions(q.models, "shapes") == [1]
    card = repository.read_model_card(q.models / "shapes/1")
    assert card["history"][: len(before)] == before  # resumed, epochs not run again
    assert sum(1 for h in card["history"] if h["phase"] == 1) <= LONGER["head_epochs"]


def test_two_jobs_for_one_model_get_distinct_versions(q):
    q.start_worker()
    q.start_worker()
    lenient = {"promotion_tolerance": 1.0, "max_recall_drop": 1.0}
    jobs = [q.submit(**lenient, seed=s) for s in (1, 2)]
    results = [wait_final(q.store, j["id"], timeout=300) for j in jobs]
    assert [r["status"] for r in results] == ["succeeded", "succeeded"], results
    assert sorted(r["version"] for r in results) == [1, 2]
    assert repository.list_versions(q.models, "shapes") == [1, 2]


def test_embedded_broker_without_redis(tmp_path, shapes_dir):
    from imgclf.settings import embedded_urls

    urls = embedded_urls(tmp_path / "state")
    values = {
        "model_dir": str(tmp_path / "models"),
        "work_dir": str(tmp_path / "runs"),
        "data_roots": str(shapes_dir.parent),
    }
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **urls,
        **{f"IMGCLF_{k.upper()}": v for k, v in values.items()},
    }
    settings = Settings(
        broker_url=urls["IMGCLF_BROKER_URL"], result_backend=urls["IMGCLF_RESULT_BACKEND"], **values
    )
    store = open_store(settings.result_backend)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    try:
        worker.wait_ready()
        job = submit_job(
            {**JOB, "data": str(shapes_dir), "name": "shapes"},
            settings=settings,
            store=store,
            send=celery_sender(settings),
        )
        done = wait_final(store, job["id"])
        assert done["status"] == "succeeded", done["error"]
        assert done["version"] == 1
        assert (tmp_path / "models/shapes/1/saved_model.pb").is_file()
        assert (tmp_path / "state/broker.sqlite").is_file()
    finally:
        worker.stop()
