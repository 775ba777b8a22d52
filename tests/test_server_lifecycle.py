"""Hot swaps under load, refused versions, labels, batching and overload, startup rules."""

from __future__ import annotations

import base64
import json
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest
import requests

from imgclf import registry
from imgclf.errors import ConfigError, Overloaded
from imgclf.server.app import ImgclfServer
from imgclf.server.batching import Batcher
from imgclf.settings import Settings
from tests.servers import copy_version, start_server


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def wait_until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError("condition not reached")


def test_hot_swap_under_load_and_refused_versions(trained, tmp_path):
    model_dir = tmp_path / "models"
    copy_version(trained.version_dir, model_dir, "shapes", 1)
    registry.set_alias(model_dir, "shapes", "stable", 1)
    server = start_server(model_dir)
    base = f"http://127.0.0.1:{server.rest_port}"
    image = (trained.version_dir / "golden/0000.img").read_bytes()
    body = json.dumps({"instances": [b64(image)]})
    seen, failures, stop = [], [], threading.Event()

    def client() -> None:
        session = requests.Session()
        while not stop.is_set():
            response = session.post(f"{base}/v1/models/shapes:predict", data=body, timeout=30)
            if response.status_code != 200:
                failures.append(response.text)
            version = requests.get(f"{base}/v1/models/shapes/labels/stable", timeout=10)
            seen.append(version.json()["model_version_status"][0]["version"])

    threads = [threading.Thread(target=client) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        copy_version(trained.version_dir, model_dir, "shapes", 2)
        registry.set_alias(model_dir, "shapes", "stable", 2)
        wait_until(lambda: "2" in seen)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join()
        assert failures == []
        assert seen[0] == "1" and seen[-1] == "2"
        status = requests.get(f"{base}/v1/models/shapes", timeout=10).json()
        states = {s["version"]: s["state"] for s in status["model_version_status"]}
        assert states["2"] == "AVAILABLE"

        # A broken version (not a SavedModel) is reported and never served.
        broken = model_dir / "shapes" / ".staging-broken"
        shutil.copytree(trained.version_dir, broken)
        (broken / "saved_model.pb").write_bytes(b"garbage")
        broken.rename(model_dir / "shapes" / "3")
        wait_until(
            lambda: any(
                s["version"] == "3" and s["state"] == "END"
                for s in requests.get(f"{base}/v1/models/shapes", timeout=10).json()[
                    "model_version_status"
                ]
            )
        )
        v3 = requests.get(f"{base}/v1/models/shapes/versions/3", timeout=10).json()
        assert v3["model_version_status"][0]["status"]["error_message"]
        # A version whose golden replay disagrees with its stored outputs is refused too.
        tampered = model_dir / "shapes" / ".staging-tampered"
        shutil.copytree(trained.version_dir, tampered)
        manifest = json.loads((tampered / "golden/manifest.json").read_text())
        manifest["inputs"][0]["probabilities"][0] += 0.01
        (tampered / "golden/manifest.json").write_text(json.dumps(manifest))
        tampered.rename(model_dir / "shapes" / "4")
        wait_until(
            lambda: any(
                s["version"] == "4" and s["state"] == "END"
                for s in requests.get(f"{base}/v1/models/shapes", timeout=10).json()[
                    "model_version_status"
                ]
            )
        )
        v4 = requests.get(f"{base}/v1/models/shapes/versions/4", timeout=10).json()
        assert "golden replay mismatch" in v4["model_version_status"][0]["status"]["error_message"]
        answer = requests.post(f"{base}/v1/models/shapes:predict", data=body, timeout=30)
        assert answer.status_code == 200
        pinned = requests.post(f"{base}/v1/models/shapes/versions/4:predict", data=body, timeout=30)
        assert pinned.status_code == 503
        assert requests.get(f"{base}/readyz", timeout=5).status_code == 200
    finally:
        stop.set()
        server.stop()


def test_readyz_waits_for_a_model(tmp_path, trained):
    model_dir = tmp_path / "models"
    (model_dir / "shapes").mkdir(parents=True)
    server = ImgclfServer(
        Settings(
            model_dir=model_dir, rest_port=0, grpc_port=0, poll_interval=0.2, models=["shapes"]
        )
    ).start()
    try:
        base = f"http://127.0.0.1:{server.rest_port}"
        assert requests.get(f"{base}/readyz", timeout=5).status_code == 503
        assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
        image = (trained.version_dir / "golden/0000.img").read_bytes()
        early = requests.post(
            f"{base}/v1/models/shapes:predict", json={"instances": [b64(image)]}, timeout=10
        )
        assert early.status_code == 503
        copy_version(trained.version_dir, model_dir, "shapes", 1)
        wait_until(lambda: requests.get(f"{base}/readyz", timeout=5).status_code == 200)
    finally:
        server.stop()


def test_predict_tokens_and_non_loopback_needs_admin_tokens(tmp_path, trained):
    with pytest.raises(ConfigError, match="beyond loopback"):
        ImgclfServer(Settings(model_dir=tmp_path, host="0.0.0.0", rest_port=0, grpc_port=0))
    model_dir = tmp_path / "models"
    copy_version(trained.version_dir, model_dir, "shapes", 1)
    server = start_server(model_dir, predict_tokens=["p1"], admin_tokens=["a1"])
    try:
        url = f"http://127.0.0.1:{server.rest_port}/v1/models/shapes:predict"
        body = {"instances": [b64((trained.version_dir / "golden/0000.img").read_bytes())]}
        assert requests.post(url, json=body, timeout=10).status_code == 401
        for token in ("p1", "a1"):
            answer = requests.post(
                url, json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
            )
            assert answer.status_code == 200
        jobs = f"http://127.0.0.1:{server.rest_port}/v1/jobs"
        assert (
            requests.get(jobs, headers={"Authorization": "Bearer p1"}, timeout=10).status_code
            == 403
        )
    finally:
        server.stop()


def test_batcher_batches_and_refuses_when_full():
    gate = threading.Event()
    calls = []

    def predict(images: np.ndarray) -> tuple[np.ndarray, dict]:
        calls.append(len(images))
        gate.wait(10)
        return np.repeat(images[:, :1, 0, 0], 2, axis=1), {}

    batcher = Batcher("m", max_batch_size=4, batch_timeout_s=0.05, max_queue=2)
    key = object()
    first = batcher.submit(np.zeros((1, 1, 1, 1), np.float32), key, predict)
    time.sleep(0.2)  # the batching thread takes it and blocks inside predict
    queued = [batcher.submit(np.full((1, 1, 1, 1), i, np.float32), key, predict) for i in (1, 2)]
    with pytest.raises(Overloaded, match="overloaded"):
        batcher.submit(np.zeros((1, 1, 1, 1), np.float32), key, predict)
    gate.set()
    assert first.result(5).shape == (1, 2)
    assert [f.result(5)[0, 0] for f in queued] == [1.0, 2.0]
    assert calls == [1, 2]  # the two queued requests ran as one batch
    batcher.close()


def gated_model():
    """A batch function that records each batch's size and holds the model (after
    setting `entered`) until `gate` is set: -> (predict, calls, entered, gate)."""
    entered, gate = threading.Event(), threading.Event()
    calls: list[int] = []

    def predict(images: np.ndarray) -> tuple[np.ndarray, dict]:
        calls.append(len(images))
        entered.set()
        gate.wait(10)
        return np.zeros((len(images), 2), np.float32), {}

    return predict, calls, entered, gate


def test_batch_waits_for_the_clients_the_last_batch_answered_then_forgets_them():
    """Steady clients come back a moment after their answers: the batch waits for them.

    Four requests were outstanding while the first batch ran; the next batch holds the
    three that queued, waits for the fourth (the answered client's next request) and
    runs all four in one call. Once load drops, a lone request runs without a window.
    """
    predict, calls, entered, gate = gated_model()
    batcher = Batcher("m", max_batch_size=8, batch_timeout_s=2.0, max_queue=8)
    key, image = object(), np.zeros((1, 1, 1, 1), np.float32)
    first = batcher.submit(image, key, predict)
    entered.wait(5)  # the first batch runs alone and holds the model
    queued = [batcher.submit(image, key, predict) for _ in range(3)]  # 4 outstanding
    gate.set()
    first.result(5)
    deadline = time.monotonic() + 5
    while batcher.depth() and time.monotonic() < deadline:  # the next batch has opened
        time.sleep(0.001)
    assert batcher.depth() == 0
    back = batcher.submit(image, key, predict)  # the first client's next request
    for future in [*queued, back]:
        future.result(5)
    assert calls == [1, 4]
    batcher.submit(image, key, predict).result(5)  # load fell: at most one timeout
    started = time.monotonic()
    batcher.submit(image, key, predict).result(5)
    assert time.monotonic() - started < 1.0  # alone again: no 2 s window
    assert calls == [1, 4, 1, 1]
    batcher.close()


@pytest.mark.parametrize(
    ("max_batch_size", "per_request", "batches"),
    [
        (8, 1, [1, 5, 6]),
        (6, 1, [1, 5, 6]),
        (5, 1, [1, 5, 2]),
        (12, 2, [2, 10, 12]),
        (10, 2, [2, 10, 4]),
    ],
    ids=[
        "clients-fit-one-batch",
        "clients-fill-exactly-one-batch",
        "more-clients-than-a-batch",
        "two-image-clients-fill-exactly-one-batch",
        "two-image-clients-overflow-a-batch",
    ],
)
def test_the_window_restarts_at_each_return_while_the_clients_fit_in_one_batch(
    max_batch_size, per_request, batches
):
    """A client that comes back after the window does not wait a whole batch: while the
    last batch's clients fit in one batch, the window restarts at each request that joins.
    (At 16 REST clients, returns spread past a fixed window split the batches that
    followed: 12 + 4, 13 + 3...)

    A batch of five runs while a sixth request queues. When it answers, one client is
    back after 0.6 s and four after 1.2 s: past the window (0.9 s) counted from the
    opening, within the one restarted at the first return, so all six run together; also
    when six is exactly what a batch holds (32 clients at batches of 32 ran in batches of
    18-25 with a fixed window, 32 with the restart). When the six clients do not fit in
    one batch (at most 5), batches alternate anyway: the window stays fixed, and the
    queued request and the first client run at 0.9 s. Fitting is counted in images: six
    clients sending two images each fit a batch of 12, not one of 10.
    """
    calls: list[int] = []
    entered, gates = [threading.Event(), threading.Event()], [threading.Event(), threading.Event()]

    def predict(images: np.ndarray) -> tuple[np.ndarray, dict]:
        call = len(calls)
        calls.append(len(images))
        if call < len(gates):  # the first two batches hold the model until released
            entered[call].set()
            gates[call].wait(10)
        return np.zeros((len(images), 2), np.float32), {}

    batcher = Batcher("m", max_batch_size=max_batch_size, batch_timeout_s=0.9, max_queue=8)
    key, image = object(), np.zeros((per_request, 1, 1, 1), np.float32)
    first = batcher.submit(image, key, predict)
    entered[0].wait(5)
    queued = [batcher.submit(image, key, predict) for _ in range(4)]
    gates[0].set()
    first.result(5)
    clients = [*queued, batcher.submit(image, key, predict)]  # the batch of five
    entered[1].wait(5)
    straggler = batcher.submit(image, key, predict)  # queues behind it: six outstanding

    def come_back(answer: Future, delay: float) -> Future:
        answer.result(5)
        time.sleep(delay)  # the client's own time between its answer and its next request
        return batcher.submit(image, key, predict)

    with ThreadPoolExecutor(len(clients)) as pool:
        gates[1].set()
        returns = list(pool.map(come_back, clients, [0.6, 1.2, 1.2, 1.2, 1.2]))
    for future in [straggler, *returns]:
        future.result(5)
    assert calls[:3] == batches and sum(calls) == 12 * per_request  # then the rest
    batcher.close()


def test_the_longest_wait_grows_to_a_quarter_of_a_slow_batch():
    """Returns that keep joining within the window are waited for up to three windows,
    or a quarter of the last batch's model time when that is longer: 32 REST clients at
    times took over three windows to come back, and the one left out waited a whole batch.

    Seven clients' batch holds the model 5 s while an eighth request queues; they come back
    0.1-1.0 s after their answers, 0.15 s apart: within the restarted window (0.3 s) each
    time, past three windows (0.9 s), within a quarter of the batch (1.25 s).
    """
    calls: list[int] = []
    entered, gate, slow = threading.Event(), threading.Event(), threading.Event()

    def predict(images: np.ndarray) -> tuple[np.ndarray, dict]:
        calls.append(len(images))
        if len(calls) == 1:
            entered.set()
            gate.wait(10)
        elif len(calls) == 2:
            slow.set()
            time.sleep(5.0)  # a slow batch
        return np.zeros((len(images), 2), np.float32), {}

    batcher = Batcher("m", max_batch_size=16, batch_timeout_s=0.3, max_queue=16)
    key, image = object(), np.zeros((1, 1, 1, 1), np.float32)
    first = batcher.submit(image, key, predict)
    entered.wait(5)
    queued = [batcher.submit(image, key, predict) for _ in range(6)]
    gate.set()
    first.result(5)
    clients = [*queued, batcher.submit(image, key, predict)]  # the batch of seven
    slow.wait(5)
    straggler = batcher.submit(image, key, predict)  # queues behind it: eight outstanding

    def come_back(answer: Future, delay: float) -> Future:
        answer.result(10)
        time.sleep(delay)
        return batcher.submit(image, key, predict)

    with ThreadPoolExecutor(len(clients)) as pool:
        delays = [0.1 + 0.15 * i for i in range(len(clients))]
        returns = list(pool.map(come_back, clients, delays))
    for future in [straggler, *returns]:
        future.result(5)
    assert calls == [1, 7, 8]
    batcher.close()


def test_batch_closes_at_once_alone_and_waits_for_requests_still_decoding():
    """Also what `on_batch` reports per batch: (size, time open, time in the model)."""
    calls, timings = [], []

    def predict(images: np.ndarray) -> tuple[np.ndarray, dict]:
        calls.append(len(images))
        time.sleep(0.05)  # the model's own work
        return np.zeros((len(images), 2), np.float32), {}

    batcher = Batcher(
        "m",
        max_batch_size=8,
        batch_timeout_s=2.0,
        max_queue=8,
        on_batch=lambda *timing: timings.append(timing),
    )
    key, image = object(), np.zeros((1, 1, 1, 1), np.float32)
    started = time.monotonic()
    with batcher.admission():
        future = batcher.submit(image, key, predict)
    future.result(5)
    assert time.monotonic() - started < 0.5  # alone: no 2 s batch window
    decoding, release = threading.Event(), threading.Event()

    def slow_request() -> None:
        with batcher.admission():
            decoding.set()
            release.wait(5)
            late = batcher.submit(image, key, predict)
        late.result(5)

    other = threading.Thread(target=slow_request)
    other.start()
    decoding.wait(5)
    first = batcher.submit(image, key, predict)
    time.sleep(0.3)
    assert not first.done()  # waiting for the request that is still decoding
    release.set()
    first.result(5)
    other.join()
    assert calls == [1, 2]
    batcher.close()
    (alone, alone_open, alone_ran), (pair, pair_open, pair_ran) = timings
    assert (alone, pair) == (1, 2)
    assert alone_open < 0.25 <= pair_open < 2.0  # the pair waited for the decoding request
    assert 0.05 <= alone_ran < 1.0 and 0.05 <= pair_ran < 1.0


def test_a_version_limit_caps_its_batches_below_max_batch_size():
    predict, calls, entered, gate = gated_model()
    batcher = Batcher("m", max_batch_size=8, batch_timeout_s=0.05, max_queue=8)
    key, image = object(), np.zeros((1, 1, 1, 1), np.float32)
    first = batcher.submit(image, key, predict, limit=2)
    entered.wait(5)  # the first batch holds the model while five more queue
    queued = [batcher.submit(image, key, predict, limit=2) for _ in range(5)]
    gate.set()
    for future in [first, *queued]:
        future.result(5)
    assert calls == [1, 2, 2, 1]
    big = batcher.submit(np.zeros((3, 1, 1, 1), np.float32), key, predict, limit=2)
    assert big.result(5).shape == (3, 2)  # a request bigger than the limit runs alone
    assert calls[-1] == 3
    batcher.close()
