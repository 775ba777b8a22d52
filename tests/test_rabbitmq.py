"""RabbitMQ as the broker (amqp://): the same jobs, remote control, and crash safety.

The message is acknowledged when the job starts (RabbitMQ's consumer_timeout would close
the channel of a job holding it longer; see imgclf.worker.celery_app): a worker killed
mid-job leaves nothing to redeliver, and the job-record lease and janitor requeue it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from kombu import Connection

from imgclf.jobs.service import celery_sender, submit_job
from imgclf.jobs.store import open_store
from imgclf.worker.celery_app import celery_config
from tests.conftest import FAST
from tests.workers import WorkerProcess, frozen, isolated_queue, wait_final, wait_for

# The shared fast recipe (32 px, cached head features): the job is held mid-run by
# stopping its training process, so it need not be slow to be looked at.
JOB = {**FAST, "head_epochs": 3, "fine_tune_epochs": 1, "augmentation": "none"}


def ready_messages(url: str, queue: str) -> int:
    with Connection(url) as conn:
        _, count, _ = conn.default_channel.queue_declare(queue, passive=True)
        return count


@pytest.fixture
def rabbit(tmp_path, redis_url, amqp_url, shapes_dir):
    settings, env = isolated_queue(
        tmp_path,
        redis_url,
        [shapes_dir.parent],
        broker_url=amqp_url,
        lease_seconds=4,
        janitor_interval=1,
    )
    workers: list[WorkerProcess] = []

    def start_worker() -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path / f"worker{len(workers)}.log")
        workers.append(worker)
        return worker.wait_ready()

    yield settings, env, start_worker
    for worker in workers:
        worker.stop()
    with Connection(amqp_url) as conn:
        conn.default_channel.queue_delete(settings.queue)


def test_amqp_config_acks_at_start_and_keeps_json_only(amqp_url, redis_url):
    from imgclf.settings import Settings

    config = celery_config(Settings(broker_url=amqp_url, result_backend=redis_url))
    assert config["task_acks_late"] is False
    assert config["worker_send_task_events"] and config["worker_enable_remote_control"]
    assert config["accept_content"] == ["json"] and config["task_serializer"] == "json"
    redis_config = celery_config(Settings(broker_url=redis_url, result_backend=redis_url))
    assert redis_config["task_acks_late"] is True


def test_job_over_rabbitmq_survives_a_killed_worker(
    rabbit, redis_url, amqp_url, shapes_dir, request
):
    settings, env, start_worker = rabbit
    store = open_store(redis_url, settings.key_prefix)
    request.addfinalizer(store.close)
    worker = start_worker()
    job = submit_job(
        {**JOB, "data": str(shapes_dir), "name": "shapes"},
        settings=settings,
        store=store,
        send=celery_sender(settings),
    )
    child = worker.training_pid(job["id"])
    wait_for(store, job["id"], lambda r: (r.get("progress") or {}).get("epoch", 0) >= 1)
    with frozen(child):  # killed below while held after its first epoch
        active = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "imgclf.worker", "inspect", "active"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert job["id"] in active.stdout, active.stdout + active.stderr
        assert ready_messages(amqp_url, settings.queue) == 0

        worker.sigkill()  # the training process dies with it
        # Acknowledged at start: nothing for RabbitMQ to redeliver, nothing held past
        # consumer_timeout. The record still says running, under a lease that lapses.
        assert ready_messages(amqp_url, settings.queue) == 0
        assert store.get(job["id"])["status"] == "running"

    start_worker()  # its janitor requeues the job once the lease lapsed
    done = wait_final(store, job["id"], timeout=400)
    assert done["status"] in ("succeeded", "rejected"), done["error"]
    assert done["attempts"] == 2
