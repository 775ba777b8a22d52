"""Fault injection on job submission: the broker down during a submit, then the same
idempotency key retried; concurrent submits with one key. Real Redis for both the job
store and the broker."""

from __future__ import annotations

import json
import socket
import threading
import uuid

import pytest
import redis

from imgclf.errors import InvalidInput, Unavailable
from imgclf.jobs.service import celery_sender, submit_job
from imgclf.jobs.store import RedisJobStore
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
