"""Running one job: lease, child process, heartbeats, time limits, final record.

The Celery task calls `run_job`; it returns the job's record once it has a final
status (reporting progress on the way), or raises `Busy` when another live worker
holds the job (the task then retries later, so a redelivered duplicate never runs the
job twice).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imgclf.jobs.spec import TERMINAL
from imgclf.jobs.store import JobNotFound, JobStore, now_iso
from imgclf.settings import Settings, to_env

log = logging.getLogger(__name__)
_PR_SET_PDEATHSIG = 1
_PROGRESS_POLL_S = 1.0


class Busy(Exception):
    """Another live worker is running this job."""


def job_run_dir(settings: Settings, job_id: str) -> Path:
    return settings.runs_dir() / "jobs" / job_id


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:  # not Linux: the lease still stops a second run
        pass
    os.setsid()


def settings_env(settings: Settings) -> dict[str, str]:
    """The worker's settings as IMGCLF_* variables, so the child builds the same Settings."""
    env = {**os.environ, **to_env(settings)}
    for key, value in settings.model_dump().items():
        if value is None:
            env.pop(f"IMGCLF_{key.upper()}", None)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


ProgressCallback = Callable[[dict[str, Any]], None]
SUMMARY_FIELDS = ("id", "kind", "status", "name", "version", "metrics", "error", "attempts")


def job_summary(record: dict[str, Any]) -> dict[str, Any]:
    """What the Celery task returns (`celery result ID`): JSON, small, final."""
    return {key: record.get(key) for key in SUMMARY_FIELDS}


def run_job(
    job_id: str,
    settings: Settings,
    store: JobStore,
    *,
    on_progress: ProgressCallback | None = None,
    on_finished: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Run the job to a final status and return its record. `on_progress` gets each new
    progress event (from the supervising thread); `on_finished` the final record, only
    when this call ran the job (not for a job that had already ended)."""
    try:
        record = store.get(job_id)
    except JobNotFound:
        log.warning("job %s is unknown; dropping its message", job_id)
        return {"id": job_id, "status": "unknown", "error": "no such job"}
    if record["status"] in TERMINAL:
        return record
    token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    if not store.acquire_lease(job_id, token, settings.lease_seconds):
        raise Busy(job_id)
    try:
        claimed = store.transition(
            job_id,
            ["queued", "running"],
            "running",
            started_at=record.get("started_at") or now_iso(),
            attempts=int(record.get("attempts") or 0) + 1,
            worker=token,
        )
        if claimed is None:  # cancelled (or finished) while we took the lease
            return store.get(job_id)
        final = _supervise(job_id, claimed, settings, store, token, on_progress)
    finally:
        store.release_lease(job_id, token)
    if on_finished is not None:
        on_finished(final)
    return final


def _supervise(
    job_id: str,
    record: dict,
    settings: Settings,
    store: JobStore,
    token: str,
    on_progress: ProgressCallback | None,
) -> dict[str, Any]:
    spec = record["spec"]
    hard = min(spec.get("time_limit") or settings.max_job_seconds, settings.max_job_seconds)
    soft = spec.get("soft_time_limit")
    run_dir = job_run_dir(settings, job_id)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "job.log"
    started = time.monotonic()
    with open(log_path, "ab") as log_file:
        child = subprocess.Popen(
            [sys.executable, "-m", "imgclf.worker.job_process", job_id],
            env=settings_env(settings),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        log.info("job %s: training in process %s (log %s)", job_id, child.pid, log_path)
        beat = max(1.0, settings.lease_seconds / 3)
        renewed = started
        soft_sent = False
        last_progress = None
        while True:
            try:
                child.wait(timeout=_PROGRESS_POLL_S)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if now - renewed >= beat:
                store.acquire_lease(job_id, token, settings.lease_seconds)
                renewed = now
            if on_progress is not None:
                progress = store.get(job_id).get("progress")
                if progress and progress != last_progress:
                    last_progress = progress
                    try:
                        on_progress(progress)
                    except Exception:  # reporting must never stop the supervision
                        log.exception("job %s: progress report failed", job_id)
            elapsed = now - started
            if soft and elapsed > soft and not soft_sent:
                log.warning("job %s: soft time limit %ss reached", job_id, soft)
                child.send_signal(signal.SIGTERM)
                soft_sent = True
            if elapsed > hard:
                log.error("job %s: hard time limit %ss reached; killing", job_id, hard)
                child.kill()
                child.wait()
                store.transition(
                    job_id,
                    ["running"],
                    "failed",
                    finished_at=now_iso(),
                    error=f"hard time limit of {hard}s exceeded",
                )
                break
    final = store.get(job_id)
    if final["status"] == "running":  # the child died without recording an outcome
        store.transition(
            job_id,
            ["running"],
            "failed",
            finished_at=now_iso(),
            error=f"training process exited with code {child.returncode}: "
            + (_tail(log_path) or "no output"),
        )
        final = store.get(job_id)
    log.info("job %s: %s", job_id, final["status"])
    return final


def requeue_orphans(store: JobStore, send, limit: int = 500) -> list[str]:
    """Jobs marked running whose lease lapsed lost their worker: queue them again.

    The transition is atomic, so when several workers run this only one requeues.
    The job resumes from its checkpoints in the run folder.
    """
    requeued = []
    for record in store.list(limit):
        if record["status"] != "running" or store.lease_alive(record["id"]):
            continue
        note = {"requeued_at": now_iso(), "note": "its worker stopped; requeued to resume"}
        if store.transition(record["id"], ["running"], "queued", **note):
            send(record["id"])
            requeued.append(record["id"])
            log.warning("job %s lost its worker; requeued", record["id"])
    return requeued


def send_unsent(store: JobStore, send, grace_seconds: float, limit: int = 500) -> list[str]:
    """Jobs stored as queued but never sent (their submitter died between storing and
    sending) are sent once `grace_seconds` passed. Safe if the submitter was only slow:
    a job id is the task's unit of work, so a second message for it finds the job
    running (`Busy`, retried) or ended (skipped) and never runs it twice."""
    sent = []
    for record in store.list(limit):
        if record["status"] != "queued" or store.claim_unsent(record["id"], grace_seconds) is None:
            continue
        send(record["id"])
        store.mark_sent(record["id"])
        sent.append(record["id"])
        log.warning(
            "job %s was stored but never queued (its submitter stopped); sent", record["id"]
        )
    return sent
