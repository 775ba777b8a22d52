"""Celery's own tools against a real worker and a real Redis, in the middle of a real job:
the `celery` command line (inspect, call, result) and Flower's HTTP API."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from bench.common import free_port
from imgclf.jobs.service import submit_job
from imgclf.jobs.store import open_store
from tests.conftest import FAST
from tests.workers import (
    CELERY_WORKER,
    WorkerProcess,
    frozen,
    isolated_queue,
    wait_final,
    wait_for,
)

# The shared fast recipe (32 px, cached head features): the job is held mid-run by
# stopping its training process while Celery's tools look at it.
JOB = {**FAST, "head_epochs": 2, "fine_tune_epochs": 1, "augmentation": "none"}


def celery(env: dict[str, str], *args: str, app: str = "imgclf.worker") -> str:
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", app, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def wait_http(url: str, predicate, timeout: float = 120):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = requests.get(url, timeout=5)
            if last.ok and predicate(last.json()):
                return last.json()
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url}: {last.text if last is not None else 'no answer'}")


@pytest.fixture
def flower(tmp_path):
    procs = []

    def start(env: dict[str, str]) -> str:
        port = free_port()
        log = open(tmp_path / "flower.log", "ab")  # noqa: SIM115 - closed below
        procs.append(
            (
                log,
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "celery",
                        "-A",
                        "imgclf.worker",
                        "flower",
                        "--address=127.0.0.1",
                        f"--port={port}",
                    ],
                    env={**env, "FLOWER_UNAUTHENTICATED_API": "true"},  # loopback, test only
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
            )
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/api/workers?refresh=1", lambda workers: len(workers) > 0)
        return base

    yield start
    for log, proc in procs:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_celery_cli_and_flower_see_a_running_job(tmp_path, redis_url, shapes_dir, flower):
    settings, env = isolated_queue(tmp_path, redis_url, [shapes_dir.parent], lease_seconds=4)
    store = open_store(redis_url, settings.key_prefix)
    worker = WorkerProcess(env, tmp_path / "worker.log", CELERY_WORKER).wait_ready()
    try:
        base = flower(env)
        # Recorded without a message: the Celery CLI queues it, by task name only.
        job = submit_job(
            {**JOB, "data": str(shapes_dir), "name": "shapes"},
            settings=settings,
            store=store,
            send=lambda job_id, kind: None,
        )
        task_id = celery(env, "call", "imgclf.train", "--args", json.dumps([job["id"]])).strip()
        assert task_id

        wait_for(store, job["id"], lambda r: (r.get("progress") or {}).get("stage") == "train")
        with frozen(worker.training_pid(job["id"])):
            # The CLI's answers, asked at once (each is a process that imports the app).
            with ThreadPoolExecutor(4) as pool:
                ping, active, registered, registered_full = pool.map(
                    lambda args: celery(env, *args[1:], app=args[0]),
                    [
                        ("imgclf.worker", "inspect", "ping"),
                        ("imgclf.worker", "inspect", "active", "--json"),
                        ("imgclf.worker", "inspect", "registered"),
                        ("imgclf.worker.celery_app", "inspect", "registered"),
                    ],
                )
            assert "pong" in ping
            assert task_id in active and job["id"] in active
            assert "imgclf.train" in registered and "imgclf.train" in registered_full

            # Progress is the task's state, in the result backend and in the event stream.
            info = wait_http(f"{base}/api/task/info/{task_id}", lambda t: t["state"] == "PROGRESS")
            assert info["name"] == "imgclf.train"
            assert json.loads(info["result"])["stage"] == "train"
            listed = requests.get(f"{base}/api/tasks", timeout=5).json()
            assert listed[task_id]["state"] == "PROGRESS"
            backend = requests.get(f"{base}/api/task/result/{task_id}", timeout=5).json()
            assert backend["state"] == "PROGRESS"

        done = wait_final(store, job["id"], timeout=400)
        # It ran to the end (on this tiny set the promotion gate may refuse the version).
        assert done["status"] in ("succeeded", "rejected"), done["error"]
        # The summary is stored as JSON; `celery result` prints it as a Python literal.
        summary = ast.literal_eval(celery(env, "result", task_id).strip())
        assert summary["id"] == job["id"]
        assert summary["status"] == done["status"]
        assert summary["attempts"] == 1
        finished = wait_http(f"{base}/api/task/info/{task_id}", lambda t: t["state"] == "SUCCESS")
        assert finished["worker"]
    finally:
        worker.stop()
        store.close()
