"""`imgclf worker`: one Celery worker that runs one training job at a time."""

from __future__ import annotations

import os
import socket

from imgclf.jobs.store import open_store
from imgclf.settings import Settings
from imgclf.worker.celery_app import is_redis, make_celery
from imgclf.worker.tasks import register_tasks, start_janitor


def run_worker(settings: Settings, *, loglevel: str = "INFO") -> None:
    app = make_celery(settings)
    store = open_store(settings.result_backend, settings.key_prefix)
    register_tasks(app, settings, store)
    start_janitor(app, settings, store)
    argv = [
        "worker",
        "--pool=solo",  # the job runs in a child process; the worker itself stays light
        "--concurrency=1",
        f"--queues={settings.queue}",
        f"--loglevel={loglevel}",
        f"--hostname=imgclf-{os.getpid()}@{socket.gethostname()}",
    ]
    if not is_redis(settings.broker_url):
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    app.worker_main(argv)
