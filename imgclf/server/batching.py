"""Dynamic batching: one bounded queue per model, shared by REST and gRPC.

Request threads run only the cheap checks (image count, header sizes) and queue the
encoded bytes. One batching thread per model takes up to `max_batch_size` inputs and
runs them in one call of the version's own graph: for image bytes that is
`serving_default` (decode, resize and model in one call, no per-image Python round
trip). The batch function reports which inputs failed, so a corrupt image fails only
its own request while the rest of the batch answers.

The batch closes as soon as no other admitted request is still on its way and it holds as
many requests as were outstanding during the previous batch (a lone client waits for
nothing), or when its window ends, `batch_timeout` after its first input. The second condition
is for steady concurrent clients: when a batch answers, its clients send their next
requests a few milliseconds later, and a batch that closed on what happened to be queued
at that instant would run half full (16 of 32 clients at 32 clients) at a lower rate
per image. While those clients fit in one batch, the window restarts at each request
that joins (see `_collect` for how long at most). A version's batches may be capped
below `max_batch_size` at its most efficient size, measured when it loads (batchsize.py).
A full queue refuses at once (Overloaded -> 503 / RESOURCE_EXHAUSTED) rather than
letting latency grow without bound.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
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


@dataclass
class _Item:
    inputs: Inputs  # the inputs of one request
    key: object  # batches never mix keys (the version object and the kind of input)
    run: BatchFn
    limit: int  # the most inputs in a batch of this key
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
    """One model's queue and batching thread.

    Every state change (a request queued, an admission ended, close) notifies one
    condition, so the batching thread sleeps until something it waits for happens:
    no polling, and a lone request runs as soon as its own admission ends.
    """

    def __init__(
        self,
        name: str,
        *,
        max_batch_size: int,
        batch_timeout_s: float,
        max_queue: int,
        on_batch: Callable[[int, float, float], None] | None = None,
    ) -> None:
        self.name = name
        self.max_batch_size = max_batch_size
        self.batch_timeout_s = batch_timeout_s
        self.max_queue = max_queue
        self._items: deque[_Item] = deque()
        self._changed = threading.Condition(threading.Lock())
        self._closed = False
        self._on_batch = on_batch
        self._preparing = 0  # admitted requests still checking their inputs
        self._running = 0  # requests in the batch the model is running now
        self._peak = 0  # most requests outstanding at once since the last batch opened
        self._inputs_per_request = 1.0  # in the last batch: clients may send several images
        self._last_run_s = 0.0  # how long the last batch's model call took
        self._admitted = threading.local()  # this thread's admission, until it submits
        self._thread = threading.Thread(target=self._loop, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def depth(self) -> int:
        return len(self._items)

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        """Wrap a request's checks and submit, so a closing batch waits for it.

        The admission ends when the request is queued (in `submit`, under the same lock),
        so the batching thread never sees a queued request still counted as preparing.
        """
        with self._changed:
            self._preparing += 1
            self._note_outstanding()
        self._admitted.open = True
        try:
            yield
        finally:
            if self._admitted.open:  # left before submitting (refused by a check)
                self._admitted.open = False
                with self._changed:
                    self._preparing -= 1
                    self._changed.notify()

    def submit(self, inputs: Inputs, key: object, run: BatchFn, limit: int | None = None) -> Future:
        """Queue one request's inputs; the future resolves to its outputs [n, C].

        `limit` caps the batches of this key below `max_batch_size` (a version's most
        efficient batch size, see batchsize.py); a request bigger than a batch runs alone.
        """
        most = self.max_batch_size if limit is None else max(1, min(limit, self.max_batch_size))
        item = _Item(inputs, key, run, most)
        with self._changed:
            if getattr(self._admitted, "open", False):
                self._admitted.open = False
                self._preparing -= 1
            if len(self._items) >= self.max_queue:
                self._changed.notify()
                raise Overloaded(
                    f"model {self.name!r} is overloaded ({self.max_queue} requests queued); "
                    "retry with backoff"
                )
            self._items.append(item)
            self._note_outstanding()
            self._changed.notify()
        return item.future

    def _outstanding(self) -> int:
        """Requests admitted and not yet answered (called holding the lock)."""
        return self._preparing + len(self._items) + self._running

    def _note_outstanding(self) -> None:
        """Track the most requests outstanding at once (called holding the lock)."""
        self._peak = max(self._peak, self._outstanding())

    def _answered(self) -> None:
        """The running batch is done; called before its futures resolve, so a client
        that comes straight back is not counted twice (answered and preparing)."""
        with self._changed:
            self._running = 0

    def close(self) -> None:
        """Run what is queued, then stop the batching thread."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._changed:
                while not self._items and not self._closed:
                    self._changed.wait()
                if not self._items:
                    return
                opened = time.monotonic()
                batch = self._collect()
                self._running = len(batch)
                self._note_outstanding()
            self._run(batch, time.monotonic() - opened)

    def _collect(self) -> list[_Item]:
        """The first queued item and those that join its batch (called holding the lock).

        The batch closes when it is full, when the next item cannot join (another key,
        or too many inputs), when no admitted request is still preparing and the batch
        holds as many requests as were outstanding at the busiest moment of the last
        batch (the clients it answered are expected back), or when its window ends. A
        drop in load costs one batch its window (or its longest wait, below): the peak
        is measured afresh for every batch.

        While the clients of the last batch fit in one batch (counted in inputs: the
        outstanding requests times the last batch's inputs per request), the window
        restarts at each request that joins: REST clients came back spread over 4-10 ms
        (more on a busy host), a window counted from the opening closed before the last
        of them, and the one left out waited a whole batch and split the next ones
        (12 + 4, 13 + 3... at 16 clients; at 32 clients and batches of 32, batches of
        18-25 on average). The longest wait is three windows, or a quarter of the last
        batch's model time when that is longer: 32 REST clients took over 30 ms to come
        back at times, and waiting a quarter of a batch beats a client waiting a whole one.
        When there are more clients than a batch holds, batches alternate anyway and the
        window is fixed: a growing one made full batches that a late client waited two
        of, and p99 rose (docs/BENCHMARKS.md).
        """
        expected = self._peak
        first = self._items.popleft()
        self._peak = self._outstanding() + 1  # + the batch's first request, taken out
        batch, count = [first], len(first.inputs)
        restart = expected * self._inputs_per_request <= first.limit  # they fit in this one
        opened = time.monotonic()
        deadline = opened + self.batch_timeout_s
        latest = opened + max(3 * self.batch_timeout_s, self._last_run_s / 4)
        while count < first.limit:
            if self._items:
                item = self._items[0]
                if item.key != first.key or count + len(item.inputs) > first.limit:
                    break  # it starts the next batch
                batch.append(self._items.popleft())
                count += len(item.inputs)
                if restart:
                    deadline = min(time.monotonic() + self.batch_timeout_s, latest)
                continue
            remaining = deadline - time.monotonic()
            if self._closed or remaining <= 0:
                break
            if not self._preparing and len(batch) >= expected:
                break  # nobody else is about to join: run now
            self._changed.wait(remaining)
        self._inputs_per_request = count / len(batch)
        return batch

    def _report(self, size: int, gathered_s: float, run_s: float) -> None:
        if self._on_batch is not None:
            self._on_batch(size, gathered_s, run_s)

    def _run(self, batch: list[_Item], gathered_s: float) -> None:
        """Run one batch; `on_batch` learns its size, how long it stayed open for
        requests to join and how long the model call took (failed calls too: they kept
        the model busy)."""
        started = time.monotonic()
        size = sum(len(item.inputs) for item in batch)
        try:
            inputs = _concatenate(batch)
            outputs, errors = batch[0].run(inputs)
        except Exception as exc:  # the model failed: every waiting request learns why
            log.exception("batch of %d failed on model %s", len(batch), self.name)
            self._answered()
            self._report(size, gathered_s, time.monotonic() - started)
            for item in batch:
                item.future.set_exception(exc)
            return
        self._last_run_s = time.monotonic() - started  # the next batch's longest wait
        self._answered()
        self._report(size, gathered_s, self._last_run_s)
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
