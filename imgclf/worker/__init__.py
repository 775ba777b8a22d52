"""The Celery worker. The worker process never imports TensorFlow: each job runs in a
fresh child process (`imgclf.worker.job_process`), so there is no fork after TF is
loaded and no memory carried from one job to the next.

`celery -A imgclf.worker ...` finds the app here (`app`, built from the environment on
first access; see `imgclf.worker.celery_app`).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from imgclf.worker.celery_app import cli_app

        return cli_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
