"""Submitting, reading and cancelling jobs: the functions the CLI, the server and the
client all call, so every entry point validates and records jobs the same way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from imgclf.errors import Conflict, InvalidInput, Unavailable
from imgclf.jobs.records import JobRecord
from imgclf.jobs.spec import TERMINAL, parse_job, resolve_data_path
from imgclf.jobs.store import JobStore, new_job_id, now_iso
from imgclf.settings import Settings

TRAIN_TASK = "imgclf.train"
SEARCH_TASK = "imgclf.search"
KFOLD_TASK = "imgclf.kfold"
AUDIT_TASK = "imgclf.audit"
# Each kind has its own stable task name, so deployments can route kinds to their own
# queues (a search is long; it may belong on a GPU queue).
KIND_TASKS = {
    "train": TRAIN_TASK,
    "search": SEARCH_TASK,
    "kfold": KFOLD_TASK,
    "audit": AUDIT_TASK,
}

# send(job_id, kind): queue the job's task. The record is stored before it is called.
Sender = Callable[[str, str], None]


def submit_job(
    document: dict[str, Any], *, settings: Settings, store: JobStore, send: Sender
) -> dict[str, Any]:
    """Validate, record and queue a job. Returns its record (the existing one for a
    repeated idempotency key). Bad documents raise before anything is stored."""
    record, created = record_job(document, settings=settings, store=store)
    if not created:
        # The same key again. A job whose task never reached the broker is taken back
        # and sent now; any other (or one a concurrent retry took first) is returned.
        requeued = store.requeue_unsent(record["id"])
        if requeued is None:
            return store.get(record["id"])
        record = requeued
    _send(store, send, record)
    return record


def record_job(
    document: dict[str, Any], *, settings: Settings, store: JobStore
) -> tuple[dict[str, Any], bool]:
    """Validate and store a queued job, not yet sent (`sent_at` None until it is: if the
    submitter dies before sending, a worker's janitor sends it; see
    `imgclf.worker.runner.send_unsent`). Returns the record and whether it is new."""
    spec = parse_job(document)
    resolve_data_path(spec.data, settings.data_roots)
    job_id = new_job_id()
    record = JobRecord(
        id=job_id,
        kind=spec.kind,
        status="queued",
        name=spec.name,
        data=spec.data,
        idempotency_key=spec.idempotency_key,
        spec=spec.model_dump(mode="json"),
        created_at=now_iso(),
    ).document()
    return store.create(record, spec.idempotency_key)


def _send(store: JobStore, send: Sender, record: dict[str, Any]) -> None:
    """Queue the job's task; if the broker is down, mark it resubmittable and say so."""
    try:
        send(record["id"], record["kind"])
    except Exception as exc:  # broker down: no phantom "queued" job, and the key stays usable
        store.mark_unsent(record["id"], f"could not queue the job: {exc}")
        raise Unavailable(
            f"the job queue is unreachable ({exc}); try again (the same idempotency key "
            "resubmits this job)"
        ) from None
    store.mark_sent(record["id"])


def cancel_job(store: JobStore, job_id: str) -> dict[str, Any]:
    """A queued job never runs; a running one stops at its next batch and publishes nothing."""
    job_id = store.get(job_id)["id"]  # a unique prefix names the job too
    record = store.transition(
        job_id, ["queued"], "cancelled", finished_at=now_iso(), error="cancelled before it started"
    )
    if record is not None:
        return record
    record = store.get(job_id)
    if record["status"] == "running":
        return store.update(job_id, cancel_requested=True)
    if record["status"] in TERMINAL:
        raise Conflict(f"job {job_id} already ended ({record['status']})")
    return record


def task_for(kind: str) -> str:
    """The Celery task name that runs jobs of `kind`."""
    try:
        return KIND_TASKS[kind]
    except KeyError:
        raise InvalidInput(f"unknown job kind {kind!r}; known: {', '.join(KIND_TASKS)}") from None


def celery_sender(settings: Settings) -> Sender:
    """Queue by task name, so submitters never import the worker (or TensorFlow)."""
    from imgclf.worker.celery_app import make_celery

    app = make_celery(settings)

    def send(job_id: str, kind: str) -> None:
        app.send_task(task_for(kind), args=[job_id], queue=settings.queue)

    return send
