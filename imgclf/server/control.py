"""The control plane shared by REST and gRPC: training jobs and model labels.

Jobs go through the same submit/cancel functions as the CLI, to the same queue.
"""

from __future__ import annotations

import threading
from typing import Any

from imgclf import registry
from imgclf.errors import InvalidInput, Unavailable
from imgclf.server.manager import ModelManager
from imgclf.settings import Settings


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
            versions = self.manager.statuses(name)
            out.append(
                {
                    "name": name,
                    "labels": registry.aliases(self.settings.model_dir, name),
                    "serving_labels": self.manager.labels(name),
                    "versions": [
                        {"version": s.version, "state": s.state.name, "error": s.error}
                        for s in versions
                    ],
                }
            )
        return out

    def promote(self, name: str, alias: str, version: Any) -> dict:
        """Point a version alias (stable, canary) at `version`; the JSON key stays "labels"."""
        if isinstance(version, bool) or not isinstance(version, int):
            raise InvalidInput("'version' must be an integer")
        aliases = registry.set_alias(
            self.settings.model_dir, name, alias, version, by="REST/gRPC promote"
        )
        return {"name": name, "labels": aliases}
