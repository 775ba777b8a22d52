"""503s carry Retry-After (REST header, gRPC trailing metadata) and the client waits that
long instead of its own backoff; the default queue bound refuses before threads run out,
and under a real overload at the default settings the excess is refused while the
accepted requests answer correctly (bench/overload.py measures the latencies)."""

from __future__ import annotations

import base64
import json
import threading
import time

import numpy as np
import pytest
import requests

from imgclf.client import Client, ServerUnavailable
from imgclf.errors import Overloaded
from imgclf.server.app import ImgclfServer
from imgclf.server.batching import Batcher
from imgclf.settings import Settings
from tests.images import jpeg, png, rgb_array

pytestmark = pytest.mark.faults


@pytest.fixture
def not_ready(tmp_path):
    """A server whose one configured model has no version yet: every predict is a 503."""
    (tmp_path / "shapes").mkdir()
    server = ImgclfServer(
        Settings(model_dir=tmp_path, rest_port=0, grpc_port=0, poll_interval=0.2, models=["shapes"])
    ).start()
    yield server
    server.stop()


def test_503_says_when_to_come_back_and_the_client_listens(not_ready):
    base = f"http://127.0.0.1:{not_ready.rest_port}"
    image = png(rgb_array(8, 8))
    body = {"instances": [{"b64": base64.b64encode(image).decode()}]}
    answer = requests.post(f"{base}/v1/models/shapes:predict", json=body, timeout=10)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    for client in (
        Client(rest_url=base, model="shapes", retries=2, backoff=0.01),
        Client(
            grpc_target=f"127.0.0.1:{not_ready.grpc_port}", model="shapes", retries=2, backoff=0.01
        ),
    ):
        started = time.monotonic()
        with client, pytest.raises(ServerUnavailable) as info:
            client.predict([image])
        assert info.value.retry_after == 1.0
        assert time.monotonic() - started >= 2.0  # two waits of 1 s, not 0.01 s + 0.02 s


def test_default_queue_bound_holds_a_whole_batch_below_the_thread_count():
    settings = Settings()
    assert settings.queue_bound() == settings.server_threads - settings.max_batch_size - 1
    assert settings.queue_bound() >= settings.max_batch_size  # a whole batch can queue
    assert settings.queue_bound() + settings.max_batch_size < settings.server_threads
    assert Settings(max_batch_size=8).queue_bound() == settings.server_threads - 9
    assert Settings(server_threads=8).queue_bound() == 8  # fewer threads than a batch
    assert Settings(max_queue=5).queue_bound() == 5


def test_a_whole_batch_of_clients_can_queue_behind_a_running_batch_at_the_defaults():
    """All max_batch_size clients may be queued at once: the answered ones come back
    before the batching thread takes the others. None of them is refused (a bound of
    max_batch_size - 1, the old default, refused one in bench.serving); past the bound
    the next request is."""
    settings = Settings()
    release = threading.Event()

    def run(inputs):
        release.wait(30)
        return np.zeros((len(inputs), 2), np.float32), {}

    batcher = Batcher(
        "m",
        max_batch_size=settings.max_batch_size,
        batch_timeout_s=0.0,
        max_queue=settings.queue_bound(),
    )
    try:
        running = batcher.submit([b"a"], "key", run)
        deadline = time.monotonic() + 10
        while batcher.depth() and time.monotonic() < deadline:  # taken: its batch runs
            time.sleep(0.01)
        assert batcher.depth() == 0, "the first request's batch did not start"
        assert settings.queue_bound() >= settings.max_batch_size
        queued = [batcher.submit([b"q"], "key", run) for _ in range(settings.queue_bound())]
        with pytest.raises(Overloaded):
            batcher.submit([b"one too many"], "key", run)
        release.set()
        for future in [running, *queued]:
            assert future.result(30).shape == (1, 2)
    finally:
        release.set()
        batcher.close()


def test_overload_at_the_default_settings_refuses_with_retry_after(trained, tmp_path):
    from tests.servers import copy_version

    copy_version(trained.version_dir, tmp_path / "models", "shapes", 1)
    # The default threads, batch size and queue bound: only the ports are chosen here.
    server = ImgclfServer(Settings(model_dir=tmp_path / "models", rest_port=0, grpc_port=0))
    server.start()
    try:
        assert server.wait_ready(120)
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/shapes:predict"
        # Small files that decode to large canvases, several a request: each batch takes
        # long enough for the queue to fill, while the bodies stay cheap to send and parse.
        colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
        images = [jpeg(np.full((1536, 1536, 3), c, np.uint8)) for c in colours]
        body = json.dumps({"instances": [{"b64": base64.b64encode(i).decode()} for i in images]})
        headers = {"Content-Type": "application/json"}
        expected = requests.post(url, data=body, headers=headers, timeout=60).json()
        answers: list[tuple[int, str | None, dict]] = []
        stop = threading.Event()

        def client() -> None:
            session = requests.Session()
            while not stop.is_set():
                answer = session.post(url, data=body, headers=headers, timeout=60)
                answers.append(
                    (answer.status_code, answer.headers.get("Retry-After"), answer.json())
                )

        def seen(status: int) -> int:
            return sum(1 for a in answers if a[0] == status)

        clients = [threading.Thread(target=client, daemon=True) for _ in range(96)]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 60
        while (seen(503) < 3 or seen(200) < 8) and time.monotonic() < deadline:
            time.sleep(0.05)
        stop.set()
        for thread in clients:
            thread.join(60)
    finally:
        server.stop()
    assert {status for status, _, _ in answers} == {200, 503}, {a[0] for a in answers}
    refused = [a for a in answers if a[0] == 503]
    assert len(refused) >= 3
    assert all(retry == "1" and "overloaded" in body["error"] for _, retry, body in refused)
    for status, _, body in answers:
        if status == 200:  # accepted requests still answer, and answer right
            for got, want in zip(body["predictions"], expected["predictions"], strict=True):
                assert got["probabilities"] == pytest.approx(want["probabilities"], abs=1e-4)
