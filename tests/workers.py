"""Real worker processes for the queue tests: started, awaited, killed."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from imgclf.jobs.spec import TERMINAL
from imgclf.settings import Settings, to_env


def isolated_queue(
    root: Path,
    redis_url: str,
    data_roots: list[Path],
    *,
    broker_url: str | None = None,
    **overrides: object,
) -> tuple[Settings, dict[str, str]]:
    """Settings for workers on their own queue and key prefix in the test Redis (the
    broker too unless `broker_url` is given), and the environment that rebuilds the
    same Settings in a worker process."""
    prefix = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(
        broker_url=broker_url or redis_url,
        result_backend=redis_url,
        model_dir=root / "models",
        work_dir=root / "runs",
        data_roots=data_roots,
        queue=prefix,
        key_prefix=prefix,
        **overrides,
    )
    return settings, {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **to_env(settings)}


IMGCLF_WORKER = ("-m", "imgclf.cli", "worker")
# The same worker started by Celery's own command line, as an operator would.
CELERY_WORKER = ("-m", "celery", "-A", "imgclf.worker", "worker", "--loglevel=INFO")


class WorkerProcess:
    def __init__(
        self, env: dict[str, str], log: Path, argv: tuple[str, ...] = IMGCLF_WORKER
    ) -> None:
        self.log = log
        self._handle = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, *argv],
            env=env,
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 90) -> WorkerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if " ready." in self.log.read_text(errors="replace"):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("worker exited:\n" + self.log.read_text(errors="replace"))
            time.sleep(0.2)
        raise TimeoutError("worker not ready:\n" + self.log.read_text(errors="replace"))

    def training_pid(self, job_id: str, timeout: float = 120) -> int:
        """The pid of the job's training process, as the worker logs it."""
        pattern = re.compile(rf"job {job_id}: training in process (\d+)")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = pattern.findall(self.log.read_text(errors="replace"))
            if found:
                return int(found[-1])
            time.sleep(0.1)
        raise TimeoutError(f"no training process for {job_id}:\n" + self.log.read_text())

    def sigkill(self) -> None:
        """Kill the worker process only; its training child must die with it."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._handle.close()


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """Stop a training process (SIGSTOP) and continue it afterwards: a job held mid-run at
    no CPU cost, so tests can look at it without racing its end."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def wait_for(store, job_id: str, predicate, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    record = store.get(job_id)
    while time.monotonic() < deadline:
        record = store.get(job_id)
        if predicate(record):
            return record
        time.sleep(0.3)
    raise TimeoutError(f"job {job_id} stuck: {record}")


def wait_final(store, job_id: str, timeout: float = 240) -> dict:
    return wait_for(store, job_id, lambda r: r["status"] in TERMINAL, timeout)
