"""`imgclf serve` writes log lines from one thread: request threads only queue them."""

from __future__ import annotations

import base64
import json
import logging
import subprocess
import sys
import threading

import pytest
import requests

from imgclf import contract
from imgclf.server.logqueue import queued_logging
from tests.servers import copy_version, serve_process


class _Gate(logging.Handler):
    """Collects formatted lines; can hold the writer inside `emit` until released."""

    def __init__(self, hold: bool = False) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        self.lines: list[str] = []
        self.entered = threading.Event()
        self.go = threading.Event()
        if not hold:
            self.go.set()

    def emit(self, record: logging.LogRecord) -> None:
        self.entered.set()
        self.go.wait(30)
        self.lines.append(self.format(record))


@pytest.fixture()
def root_gate():
    """The root logger with only a gate handler, restored afterwards."""

    def install(hold: bool) -> _Gate:
        gate = _Gate(hold)
        root = logging.getLogger()
        saved.extend(root.handlers)
        for handler in saved:
            root.removeHandler(handler)
        root.addHandler(gate)
        return gate

    saved: list[logging.Handler] = []
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.INFO)
    yield install
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in saved:
        root.addHandler(handler)
    root.setLevel(level)


def test_queued_lines_reach_the_original_handlers_in_their_format_and_order(root_gate):
    gate = root_gate(hold=False)
    log = logging.getLogger("imgclf.server.access")
    with queued_logging():
        assert gate not in logging.getLogger().handlers  # the queue stands in front of it
        for i in range(50):
            log.info('{"request": %d}', i)
        try:
            raise ValueError("bad image")
        except ValueError:
            log.exception("unhandled error")
    # leaving drains the queue and puts the handler back
    assert logging.getLogger().handlers == [gate]
    assert gate.lines[:50] == [f'INFO imgclf.server.access: {{"request": {i}}}' for i in range(50)]
    assert gate.lines[50].startswith("ERROR imgclf.server.access: unhandled error\nTraceback")
    assert "ValueError: bad image" in gate.lines[50]


def test_a_stuck_writer_neither_blocks_the_request_threads_nor_grows_the_queue(root_gate):
    gate = root_gate(hold=True)
    log = logging.getLogger("imgclf.server.access")
    with queued_logging(max_records=3):
        log.info("first")
        assert gate.entered.wait(10)  # the writer holds "first" and writes nothing more
        sender = threading.Thread(target=lambda: [log.info("line %d", i) for i in range(10)])
        sender.start()
        sender.join(10)
        assert not sender.is_alive()  # ten lines logged while the writer was stuck
        gate.go.set()
    prefix = "INFO imgclf.server.access: "
    assert gate.lines == [
        prefix + "first",
        "WARNING imgclf.server.logqueue: 7 log lines dropped: the log writer fell behind",
        prefix + "line 0",
        prefix + "line 1",
        prefix + "line 2",
    ]


def test_imgclf_serve_writes_every_access_line_with_its_request_id(trained, tmp_path):
    """The shipped path end to end (`imgclf serve`, which queues its log lines): every
    answered request leaves its line, in order, and the process ends cleanly on
    SIGTERM. What only the queue does is checked by the two tests above."""
    model_dir = tmp_path / "models"
    copy_version(trained.version_dir, model_dir, "shapes", 1)
    image = next((trained.version_dir / contract.GOLDEN_DIR).glob("*.img")).read_bytes()
    body = json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]})
    log = tmp_path / "serve.log"
    ids = [f"logqueue-{i}" for i in range(20)]
    with serve_process(model_dir, log, {}) as base:
        for request_id in ids:
            answer = requests.post(
                f"{base}/v1/models/shapes:predict",
                data=body,
                headers={"X-Request-ID": request_id},
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
    access = [
        json.loads(line.split("imgclf.server.access: ", 1)[1])
        for line in log.read_text().splitlines()
        if "imgclf.server.access: " in line
    ]
    predictions = [entry for entry in access if entry["path"] == "/v1/models/shapes:predict"]
    assert [entry["request_id"] for entry in predictions] == ids
    assert {entry["status"] for entry in predictions} == {200}
    assert "signal 15: shutting down" in log.read_text()


_STUCK_WRITER = """
import logging, sys, time
from imgclf.server.logqueue import queued_logging
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
with queued_logging(max_records=100):
    for i in range(5000):  # ~400 KB: the stderr pipe (64 KB), never read, fills up
        logging.getLogger("x").info("line %d %s", i, "x" * 60)
        time.sleep(0.0002)
print("left", flush=True)
"""


def test_a_process_whose_log_writer_is_stuck_still_exits():
    """stderr is a pipe nobody reads: the writer blocks in write() holding its handler's
    lock. Leaving the block gives up on it after its timeout, and the process exits
    instead of waiting for that lock in logging's exit hook."""
    with subprocess.Popen(
        [sys.executable, "-c", _STUCK_WRITER],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,  # never read
    ) as process:
        try:
            assert process.wait(60) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        assert process.stdout.read() == b"left\n"
