"""The Celery application, configured from Settings only. JSON only, never pickle.

`celery -A imgclf.worker ...` (or `-A imgclf.worker.celery_app`) finds `app` here: it is
built on first access from `Settings()` (the environment), with the tasks registered,
so the Celery CLI (`inspect`, `call`, `result`, `worker`, `events`) and Flower work
against the same broker, queue and result backend as `imgclf worker`.

Acknowledgement, per broker (why they differ: docs/design.md, "Queue semantics"):

- Redis and the embedded SQL broker: `acks_late`. The message is acknowledged when the
  job has a final status; a worker that dies leaves it unacknowledged and the broker
  redelivers it (Redis after `visibility_timeout`, which exceeds the longest job).
- RabbitMQ (`amqp://`): the message is acknowledged when the job starts. RabbitMQ closes
  the channel of a consumer holding an unacknowledged message longer than
  `consumer_timeout` (30 minutes by default; the per-queue `x-consumer-timeout` needs
  RabbitMQ 3.12+, Debian 12 ships 3.10), which a training job exceeds. Crash safety then
  comes from the job record: a running job holds a lease its worker renews, and the
  janitor of any live worker requeues a job whose lease lapsed; it resumes from its
  checkpoints. A redelivered duplicate finds the lease held and waits (`Busy`).
"""

from __future__ import annotations

import functools

from celery import Celery

from imgclf.settings import Settings


def is_redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "unix://"))


def is_amqp(url: str) -> bool:
    return url.startswith(("amqp://", "amqps://", "pyamqp://"))


def has_fanout(url: str) -> bool:
    """Remote control (`celery inspect`) and events need fan-out: Redis and RabbitMQ have
    it, the embedded SQL broker does not."""
    return is_redis(url) or is_amqp(url)


def celery_config(settings: Settings) -> dict:
    """The whole Celery configuration for `settings`."""
    from imgclf.jobs.service import KIND_TASKS

    fanout = has_fanout(settings.broker_url)
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # The task's result is the job's final summary (`celery result ID`); the full
        # record stays in the job store.
        "task_ignore_result": False,
        "task_track_started": True,
        "result_extended": True,
        "task_acks_late": not is_amqp(settings.broker_url),
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # The task only supervises a child process that trains, so one thread is enough
        # and the worker's main thread keeps answering `celery inspect` and heartbeats.
        "worker_pool": "threads",
        "worker_concurrency": 1,
        "task_default_queue": settings.queue,
        "task_routes": {name: {"queue": settings.queue} for name in KIND_TASKS.values()},
        "broker_connection_retry_on_startup": True,
        # Redis redelivers unacked tasks after this; it must exceed the longest job.
        # (The SQL transport passes these options to create_engine, which refuses them.)
        "broker_transport_options": (
            {"visibility_timeout": settings.redelivery_timeout()}
            if is_redis(settings.broker_url)
            else {}
        ),
        "worker_enable_remote_control": fanout,
        "worker_send_task_events": fanout,
        "task_send_sent_event": fanout,
        "worker_hijack_root_logger": False,
    }


def make_celery(settings: Settings) -> Celery:
    """A configured app without tasks: what submitters use to send by task name."""
    app = Celery("imgclf", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


def make_worker_app(settings: Settings) -> Celery:
    """A configured app with the tasks registered and the janitor started with the worker."""
    from imgclf.jobs.store import open_store
    from imgclf.worker.tasks import register_tasks

    app = make_celery(settings)
    register_tasks(app, settings, open_store(settings.result_backend, settings.key_prefix))
    return app


@functools.cache
def cli_app() -> Celery:
    """The app the `celery` command finds: Settings from the environment, built once.
    It is the process's current app, which Flower's result API relies on."""
    app = make_worker_app(Settings())
    app.set_current()
    return app


def __getattr__(name: str) -> Celery:
    # `celery -A imgclf.worker.celery_app` looks for `app`, then `celery`. Built lazily
    # so importing this module (submitters do) reads no environment.
    if name in ("app", "celery"):
        return cli_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
