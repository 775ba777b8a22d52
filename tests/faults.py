"""Helpers for the fault-injection tests: a bounded client loop and broken versions."""

from __future__ import annotations

import base64
import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def wait_until(predicate: Callable[[], object], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"condition not reached: {what}")


class Traffic:
    """Predictions in a loop from a few threads while a fault is injected.

    Records every failure (status and body) and the version that answered, so a
    test can assert zero failed requests and which version served at the end.
    """

    def __init__(
        self,
        url: str,
        image: bytes,
        threads: int = 2,
        timeout: float = 30.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = url
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.body = json.dumps({"instances": [b64(image)]})
        self.failures: list[str] = []
        self.count = 0
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._timeout = timeout
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                answer = session.post(
                    self.url,
                    data=self.body,
                    headers=self.headers,
                    timeout=self._timeout,
                )
                if answer.status_code != 200:
                    self.failures.append(f"{answer.status_code} {answer.text[:200]}")
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
            self.latencies.append(time.monotonic() - started)
            self.count += 1

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        wait_until(lambda: self.count >= 2, 60, "the client loop got answers")
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)


def refused_version(source: Path, model_dir: Path, name: str, version: int) -> Path:
    """A version whose golden replay disagrees with its stored outputs (refused at load)."""
    staging = model_dir / name / f".staging-tampered-{version}"
    shutil.copytree(source, staging)
    manifest_path = staging / "golden/manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["inputs"][0]["probabilities"][0] += 0.01
    manifest_path.write_text(json.dumps(manifest))
    target = model_dir / name / str(version)
    staging.rename(target)
    return target


def half_written_version(source: Path, model_dir: Path, name: str, version: int) -> Path:
    """A version folder copied without its variables (as a copy cut short leaves it)."""
    target = model_dir / name / str(version)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("variables*"))
    return target


def complete_version(source: Path, target: Path) -> None:
    """Finish a half-written copy."""
    shutil.copytree(source / "variables", target / "variables")


def status(base: str, name: str) -> dict[str, str]:
    answer = requests.get(f"{base}/v1/models/{name}", timeout=10)
    if answer.status_code != 200:
        return {}
    return {s["version"]: s["state"] for s in answer.json()["model_version_status"]}
