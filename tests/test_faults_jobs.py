"""Fault injection on job submission: the broker down during a submit, then the same
idempotency key retried; concurrent submits with one key. Real Redis for both the job
store and the broker."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid

import pytest
import redis

from imgclf.errors import InvalidInput, Unavailable
from imgclf.jobs.service import celery_sender, record_job, submit_job
from imgclf.jobs.store import RedisJobStore, open_store
from imgclf.settings import Settings

pytestmark = pytest.mark.faults


def _dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"  # nothing listens there once closed


@pytest.fixture
def setup(redis_url, shapes_dir, tmp_path):
    prefix = f"t{uuid.uuid4().hex[:8]}"
    queue = f"q{uuid.uuid4().hex[:8]}"
    live = Settings(
        broker_url=redis_url,
        result_backend=redis_url,
        data_roots=[shapes_dir.parent],
        queue=queue,
        key_prefix=prefix,
        model_dir=tmp_path / "models",
    )
    store = RedisJobStore(redis_url, prefix)
    broker = redis.Redis.from_url(redis_url)
    yield live, store, broker, {"name": "shapes", "data": str(shapes_dir), "weights": "none"}
    store.close()
    broker.close()


def _queued_job_ids(broker: redis.Redis, queue: str) -> list[str]:
    """Job ids of the task messages waiting in the broker's queue (kombu's Redis list)."""
    ids = []
    for raw in broker.lrange(queue, 0, -1):
        message = json.loads(raw)
        ids.append(message["headers"]["argsrepr"].strip("[]'\""))
    return ids


def test_a_job_the_broker_never_got_is_resubmitted_with_its_key(setup):
    live, store, broker, document = setup
    document = {**document, "idempotency_key": "nightly-1"}
    down = celery_sender(live.model_copy(update={"broker_url": _dead_url()}))
    with pytest.raises(Unavailable, match="same idempotency key resubmits"):
        submit_job(document, settings=live, store=store, send=down)
    (first,) = store.list()
    assert first["status"] == "failed" and first["unsent"] is True
    assert "could not queue the job" in first["error"]
    again = submit_job(document, settings=live, store=store, send=celery_sender(live))
    assert again["id"] == first["id"]
    assert again["status"] == "queued" and again["error"] is None
    assert _queued_job_ids(broker, live.queue) == [first["id"]]
    # A third submit returns the queued job and sends nothing more.
    third = submit_job(document, settings=live, store=store, send=celery_sender(live))
    assert third["id"] == first["id"]
    assert _queued_job_ids(broker, live.queue) == [first["id"]]


def test_concurrent_submits_with_one_key_all_get_the_one_job(setup):
    live, store, broker, document = setup
    document = {**document, "idempotency_key": "burst"}
    send = celery_sender(live)
    answers: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(20)

    def submit() -> None:
        try:
            start.wait(10)
            answers.append(submit_job(document, settings=live, store=store, send=send)["id"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(answers) == 20 and len(set(answers)) == 1
    assert _queued_job_ids(broker, live.queue) == answers[:1]


def test_a_nul_byte_in_the_data_path_is_a_400(setup):
    live, store, _, document = setup
    with pytest.raises(InvalidInput, match="NUL byte"):
        submit_job({**document, "data": "shapes\0x"}, settings=live, store=store, send=None)


def test_a_job_stored_but_never_sent_is_sent_by_a_janitor_and_runs_once(
    redis_url, shapes_dir, tmp_path
):
    from tests.workers import WorkerProcess, isolated_queue, wait_final

    settings, env = isolated_queue(
        tmp_path, redis_url, [shapes_dir.parent], lease_seconds=2, janitor_interval=0.5
    )
    store = open_store(redis_url, settings.key_prefix)
    # The submitter stored the job and died before sending its task.
    document = {"kind": "audit", "name": "shapes", "data": str(shapes_dir)}
    record, created = record_job(document, settings=settings, store=store)
    assert created and record["status"] == "queued" and record["sent_at"] is None
    # Within the grace period it is the submitter's to send: no janitor takes it.
    assert store.claim_unsent(record["id"], grace_seconds=3600) is None
    log = tmp_path / "worker.log"
    worker = WorkerProcess(env, log).wait_ready()
    try:
        final = wait_final(store, record["id"], timeout=120)
        assert final["status"] == "succeeded", final["error"]
        assert final["attempts"] == 1 and final["sent_at"]
        assert "stored but never queued" in log.read_text()
        # A late second message for the job (a submitter that was only slow) is
        # consumed without running the job again.
        celery_sender(settings)(record["id"], "audit")
        deadline = time.monotonic() + 60
        while log.read_text().count("] succeeded in") < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert log.read_text().count("] succeeded in") == 2, log.read_text()[-3000:]
        again = store.get(record["id"])
        assert again["attempts"] == 1 and again["finished_at"] == final["finished_at"]
    finally:
        worker.stop()
        store.close()
