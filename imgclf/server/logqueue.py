"""Log lines leave the request path: request threads queue them, one thread writes them.

Every REST request and RPC writes one access-log line before its answer goes out. With a
plain handler each line takes the handler's lock and a write to stderr, so under load
the answering threads queued on that one lock (py-spy, 32 REST clients: 16% of the
request threads' samples waited in `Handler.acquire`) and answered clients came back
later to the next batch. Here a request thread only formats the record and queues it.

The queue is bounded: when the writer cannot keep up (stderr is a pipe nobody reads),
lines are dropped and counted, and the count is logged once the writer catches up,
rather than memory growing or request threads blocking. A writer still stuck at
shutdown is left behind, and the process exits without waiting for it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import logging.handlers
import queue
import threading
from collections.abc import Iterator

MAX_QUEUED_RECORDS = 10_000


class _DroppingQueueHandler(logging.handlers.QueueHandler):
    """Queue without blocking; a full queue drops the record and counts it."""

    def __init__(self, records: queue.Queue) -> None:
        super().__init__(records)
        self.dropped = 0
        self._lock_dropped = threading.Lock()

    def handle(self, record: logging.LogRecord):
        """Without the handler lock that `Handler.handle` holds around `emit`: the queue
        is thread-safe, and that lock would line the request threads up again."""
        passed = self.filter(record)
        if passed:
            self.emit(record)
        return passed

    def enqueue(self, record: logging.LogRecord) -> None:
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            with self._lock_dropped:
                self.dropped += 1

    def take_dropped(self) -> int:
        with self._lock_dropped:
            dropped, self.dropped = self.dropped, 0
        return dropped


class _Listener(logging.handlers.QueueListener):
    """Writes queued records with the original handlers, and reports drops."""

    def __init__(self, records: queue.Queue, front: _DroppingQueueHandler, handlers) -> None:
        super().__init__(records, *handlers, respect_handler_level=True)
        self._front = front

    def stop(self, timeout: float = 5.0) -> bool:
        """Write what is queued and end the writer; False when it is stuck past `timeout`.

        A stuck writer holds its handler's lock inside `write()`, and `logging.shutdown`
        (run at exit) would wait for that lock for ever; so then the process skips it.
        """
        try:
            self.queue.put(self._sentinel, timeout=timeout)
        except queue.Full:
            stuck = True
        else:
            self._thread.join(timeout)
            stuck = self._thread.is_alive()
        if stuck:
            atexit.unregister(logging.shutdown)
        return not stuck

    def handle(self, record: logging.LogRecord) -> None:
        super().handle(record)
        dropped = self._front.take_dropped()
        if dropped:
            note = logging.makeLogRecord(
                {
                    "name": __name__,
                    "levelno": logging.WARNING,
                    "levelname": "WARNING",
                    "msg": "%d log lines dropped: the log writer fell behind",
                    "args": (dropped,),
                }
            )
            super().handle(note)


@contextlib.contextmanager
def queued_logging(max_records: int = MAX_QUEUED_RECORDS) -> Iterator[_DroppingQueueHandler]:
    """Route the root logger's handlers through a queue while the block runs.

    On exit the writer drains what is queued, and the original handlers are put back.
    """
    root = logging.getLogger()
    handlers = list(root.handlers)
    records: queue.Queue = queue.Queue(max_records)
    front = _DroppingQueueHandler(records)
    listener = _Listener(records, front, handlers)
    listener.start()
    root.handlers = [front]  # one assignment: no record finds both, or neither
    try:
        yield front
    finally:
        root.handlers = handlers  # lines from now on are written directly
        listener.stop()  # writes every record queued before it
