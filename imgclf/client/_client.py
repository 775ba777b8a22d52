"""`Client`: one interface over REST or gRPC, with timeouts and retries."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from imgclf.client._errors import ServerUnavailable, TransportError
from imgclf.client._types import Explanation, Job, LabelScore, Prediction

DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
DEFAULT_BACKOFF = 0.5

ImageInput = bytes | str | Path | BinaryIO
T = TypeVar("T")


def _check_min_score(min_score: float | None) -> None:
    """Refused before any request, for predict and explain alike."""
    if min_score is not None and not 0.0 <= float(min_score) <= 1.0:
        raise ValueError(f"min_score must lie in [0, 1], got {min_score!r}")


def _read(image: ImageInput) -> bytes:
    if isinstance(image, bytes | bytearray):
        return bytes(image)
    if isinstance(image, str | Path):
        return Path(image).read_bytes()
    if hasattr(image, "read"):
        return image.read()
    raise TypeError(f"an image must be bytes, a path or a binary file, got {type(image)!r}")


class Client:
    """Predict, classify, explain and retrain against an imgclf server.

    Give `rest_url` (http://host:8501) or `grpc_target` (host:8500); with both, gRPC
    is used. Requests that get 503 / UNAVAILABLE (or no answer) are retried with
    exponential backoff, never sooner than the server's Retry-After; 4xx answers raise
    at once (see `imgclf.client` errors).
    """

    def __init__(
        self,
        rest_url: str | None = None,
        grpc_target: str | None = None,
        token: str | None = None,
        *,
        model: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        backoff: float = DEFAULT_BACKOFF,
    ) -> None:
        if grpc_target:
            from imgclf.client._grpc import GrpcTransport

            self._transport = GrpcTransport(grpc_target, token, timeout)
            self.protocol = "grpc"
        elif rest_url:
            from imgclf.client._rest import RestTransport

            self._transport = RestTransport(rest_url, token, timeout)
            self.protocol = "rest"
        else:
            raise ValueError("give rest_url (http://host:8501) or grpc_target (host:8500)")
        self.model = model
        self.retries = max(0, retries)
        self.backoff = backoff

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._transport.close()

    def _retry(self, call: Callable[[], T]) -> T:
        for attempt in range(self.retries + 1):
            try:
                return call()
            except (ServerUnavailable, TransportError) as exc:
                if attempt == self.retries:
                    raise
                # Exponential backoff, but never sooner than the server's Retry-After.
                wait = getattr(exc, "retry_after", None) or 0.0
                time.sleep(max(self.backoff * 2**attempt, wait))
        raise AssertionError("unreachable")

    def _model(self, model: str | None) -> str:
        name = model or self.model
        if not name:
            raise ValueError("give model=... here or when creating the Client")
        return name

    def predict(
        self,
        images: Iterable[ImageInput],
        *,
        model: str | None = None,
        version: int | None = None,
        label: str | None = None,
        min_score: float | None = None,
    ) -> list[Prediction]:
        """One Prediction per image (top label, its score, every class's score).

        An image whose top score is below `min_score` (in [0, 1]; None = the model card's
        default) gets label "unknown"; its scores are still there."""
        _check_min_score(min_score)
        data = [_read(image) for image in images]
        name = self._model(model)
        return self._retry(lambda: self._transport.predict(name, data, version, label, min_score))

    def classify(
        self,
        images: Iterable[ImageInput],
        top_k: int = 5,
        *,
        model: str | None = None,
        version: int | None = None,
        label: str | None = None,
    ) -> list[list[LabelScore]]:
        """The top_k labels per image, best first (REST: TF Serving's :classify)."""
        data = [_read(image) for image in images]
        name = self._model(model)
        return self._retry(lambda: self._transport.classify(name, data, top_k, version, label))

    def explain(
        self,
        images: Iterable[ImageInput],
        top_k: int = 5,
        *,
        model: str | None = None,
        version: int | None = None,
        label: str | None = None,
        min_score: float | None = None,
    ) -> list[Explanation]:
        """Per image the answer plus a Grad-CAM heatmap and an overlay (PNG bytes).

        A version exported before explanations existed raises Conflict: retrain it."""
        _check_min_score(min_score)
        data = [_read(image) for image in images]
        name = self._model(model)
        return self._retry(
            lambda: self._transport.explain(name, data, top_k, version, label, min_score)
        )

    def submit_job(
        self,
        data: str,
        *,
        model: str | None = None,
        idempotency_key: str | None = None,
        **config: Any,
    ) -> Job:
        """Queue a retrain of `model` on `data` (a path under the server's data roots).

        A retried submission cannot create a second job: an idempotency key is made
        up when none is given.
        """
        document = {
            "name": self._model(model),
            "data": data,
            **config,
            "idempotency_key": idempotency_key or f"client-{uuid.uuid4().hex}",
        }
        return self._retry(lambda: self._transport.submit_job(document))

    def job(self, job_id: str) -> Job:
        return self._retry(lambda: self._transport.job(job_id))

    def cancel(self, job_id: str) -> Job:
        return self._retry(lambda: self._transport.cancel(job_id))

    def job_logs(self, job_id: str, offset: int = 0) -> dict[str, Any]:
        """The job's log from byte `offset`: `{"id", "status", "offset", "next_offset",
        "text"}`; ask again from `next_offset` to follow it."""
        return self._retry(lambda: self._transport.job_logs(job_id, offset))

    def set_label(self, model: str, label: str, version: int) -> dict[str, int]:
        """Point a version alias (stable, canary) at `version` (admin token): the server
        loads and verifies it first; if it cannot serve, Conflict (409 /
        FAILED_PRECONDITION) and nothing changes. Returns every alias after the change."""
        return self._transport.set_label(model, label, version)

    def wait(
        self, job_id: str, *, progress: bool = True, timeout: float | None = None, poll: float = 1.0
    ) -> Job:
        """Poll until the job ends; with progress, a line on stderr whenever it changes (the
        same lines as `imgclf jobs ID --follow`). Returns the final Job."""
        from imgclf.jobs.progress import status_line
        from imgclf.jobs.records import ProgressEvent

        deadline = None if timeout is None else time.monotonic() + timeout
        last = ""
        while True:
            job = self.job(job_id)
            if progress:
                event = ProgressEvent.model_validate(job.progress) if job.progress else None
                line = status_line(job.id, job.status, job.name, event)
                if line != last:
                    print(line, file=sys.stderr, flush=True)
                    last = line
            if job.done:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout}s")
            time.sleep(poll)

    def models(self) -> list[dict[str, Any]]:
        return self._retry(self._transport.models)
