"""`imgclf submit | jobs | cancel | worker`: the queue side of the command line."""

from __future__ import annotations

import argparse
import json
import sys
import time

from imgclf.settings import Settings

_FOLLOW_POLL_S = 1.0


def _store(settings: Settings):
    from imgclf.jobs.store import open_store

    return open_store(settings.result_backend, settings.key_prefix)


def follow(store, job_id: str, out=sys.stderr) -> dict:
    """Show a progress bar until the job ends; returns the final record."""
    from tqdm import tqdm

    from imgclf.jobs.spec import TERMINAL

    bar = None
    phase = None
    last_line = ""

    def status_line(text: str) -> None:
        nonlocal last_line
        if text != last_line:
            out.write(("\n" if last_line else "") + text)
            out.flush()
            last_line = text

    while True:
        record = store.get(job_id)
        progress = record.get("progress") or {}
        if progress.get("stage") not in (None, "train"):
            if bar is not None:
                bar.close()
                bar = None
            phase = None
            status_line(f"job {job_id[:12]}: {progress['stage']}")
            progress = {}
        if progress and progress.get("phase") != phase:
            if bar is not None:
                bar.close()
            elif last_line:
                out.write("\n")
                last_line = ""
            phase = progress["phase"]
            total = progress["epochs"] * progress["steps"]
            bar = tqdm(
                total=total,
                file=out,
                unit="step",
                desc=f"phase {phase} ({'head' if phase == 1 else 'fine-tune'})",
            )
        if bar is not None and progress:
            done = (progress["epoch"] - 1) * progress["steps"] + progress["batch"]
            bar.n = min(done, bar.total)
            metrics = progress.get("metrics") or {}
            shown = {
                k: f"{v:.3f}"
                for k, v in metrics.items()
                if k in ("loss", "accuracy", "val_accuracy")
            }
            if progress.get("eta_seconds") is not None:
                shown["eta"] = f"{progress['eta_seconds']:.0f}s"
            bar.set_postfix(shown, refresh=False)
            bar.refresh()
        elif bar is None and not record.get("progress"):
            status_line(f"job {job_id[:12]}: {record['status']}")
        if record["status"] in TERMINAL:
            if bar is not None:
                bar.close()
            elif last_line:
                out.write("\n")
            return record
        time.sleep(_FOLLOW_POLL_S)


def print_record(record: dict) -> None:
    print(f"job {record['id']}  {record['status']}  model {record['name']}  data {record['data']}")
    if record.get("version") is not None:
        print(f"  version {record['version']}")
    if record.get("metrics"):
        print(f"  test accuracy {record['metrics']['accuracy']:.1%}")
    if record.get("diagnosis"):
        print(f"  diagnosis: {record['diagnosis']['summary']}")
    promotion = record.get("promotion")
    if promotion:
        print(
            f"  promotion: {promotion['decision']}"
            + (f" ({'; '.join(promotion['reasons'])})" if promotion.get("reasons") else "")
        )
    if record.get("kind") == "audit" and record.get("result"):
        from imgclf.audit.report import console_lines

        print("\n".join("  " + line for line in console_lines(record["result"], limit=5)))
    if record.get("report"):
        print(f"  report: {record['report']}")
    if record.get("error"):
        print(f"  error: {record['error']}")


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
    print(f"job {record['id']} {record['status']}")
    if not args.follow:
        return 0
    final = follow(store, record["id"])
    print_record(final)
    return 0 if final["status"] == "succeeded" else 1


def cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    store = _store(settings)
    if args.id:
        record = store.get(args.id)
        if args.json:
            print(json.dumps(record, indent=1))
        else:
            print_record(record)
        return 0
    records = store.list(args.limit)
    if args.json:
        print(json.dumps(records, indent=1))
        return 0
    for r in records:
        version = "" if r.get("version") is None else f"v{r['version']}"
        print(f"{r['id']}  {r['status']:<9}  {r['name']:<20} {version:<5} {r['created_at']}")
    if not records:
        print("no jobs")
    return 0


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from imgclf.jobs.service import cancel_job

    record = cancel_job(_store(settings), args.id)
    state = "cancel requested" if record["status"] == "running" else record["status"]
    print(f"job {args.id}: {state}")
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
    submit.set_defaults(func=cmd_submit)

    jobs = sub.add_parser("jobs", help="list jobs, or show one")
    jobs.add_argument("id", nargs="?")
    jobs.add_argument("--limit", type=int, default=20)
    jobs.add_argument("--json", action="store_true")
    jobs.set_defaults(func=cmd_jobs)

    cancel = sub.add_parser("cancel", help="cancel a queued or running job")
    cancel.add_argument("id")
    cancel.set_defaults(func=cmd_cancel)

    worker = sub.add_parser("worker", help="run a worker: one training job at a time")
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(func=cmd_worker)
