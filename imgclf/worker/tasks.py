"""Celery tasks, by stable names. Thin: take the job id, run it, report.

One task per job kind (`imgclf.train`, `imgclf.search`, `imgclf.kfold`, `imgclf.audit`)
so deployments can route kinds to their own queues; all run the job the same way, and
the job's child process picks the work from the record's kind.

While the job runs, its progress is the task's state: `PROGRESS` in the result backend
(`celery result`, Flower's /api/task/result) with the progress event as meta, and a
`task-progress` event (Flower's task list and /api/task/info: state PROGRESS, the event
as JSON in `result`). The task's result is the job's final summary (`job_summary`).
"""

from __future__ import annotations

import json
import logging
import threading

from celery import Celery
from celery.signals import worker_ready

from imgclf.jobs.service import KIND_TASKS, task_for
from imgclf.jobs.store import JobNotFound, JobStore
from imgclf.settings import Settings
from imgclf.worker.metrics import JobMetrics
from imgclf.worker.runner import Busy, job_summary, requeue_orphans, run_job, send_unsent

log = logging.getLogger(__name__)
PROGRESS = "PROGRESS"


def register_tasks(app: Celery, settings: Settings, store: JobStore) -> None:
    metrics = JobMetrics()
    for task_name in KIND_TASKS.values():
        _register(app, task_name, settings, store, metrics)

    @worker_ready.connect(weak=False)
    def _on_ready(sender: object = None, **_: object) -> None:
        if getattr(sender, "app", None) is not app:
            return
        start_janitor(app, settings, store)
        if settings.worker_metrics_port is not None:
            port = metrics.serve(settings.host, settings.worker_metrics_port)
            log.info("job metrics on http://%s:%s/metrics", settings.host, port)


def _register(
    app: Celery, task_name: str, settings: Settings, store: JobStore, metrics: JobMetrics
) -> None:
    @app.task(name=task_name, bind=True, max_retries=None)
    def run(self, job_id: str) -> dict:
        def on_progress(progress: dict) -> None:
            self.update_state(state=PROGRESS, meta=progress)
            if self.app.conf.worker_send_task_events:
                self.send_event("task-progress", result=json.dumps(progress))

        try:
            record = run_job(
                job_id,
                settings,
                store,
                on_progress=on_progress,
                on_finished=metrics.on_finished,
            )
        except Busy:
            # Another live worker has it (a redelivered duplicate): look again later.
            raise self.retry(countdown=settings.lease_seconds) from None
        return job_summary(record)


def start_janitor(app: Celery, settings: Settings, store: JobStore) -> threading.Event:
    """Periodically requeue jobs whose worker died, and send jobs whose submitter died
    before sending them (any broker, embedded included)."""
    stop = threading.Event()

    def send(job_id: str) -> None:
        try:
            kind = store.get(job_id).get("kind") or "train"
        except JobNotFound:
            return
        app.send_task(task_for(kind), args=[job_id], queue=settings.queue)

    def loop() -> None:
        while not stop.wait(settings.janitor_interval):
            try:
                requeue_orphans(store, send)
                send_unsent(store, send, grace_seconds=settings.lease_seconds)
            except Exception:  # a broker/store hiccup must not kill the janitor
                log.exception("janitor pass failed")

    threading.Thread(target=loop, name="imgclf-janitor", daemon=True).start()
    return stop
