"""The Celery application, configured from Settings only. JSON only, never pickle."""

from __future__ import annotations

from celery import Celery

from imgclf.settings import Settings


def is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def make_celery(settings: Settings) -> Celery:
    app = Celery("imgclf", broker=settings.broker_url, backend=settings.result_backend)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_ignore_result=True,  # job records live in the job store, not in Celery results
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        task_default_queue=settings.queue,
        broker_connection_retry_on_startup=True,
        # Redis redelivers unacked tasks after this; it must exceed the longest job.
        # (The SQL transport passes these options to create_engine, which refuses them.)
        broker_transport_options=(
            {"visibility_timeout": settings.redelivery_timeout()}
            if is_redis(settings.broker_url)
            else {}
        ),
        # Remote control and events need fan-out, which the embedded SQL broker lacks.
        worker_enable_remote_control=is_redis(settings.broker_url),
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    return app
