"""Real servers on loopback for the server tests (ephemeral ports)."""

from __future__ import annotations

import shutil
from pathlib import Path

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
