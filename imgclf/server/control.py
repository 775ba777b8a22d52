"""The control plane shared by REST and gRPC: training jobs and model labels.

Jobs go through the same submit/cancel functions as the CLI, to the same queue.
"""

from __future__ import annotations

import threading
from typing import Any

from imgclf import registry
from imgclf.errors import InvalidInput, NotFound, RepositoryError, Unavailable
from imgclf.server.manager import ModelManager
from imgclf.settings import Settings

MAX_VERSION = 2**63 - 1  # TF Serving's int64 version numbers


class ControlPlane:
    def __init__(self, settings: Settings, manager: ModelManager) -> None:
        self.settings = settings
        self.manager = manager
        self._lock = threading.Lock()
        self._store = None
        self._send = None

    def _backend(self):
        with self._lock:
            if self._store is None:
                from imgclf.jobs.service import celery_sender
                from imgclf.jobs.store import open_store

                try:
                    self._store = open_store(self.settings.result_backend, self.settings.key_prefix)
                    self._send = celery_sender(self.settings)
                except InvalidInput:
                    raise
                except Exception as exc:
                    raise Unavailable(f"the job store is unreachable: {exc}") from None
            return self._store, self._send

    def _call(self, fn, *args, **kwargs):
        import redis

        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise Unavailable(f"the job store is unreachable: {exc}") from None

    def submit(self, document: Any) -> dict:
        from imgclf.jobs.service import submit_job

        store, send = self._backend()
        if not isinstance(document, dict):
            raise InvalidInput("a job must be a JSON object")
        return self._call(submit_job, document, settings=self.settings, store=store, send=send)

    def job(self, job_id: str) -> dict:
        store, _ = self._backend()
        return self._call(store.get, job_id)

    def job_log(self, job_id: str, offset: int = 0) -> dict:
        from imgclf.jobs.logs import read_job_log

        store, _ = self._backend()
        return self._call(read_job_log, self.settings, store, job_id, offset)

    def jobs(self, limit: int = 100) -> list[dict]:
        store, _ = self._backend()
        return self._call(store.list, limit)

    def cancel(self, job_id: str) -> dict:
        from imgclf.jobs.service import cancel_job

        store, _ = self._backend()
        return self._call(cancel_job, store, job_id)

    def models(self) -> list[dict]:
        out = []
        for name in self.manager.models():
            try:
                labels = registry.aliases(self.settings.model_dir, name)
            except RepositoryError:  # unreadable labels.json: the reason is in "problems"
                labels = self.manager.labels(name)
            try:
                versions = self.manager.statuses(name)
            except NotFound:
                versions = []
            out.append(
                {
                    "name": name,
                    "labels": labels,
                    "serving_labels": self.manager.labels(name),
                    "versions": [
                        {"version": s.version, "state": s.state.name, "error": s.error}
                        for s in versions
                    ],
                    "problems": self.manager.problems(name),
                }
            )
        return out

    def promote(self, name: str, label: str, version: Any) -> dict:
        """Move a label; the version is loaded and verified first, else 409, nothing changes."""
        if isinstance(version, bool) or not isinstance(version, int):
            raise InvalidInput("'version' must be an integer")
        if not 1 <= version <= MAX_VERSION:
            raise InvalidInput(f"'version' must be between 1 and {MAX_VERSION}")
        aliases = self.manager.set_label(name, label, version, by="REST/gRPC promote")
        return {"name": name, "labels": aliases}
