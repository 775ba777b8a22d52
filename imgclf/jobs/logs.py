"""A job's log: what its training process printed, read in chunks by offset.

The worker writes it to WORK_DIR/jobs/<id>/job.log; the CLI (`imgclf logs`), the
server (`GET /v1/jobs/<id>/logs`) and the Python client read it through here, so a
follower asks again from `next_offset` and never gets a line twice.
"""

from __future__ import annotations

from pathlib import Path

from imgclf.errors import InvalidInput
from imgclf.jobs.store import JobStore
from imgclf.settings import Settings

MAX_CHUNK_BYTES = 1 << 20


def job_log_path(settings: Settings, job_id: str) -> Path:
    from imgclf.worker.runner import job_run_dir

    return job_run_dir(settings, job_id) / "job.log"


def read_job_log(
    settings: Settings, store: JobStore, job_id: str, offset: int = 0, limit: int = MAX_CHUNK_BYTES
) -> dict:
    """`{"id", "status", "offset", "next_offset", "text"}`: at most `limit` bytes from
    `offset`. `job_id` may be a unique prefix; an empty text means nothing new yet."""
    if offset < 0:
        raise InvalidInput(f"offset must be >= 0, got {offset}")
    record = store.get(job_id)
    path = job_log_path(settings, record["id"])
    chunk = b""
    if path.is_file():
        with path.open("rb") as handle:
            handle.seek(offset)
            chunk = handle.read(max(1, min(limit, MAX_CHUNK_BYTES)))
    return {
        "id": record["id"],
        "status": record["status"],
        "offset": offset,
        "next_offset": offset + len(chunk),
        "text": chunk.decode(errors="replace"),
    }
