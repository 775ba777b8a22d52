"""`imgclf demo`: the main job on embedded defaults, for a first look on any machine.

Makes a small generated image set, starts a worker, submits a training job
through the queue (Redis when reachable, else the embedded SQLite broker), follows
it with a progress bar, starts the server and classifies held-out images over REST
and over gRPC with the Python client. Every process it starts is stopped before it
returns (unless --keep-running leaves the server up).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from imgclf.settings import Settings, embedded_urls, to_env

DEMO_CLASSES = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="demo", help="where data, models and runs go")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--per-class", type=int, default=40, help="generated images per class")
    parser.add_argument("--weights", default="none", help="'none' offline; 'imagenet' if online")
    parser.add_argument("--name", default="shapes")
    parser.add_argument("--embedded", action="store_true", help="skip Redis even if reachable")
    parser.add_argument(
        "--keep-running", action="store_true", help="leave the server up and say how to stop it"
    )


def redis_reachable(url: str) -> bool:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return False
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
        client.close()
        return True
    except redis.RedisError:
        return False


def _make_data(workdir: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    import numpy as np
    import tensorflow as tf

    from imgclf.demo_data import SHAPES, draw_shape, make_shapes_dataset

    data = workdir / "data"
    if not data.is_dir():
        make_shapes_dataset(
            data, classes=DEMO_CLASSES, per_class=args.per_class, size=args.image_size, seed=0
        )
    holdout = workdir / "holdout"
    if not holdout.is_dir():
        holdout.mkdir(parents=True)
        rng = np.random.default_rng(12345)
        for shape in SHAPES[:DEMO_CLASSES]:
            pixels = draw_shape(shape, args.image_size, rng)
            (holdout / f"{shape}.jpg").write_bytes(tf.io.encode_jpeg(pixels).numpy())
    return data, holdout


class Processes:
    """Children started by the demo, all stopped on exit (even on Ctrl-C)."""

    def __init__(self) -> None:
        self.children: list[subprocess.Popen] = []

    def start(self, argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
        handle = open(log, "ab")  # noqa: SIM115 - owned by the child's lifetime
        child = subprocess.Popen(
            argv, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )
        handle.close()
        self.children.append(child)
        return child

    def detach(self, child: subprocess.Popen) -> None:
        """Leave `child` running after the demo ends (--keep-running)."""
        self.children.remove(child)

    def stop_all(self) -> None:
        for child in self.children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in self.children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


def _free_port(preferred: int) -> int:
    import socket

    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port")


def _wait_ready(url: str, child: subprocess.Popen, log: Path, timeout: float) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"the server exited early; see {log}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the server was not ready after {timeout}s; see {log}")


def _wait_for_line(log: Path, text: str, child: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if child.poll() is not None:
            raise RuntimeError(f"process exited early; see {log}")
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {text!r} in {log}")


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    from imgclf.cli_queue import follow, print_record
    from imgclf.jobs.service import celery_sender, submit_job
    from imgclf.jobs.store import open_store

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"imgclf demo: trains a {DEMO_CLASSES}-class ResNet-50 on generated images "
        f"({args.image_size}px, weights={args.weights}) through the job queue; "
        "about 2-5 minutes on 2 CPU cores."
    )
    data, holdout = _make_data(workdir, args)
    values = {
        "model_dir": str(workdir / "models"),
        "work_dir": str(workdir / "runs"),
        "data_roots": [str(workdir)],
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        "key_prefix": settings.key_prefix,
        "queue": f"imgclf-demo-{os.getpid()}",
    }
    if args.embedded or not redis_reachable(settings.broker_url):
        urls = embedded_urls(workdir / "state")
        values["broker_url"] = urls["IMGCLF_BROKER_URL"]
        values["result_backend"] = urls["IMGCLF_RESULT_BACKEND"]
        print(f"broker: embedded (SQLite under {workdir / 'state'}; no Redis reachable)")
    else:
        print(f"broker: Redis at {settings.broker_url}")
    demo_settings = Settings(**values)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **to_env(demo_settings)}
    processes = Processes()
    started = time.monotonic()
    try:
        worker_log = workdir / "worker.log"
        worker = processes.start([sys.executable, "-m", "imgclf.cli", "worker"], env, worker_log)
        _wait_for_line(worker_log, " ready.", worker, timeout=120)
        print(f"worker: started (log {worker_log})")
        store = open_store(demo_settings.result_backend, demo_settings.key_prefix)
        document = {
            "name": args.name,
            "data": str(data),
            "image_size": args.image_size,
            "weights": args.weights,
            "batch_size": 16,
            "head_epochs": 6,
            "fine_tune_epochs": 3,
            "learning_rate": 2e-3,
            "fine_tune_learning_rate": 1e-4,
            "augmentation": "light",
            "promotion_tolerance": 0.05,
        }
        job = submit_job(
            document, settings=demo_settings, store=store, send=celery_sender(demo_settings)
        )
        print(f"submitted job {job['id']}")
        final = follow(store, job["id"])
        print_record(final)
        if final["status"] != "succeeded":
            return 1
        rest_port, grpc_port = _free_port(8501), _free_port(8500)
        server_env = {
            **env,
            "IMGCLF_REST_PORT": str(rest_port),
            "IMGCLF_GRPC_PORT": str(grpc_port),
            "IMGCLF_HOST": "127.0.0.1",
        }
        server_log = workdir / "server.log"
        server = processes.start(
            [sys.executable, "-m", "imgclf.cli", "serve"], server_env, server_log
        )
        rest_url = f"http://127.0.0.1:{rest_port}"
        _wait_ready(f"{rest_url}/readyz", server, server_log, timeout=120)
        print(f"server: REST {rest_url}  gRPC 127.0.0.1:{grpc_port}  (log {server_log})")
        _classify_holdout(args.name, holdout, rest_url, f"127.0.0.1:{grpc_port}")
        print(f"\nversion {final['version']}; diagnosis: {final['diagnosis']['summary']}")
        print(f"report: {final['report']}")
        print(f"done in {time.monotonic() - started:.0f}s")
        if args.keep_running:
            processes.detach(server)
            print(
                f"\nthe server keeps running (pid {server.pid}); try\n"
                f"  curl -s {rest_url}/v1/models/{args.name}\n"
                f"stop it with: kill {server.pid}"
            )
        return 0
    finally:
        processes.stop_all()


def _classify_holdout(name: str, holdout: Path, rest_url: str, grpc_target: str) -> None:
    from imgclf.client import Client

    images = sorted(holdout.iterdir())
    for protocol, client in (
        ("REST", Client(rest_url=rest_url, model=name)),
        ("gRPC", Client(grpc_target=grpc_target, model=name)),
    ):
        with client:
            predictions = client.predict(images)
        print(f"\nheld-out images over {protocol} ({name} version {predictions[0].version}):")
        for image, p in zip(images, predictions, strict=True):
            top = ", ".join(f"{t.label} {t.score:.2f}" for t in p.top(3))
            print(f"  {image.name:>14}: {top}")
