"""`--follow` and the human view of one job, over the one renderer in imgclf.jobs.progress.

Every kind of job (train, search, k-fold) and every command that shows a job
(`submit --follow`, `jobs ID [--follow]`, `search`, `kfold`, `demo`) goes through
`follow` and `print_record`, so they all say the same thing the same way.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from imgclf.jobs.progress import describe, describe_progress
from imgclf.jobs.records import JobRecord
from imgclf.jobs.spec import TERMINAL
from imgclf.jobs.store import JobStore

POLL_S = 1.0
# A queued job nobody took after this long most likely has no worker to go to.
UNCLAIMED_HINT_S = 20.0


def no_worker_hint(queue: str) -> str:
    return (
        f"no worker has picked the job up yet: start one with 'imgclf worker' using the same "
        f"IMGCLF_BROKER_URL and IMGCLF_RESULT_BACKEND (queue {queue!r})"
    )


def follow(store: JobStore, job_id: str, out: TextIO = sys.stderr, queue: str = "imgclf") -> dict:
    """Show the job's line whenever it changes until the job ends; returns the final record.

    On a terminal the line is rewritten in place. A job still queued after
    UNCLAIMED_HINT_S gets one line that says how to start a worker.
    """
    tty = out.isatty()
    last = ""
    started = time.monotonic()
    hinted = False
    while True:
        document = store.get(job_id)
        record = JobRecord.model_validate(document)
        line = describe(record)
        if line != last:
            out.write(f"\r{line[:160]:<160}" if tty else line + "\n")
            out.flush()
            last = line
        if record.status in TERMINAL:
            if tty:
                out.write("\n")
            return document
        unclaimed = record.status == "queued" and time.monotonic() - started > UNCLAIMED_HINT_S
        if unclaimed and not hinted:
            out.write(("\n" if tty else "") + no_worker_hint(queue) + "\n")
            out.flush()
            hinted = True
            last = ""
        time.sleep(POLL_S)


def print_record(document: dict) -> None:
    """The human view of one job."""
    record = JobRecord.model_validate(document)
    print(
        f"job {record.id}  {record.status}  {record.kind}  model {record.name}  data {record.data}"
    )
    print(
        f"  created {record.created_at}  started {record.started_at or '-'}  "
        f"finished {record.finished_at or '-'}  attempts {record.attempts}"
    )
    if record.status == "running" and record.progress is not None:
        print(f"  progress: {describe_progress(record.progress)}")
    if record.version is not None:
        print(f"  version {record.version}")
    if record.metrics:
        print(f"  test accuracy {record.metrics['accuracy']:.1%}")
    if record.diagnosis:
        print(f"  diagnosis: {record.diagnosis['summary']}")
    promotion = record.promotion
    if promotion:
        print(
            f"  promotion: {promotion['decision']}"
            + (f" ({'; '.join(promotion['reasons'])})" if promotion.get("reasons") else "")
        )
    if record.kind == "audit" and record.result:
        from imgclf.audit.report import console_lines

        print("\n".join("  " + line for line in console_lines(record.result, limit=5)))
    if record.report:
        print(f"  report: {record.report}")
    if record.error:
        print(f"  error: {record.error}")
