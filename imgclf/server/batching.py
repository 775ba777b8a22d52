"""Dynamic batching: one bounded queue per model, shared by REST and gRPC.

Request threads decode and preprocess their own images (so a corrupt image fails
only its request), then queue the float tensors. One batching thread per model
takes up to `max_batch_size` images and runs them through the version's
`predict_images` in one call. The batch closes as soon as no other admitted
request is still preprocessing (a lone request waits for nothing), or at the
latest `batch_timeout` after its first image (so a slow decoder cannot hold a
batch back). A full queue refuses at once (Overloaded -> 503 / RESOURCE_EXHAUSTED)
rather than letting latency grow without bound.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from imgclf.errors import Overloaded

log = logging.getLogger(__name__)

PredictFn = Callable[[np.ndarray], np.ndarray]  # images [b,H,W,3] -> probabilities [b,C]
_POLL_S = 0.0005


@dataclass
class _Item:
    images: np.ndarray  # [n, H, W, 3] of one request
    key: object  # the version object; batches never mix versions
    predict: PredictFn
    future: Future = field(default_factory=Future)


class Batcher:
    def __init__(
        self,
        name: str,
        *,
        max_batch_size: int,
        batch_timeout_s: float,
        max_queue: int,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.name = name
        self.max_batch_size = max_batch_size
        self.batch_timeout_s = batch_timeout_s
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=max_queue)
        self._on_batch = on_batch
        self._pending: _Item | None = None
        self._preparing = 0  # admitted requests still decoding their images
        self._preparing_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def depth(self) -> int:
        return self._queue.qsize()

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        """Wrap a request's preprocessing and submit, so batches wait for it."""
        with self._preparing_lock:
            self._preparing += 1
        try:
            yield
        finally:
            with self._preparing_lock:
                self._preparing -= 1

    def submit(self, images: np.ndarray, key: object, predict: PredictFn) -> Future:
        """Queue one request's images; the future resolves to probabilities [n, C]."""
        item = _Item(images, key, predict)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            raise Overloaded(
                f"model {self.name!r} is overloaded ({self._queue.maxsize} requests queued); "
                "retry with backoff"
            ) from None
        return item.future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _next(self, timeout: float | None) -> _Item | None:
        if self._pending is not None:
            item, self._pending = self._pending, None
            return item
        return self._queue.get(timeout=timeout) if timeout is not None else self._queue.get()

    def _loop(self) -> None:
        while True:
            first = self._next(None)
            if first is None:
                return
            batch = [first]
            count = len(first.images)
            deadline = time.monotonic() + self.batch_timeout_s
            while count < self.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    if self._pending is None and self._queue.empty() and not self._preparing:
                        break  # nobody else is about to join: run now
                    item = self._next(min(remaining, _POLL_S))
                except queue.Empty:
                    continue
                if item is None:
                    self._run(batch)
                    return
                if item.key is not first.key or count + len(item.images) > self.max_batch_size:
                    self._pending = item  # starts the next batch
                    break
                batch.append(item)
                count += len(item.images)
            self._run(batch)

    def _run(self, batch: list[_Item]) -> None:
        try:
            images = np.concatenate([item.images for item in batch])
            probabilities = batch[0].predict(images)
        except Exception as exc:  # the model failed: every waiting request learns why
            log.exception("batch of %d failed on model %s", len(batch), self.name)
            for item in batch:
                item.future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(len(images))
        start = 0
        for item in batch:
            n = len(item.images)
            item.future.set_result(probabilities[start : start + n])
            start += n
