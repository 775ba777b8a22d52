"""`imgclf worker`: one Celery worker that runs one training job at a time."""

from __future__ import annotations

import os
import socket

from imgclf.settings import Settings
from imgclf.worker.celery_app import has_fanout, make_worker_app


def run_worker(settings: Settings, *, loglevel: str = "INFO") -> None:
    app = make_worker_app(settings)
    argv = [
        "worker",
        # One thread supervises the job's child process; the main thread stays free
        # for remote control, events and heartbeats.
        "--pool=threads",
        "--concurrency=1",
        f"--queues={settings.queue}",
        f"--loglevel={loglevel}",
        f"--hostname=imgclf-{os.getpid()}@{socket.gethostname()}",
    ]
    if not has_fanout(settings.broker_url):
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    app.worker_main(argv)
