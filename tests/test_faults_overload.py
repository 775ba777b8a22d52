"""503s carry Retry-After (REST header, gRPC trailing metadata) and the client waits that
long instead of its own backoff; the default queue bound refuses before threads run out."""

from __future__ import annotations

import base64
import time

import pytest
import requests

from imgclf.client import Client, ServerUnavailable
from imgclf.server.app import ImgclfServer
from imgclf.settings import Settings
from tests.images import png, rgb_array

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


def test_default_queue_bound_is_below_the_thread_count():
    settings = Settings()
    assert settings.queue_bound() == settings.server_threads - settings.max_batch_size - 1
    assert settings.queue_bound() + settings.max_batch_size < settings.server_threads
    assert Settings(server_threads=8).queue_bound() == 8  # fewer threads than a batch
    assert Settings(max_queue=5).queue_bound() == 5
