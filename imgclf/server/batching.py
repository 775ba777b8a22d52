"""Dynamic batching: one bounded queue per model, shared by REST and gRPC.

Request threads run only the cheap checks (image count, header sizes) and queue the
encoded bytes. One batching thread per model takes up to `max_batch_size` inputs and
runs them in one call of the version's own graph: for image bytes that is
`serving_default` (decode, resize and model in one call, no per-image Python round
trip). The batch function reports which inputs failed, so a corrupt image fails only
its own request while the rest of the batch answers.

The batch closes as soon as no other admitted request is still on its way (a lone
request waits for nothing), or at the latest `batch_timeout` after its first input.
A full queue refuses at once (Overloaded -> 503 / RESOURCE_EXHAUSTED) rather than
letting latency grow without bound.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from imgclf.errors import Overloaded

log = logging.getLogger(__name__)

Inputs = np.ndarray | list[bytes]  # float images [n, H, W, 3], or n encoded images
# One batch call: inputs -> (outputs [n, C], or a tuple of arrays [n, ...] such as
# explain's (heatmaps, probabilities); {index in the batch: why that input failed}).
BatchFn = Callable[[Inputs], tuple[np.ndarray | tuple[np.ndarray, ...], dict[int, Exception]]]
_POLL_S = 0.0005


@dataclass
class _Item:
    inputs: Inputs  # the inputs of one request
    key: object  # batches never mix keys (the version object and the kind of input)
    run: BatchFn
    future: Future = field(default_factory=Future)


def _concatenate(items: Sequence[_Item]) -> Inputs:
    if isinstance(items[0].inputs, np.ndarray):
        return np.concatenate([item.inputs for item in items])
    return [value for item in items for value in item.inputs]


def _rows(outputs: np.ndarray | tuple[np.ndarray, ...], start: int, stop: int):
    """One request's rows of the batch's outputs (an array, or a tuple of arrays)."""
    if isinstance(outputs, tuple):
        return tuple(part[start:stop] for part in outputs)
    return outputs[start:stop]


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
        self._preparing = 0  # admitted requests still checking their inputs
        self._preparing_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def depth(self) -> int:
        return self._queue.qsize()

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        """Wrap a request's checks and submit, so a closing batch waits for it."""
        with self._preparing_lock:
            self._preparing += 1
        try:
            yield
        finally:
            with self._preparing_lock:
                self._preparing -= 1

    def submit(self, inputs: Inputs, key: object, run: BatchFn) -> Future:
        """Queue one request's inputs; the future resolves to its outputs [n, C]."""
        item = _Item(inputs, key, run)
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
            batch, closed = self._collect(first)
            self._run(batch)
            if closed:
                return

    def _collect(self, first: _Item) -> tuple[list[_Item], bool]:
        """The items that join `first`'s batch; True when the batcher was closed meanwhile."""
        batch = [first]
        count = len(first.inputs)
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
                return batch, True
            if item.key != first.key or count + len(item.inputs) > self.max_batch_size:
                self._pending = item  # starts the next batch
                break
            batch.append(item)
            count += len(item.inputs)
        return batch, False

    def _run(self, batch: list[_Item]) -> None:
        try:
            inputs = _concatenate(batch)
            outputs, errors = batch[0].run(inputs)
        except Exception as exc:  # the model failed: every waiting request learns why
            log.exception("batch of %d failed on model %s", len(batch), self.name)
            for item in batch:
                item.future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(len(inputs))
        start = 0
        for item in batch:
            n = len(item.inputs)
            failed = sorted(i for i in errors if start <= i < start + n)
            if failed:  # the request fails on its first bad input, numbered as it sent them
                error = errors[failed[0]]
                item.future.set_exception(type(error)(f"image {failed[0] - start}: {error}"))
            else:
                item.future.set_result(_rows(outputs, start, start + n))
            start += n
