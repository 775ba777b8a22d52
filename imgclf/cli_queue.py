"""`imgclf submit | jobs | cancel | worker`: the queue side of the command line."""

from __future__ import annotations

import argparse
import sys
import time

from imgclf.cli_errors import positive_int
from imgclf.cli_json import emit_json
from imgclf.cli_progress import (
    POLL_S,
    describe_progress,
    follow,
    no_worker_hint,
    print_record,
)
from imgclf.errors import InvalidInput
from imgclf.jobs.records import JobRecord
from imgclf.jobs.spec import TERMINAL
from imgclf.settings import Settings

__all__ = ["follow", "print_record"]  # demo.py and cli_experiments show jobs with these


def _store(settings: Settings):
    from imgclf.jobs.store import open_store

    return open_store(settings.result_backend, settings.key_prefix)


def workers_listening(settings: Settings, timeout: float = 1.0) -> list[str] | None:
    """Names of the workers consuming our queue (Celery's remote control, `timeout`
    seconds); None when the broker cannot tell (the embedded SQL broker has no fan-out)."""
    from imgclf.worker.celery_app import is_redis, make_celery

    if not is_redis(settings.broker_url):
        return None
    app = make_celery(settings)
    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception:  # the job is queued already: not knowing must not fail the command
        return None
    finally:
        app.close()
    return sorted(
        worker
        for worker, queues in replies.items()
        if any(q.get("name") == settings.queue for q in queues or [])
    )


def say_who_listens(settings: Settings) -> None:
    """After queueing: whether any worker will pick the job up, and how to start one."""
    workers = workers_listening(settings)
    if workers is None:
        return
    if workers:
        print(f"{len(workers)} worker(s) listening on queue {settings.queue!r}", file=sys.stderr)
    else:
        print(f"imgclf: warning: {no_worker_hint(settings.queue)}", file=sys.stderr)


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    from imgclf.config import load_config_file, parse_overrides
    from imgclf.jobs.service import celery_sender, submit_job

    document = load_config_file(args.config) if args.config else {}
    document.update(parse_overrides(args.set or []))
    document.update({"name": args.name, "data": args.data})
    if args.idempotency_key:
        document["idempotency_key"] = args.idempotency_key
    store = _store(settings)
    record = submit_job(document, settings=settings, store=store, send=celery_sender(settings))
    if args.json and not args.follow:
        emit_json(record)
        return 0
    print(f"job {record['id']} {record['status']}")
    say_who_listens(settings)
    if not args.follow:
        return 0
    return _follow_to_end(store, record["id"], settings, args.json)


def _follow_to_end(store, job_id: str, settings: Settings, as_json: bool) -> int:
    final = follow(store, job_id, queue=settings.queue)
    if as_json:
        emit_json(final)
    else:
        print_record(final)
    return 0 if final["status"] == "succeeded" else 1


def cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    if args.id:
        record = store.get(args.id)
        if args.follow:
            return _follow_to_end(store, record["id"], settings, args.json)
        if args.json:
            emit_json(record)
        else:
            print_record(record)
        return 0
    if args.follow:
        raise InvalidInput("--follow needs a job id: imgclf jobs ID --follow")
    records = store.list(args.limit)
    if args.json:
        emit_json(records)
        return 0
    for document in records:
        r = JobRecord.model_validate(document)
        version = "" if r.version is None else f"v{r.version}"
        progress = ""
        if r.status == "running" and r.progress is not None:
            progress = describe_progress(r.progress)
        print(
            f"{r.id[:12]}  {r.status:<9}  {r.kind:<6} {r.name:<20} {version:<5} "
            f"{r.created_at}  {progress}".rstrip()
        )
    if not records:
        print("no jobs")
    return 0


def cmd_logs(args: argparse.Namespace, settings: Settings) -> int:
    """Print the job's log (the training process's output), and with --follow keep going."""
    from imgclf.jobs.logs import read_job_log

    store = _store(settings)
    offset = 0
    while True:
        chunk = read_job_log(settings, store, args.id, offset)
        sys.stdout.write(chunk["text"])
        sys.stdout.flush()
        offset = chunk["next_offset"]
        if chunk["text"]:
            continue  # more may be there already
        if not args.follow or chunk["status"] in TERMINAL:
            break
        time.sleep(POLL_S)
    if offset == 0:
        status = chunk["status"]
        where = "yet: no worker has started it" if status == "queued" else "(no output kept)"
        print(f"imgclf: job {chunk['id']} has no log {where}", file=sys.stderr)
        return 0 if status == "queued" else 1
    return 0


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from imgclf.jobs.service import cancel_job

    record = cancel_job(_store(settings), args.id)
    if args.json:
        emit_json(record)
        return 0
    state = "cancel requested" if record["status"] == "running" else record["status"]
    print(f"job {record['id']}: {state}")
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from imgclf.worker.main import run_worker

    run_worker(settings, loglevel=args.loglevel)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    submit = sub.add_parser("submit", help="queue a training job for a worker")
    submit.add_argument("--data", required=True, help="data path under IMGCLF_DATA_ROOTS")
    submit.add_argument("--name", required=True)
    submit.add_argument("--config", help="JSON or YAML job/training config")
    submit.add_argument("--set", action="append", metavar="KEY=VALUE")
    submit.add_argument("--idempotency-key", help="same key -> same job")
    submit.add_argument("--follow", action="store_true", help="show progress until it ends")
    submit.add_argument("--json", action="store_true", help="print the job record as JSON")
    submit.set_defaults(func=cmd_submit)

    jobs = sub.add_parser("jobs", help="list jobs, or show one (any unique id prefix)")
    jobs.add_argument("id", nargs="?", help="a job id or a unique prefix of one")
    jobs.add_argument("--limit", type=positive_int, default=20)
    jobs.add_argument("--follow", action="store_true", help="show progress until it ends")
    jobs.add_argument("--json", action="store_true")
    jobs.set_defaults(func=cmd_jobs)

    logs = sub.add_parser("logs", help="print a job's log (the training process output)")
    logs.add_argument("id", help="a job id or a unique prefix of one")
    logs.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    logs.set_defaults(func=cmd_logs)

    cancel = sub.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("id", help="a job id or a unique prefix of one")
    cancel.add_argument("--json", action="store_true")
    cancel.set_defaults(func=cmd_cancel)

    worker = sub.add_parser("worker", help="run a worker: one training job at a time")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(func=cmd_worker)
