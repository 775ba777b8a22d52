"""Servers under test, each in its own process on loopback: imgclf (`imgclf serve`) and
the LitServe peer. Started and stopped here so cold start is measured the same way
for both: from process start to the first answered prediction.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import LOOPBACK

_START_TIMEOUT_S = 240.0


@dataclass
class ServerProcess:
    """A child process group we started; `stop()` ends that group and nothing else."""

    name: str
    process: subprocess.Popen
    log: Path
    started: float
    cold_start: dict = field(default_factory=dict)
    rest_port: int | None = None  # imgclf only: where /metrics is read

    def cpu_seconds(self) -> float:
        """User + system CPU time of the child and its descendants still running (Linux)."""
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in _group_pids(self.process.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def pause(self) -> None:
        """Freeze the whole group (SIGSTOP): an idle server's pollers stop taking CPU
        from the one being measured."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.resume()  # a frozen process would not act on SIGTERM
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            pids.append(int(entry.name))
    return pids


def _spawn(name: str, argv: list[str], env: dict[str, str], log: Path) -> ServerProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            argv,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches its children
        )
    return ServerProcess(name, process, log, time.perf_counter())


def _http(port: int, method: str, path: str, body: bytes | None = None) -> int:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


def _wait(server: ServerProcess, check) -> float:
    deadline = time.perf_counter() + _START_TIMEOUT_S
    while time.perf_counter() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}; see {server.log}"
            )
        if check():
            return time.perf_counter() - server.started
        time.sleep(0.05)
    server.stop()
    raise RuntimeError(f"{server.name} not ready after {_START_TIMEOUT_S:.0f}s; see {server.log}")


def start_imgclf(
    model_dir: Path, rest_port: int, grpc_port: int, log: Path, env: dict[str, str]
) -> ServerProcess:
    """`imgclf serve` with its defaults, except loopback ports and the given IMGCLF_* env."""
    argv = [sys.executable, "-m", "imgclf.cli", "serve", "--model-dir", str(model_dir)]
    argv += ["--rest-port", str(rest_port), "--grpc-port", str(grpc_port), "--host", LOOPBACK]
    server = _spawn("imgclf", argv, env, log)
    server.rest_port = rest_port
    ready = _wait(server, lambda: _http(rest_port, "GET", "/readyz") == 200)
    server.cold_start = {"ready_s": round(ready, 2)}
    return server


def start_peer(version_dir: Path, port: int, log: Path) -> ServerProcess:
    argv = [sys.executable, "-m", "bench.peer_litserve", "--model-dir", str(version_dir)]
    server = _spawn("litserve", [*argv, "--port", str(port)], {}, log)
    ready = _wait(server, lambda: _http(port, "GET", "/health") == 200)
    server.cold_start = {"ready_s": round(ready, 2)}
    return server


def first_prediction(server: ServerProcess, port: int, path: str, body: dict) -> None:
    """Record the time from process start to the first 200 answer to `body`."""
    data = json.dumps(body).encode()
    _wait(server, lambda: _http(port, "POST", path, data) == 200)
    server.cold_start["first_prediction_s"] = round(time.perf_counter() - server.started, 2)


def b64(image: bytes) -> dict:
    return {"b64": base64.b64encode(image).decode()}
