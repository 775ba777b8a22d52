"""The one progress renderer: a job record as a line a person reads, and `--follow`.

Every kind of job (train, search, k-fold) and every command that shows a job
(`submit --follow`, `jobs ID [--follow]`, `search`, `kfold`, `demo`) goes through
`describe` and `follow`, so they all say the same thing the same way.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from imgclf.jobs.records import JobRecord, ProgressEvent
from imgclf.jobs.spec import TERMINAL
from imgclf.jobs.store import JobStore

POLL_S = 1.0
# A queued job nobody took after this long most likely has no worker to go to.
UNCLAIMED_HINT_S = 20.0
_SHOWN_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def describe_progress(progress: ProgressEvent) -> str:
    """Where a running job is: trial/fold, phase, epoch, percent, metrics, ETA."""
    parts = []
    if progress.trial is not None:
        parts.append(
            f"trial {progress.trial} ({progress.trials_done}/{progress.trials_planned} done)"
        )
    if progress.fold is not None:
        parts.append(f"fold {progress.fold}/{progress.folds}")
    if progress.final:
        parts.append("training the chosen config")
    if progress.stage == "train":
        phase = "head" if progress.phase == 1 else "fine-tune"
        line = (
            f"phase {progress.phase} ({phase}) epoch {progress.epoch}/{progress.epochs} "
            f"batch {progress.batch}/{progress.steps}"
        )
        fraction = progress.fraction()
        if fraction is not None:
            line += f" {fraction:.0%}"
        shown = [f"{k} {progress.metrics[k]:.3f}" for k in _SHOWN_METRICS if k in progress.metrics]
        if shown:
            line += " " + " ".join(shown)
        if progress.eta_seconds is not None:
            line += f" ETA {duration(progress.eta_seconds)}"
        parts.append(line)
    elif progress.stage:
        parts.append(progress.stage)
    return ", ".join(parts)


def describe(record: JobRecord) -> str:
    """One line: id, status, kind and model, and the progress when running."""
    line = f"job {record.id} {record.status} ({record.kind} {record.name})"
    if record.status == "running" and record.progress is not None:
        line += ": " + describe_progress(record.progress)
    best = (record.result or {}).get("best")
    if best and record.status == "running":
        line += f", best {record.result['objective']} {best['objective']:.4f}"
    return line


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
    if record.report:
        print(f"  report: {record.report}")
    if record.error:
        print(f"  error: {record.error}")
