"""Real servers on loopback for the server tests (ephemeral ports)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from bench.common import free_port
from imgclf.server.app import ImgclfServer
from imgclf.settings import Settings


def copy_version(source: Path, model_dir: Path, name: str, version: int) -> Path:
    """Publish a copy of an exported version the way the trainer does: staging + rename."""
    target = model_dir / name / str(version)
    staging = model_dir / name / f".staging-copy-{version}"
    shutil.copytree(source, staging)
    staging.rename(target)
    return target


def start_server(model_dir: Path, **overrides) -> ImgclfServer:
    values = {
        "model_dir": model_dir,
        "rest_port": 0,
        "grpc_port": 0,
        "poll_interval": 0.2,
        "server_threads": 8,
        **overrides,
    }
    server = ImgclfServer(Settings(**values)).start()
    assert server.wait_ready(120), "server did not become ready"
    return server


@contextlib.contextmanager
def serve_process(model_dir: Path, log: Path, env: dict[str, str]) -> Iterator[str]:
    """`imgclf serve` as its own process (stdout and stderr into `log`), until ready;
    yields its REST base URL and ends it with SIGTERM, as an orchestrator would."""
    rest, grpc_port = free_port(), free_port()
    argv = [sys.executable, "-m", "imgclf.cli", "serve", "--model-dir", str(model_dir)]
    argv += ["--rest-port", str(rest), "--grpc-port", str(grpc_port)]
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    with open(log, "wb") as handle:
        server = subprocess.Popen(argv, env=environment, stdout=handle, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{rest}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert server.poll() is None, log.read_text()
            try:
                if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        else:
            pytest.fail(f"server not ready (golden replay refused?):\n{log.read_text()}")
        yield base
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
