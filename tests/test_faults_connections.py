"""Fault injection on the listener: idle and slow connections, oversize bodies, IPv6,
client-chosen metric labels. A client loop on the healthy model must see no failure."""

from __future__ import annotations

import json
import socket
import time

import grpc
import pytest
import requests

from tests.faults import Traffic, b64
from tests.servers import copy_version, start_server

pytestmark = pytest.mark.faults


@pytest.fixture
def image(trained) -> bytes:
    return (trained.version_dir / "golden/0000.img").read_bytes()


@pytest.fixture
def model_dir(trained, tmp_path):
    model_dir = tmp_path / "models"
    copy_version(trained.version_dir, model_dir, "shapes", 1)
    return model_dir


def _open(port: int, count: int, first_bytes: bytes = b"") -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        if first_bytes:
            sock.sendall(first_bytes)
        sockets.append(sock)
    return sockets


def test_idle_connections_and_slowloris_do_not_starve_rest(model_dir, image):
    server = start_server(model_dir, rest_idle_timeout=4.0)
    base = f"http://127.0.0.1:{server.rest_port}"
    held: list[socket.socket] = []
    try:
        with Traffic(f"{base}/v1/models/shapes:predict", image) as traffic:
            held += _open(server.rest_port, 500)
            # Slowloris: a request line and one header, then a byte now and then.
            held += _open(server.rest_port, 150, b"POST /v1/models/shapes:predict HTTP/1.1\r\n")
            for _ in range(3):
                for sock in held[500:]:
                    sock.sendall(b"X")
                started = time.monotonic()
                health = requests.get(f"{base}/healthz", timeout=5)
                assert health.status_code == 200
                assert time.monotonic() - started < 1.0
                started = time.monotonic()
                predict = requests.post(
                    f"{base}/v1/models/shapes:predict",
                    json={"instances": [b64(image)]},
                    timeout=5,
                )
                assert predict.status_code == 200
                assert time.monotonic() - started < 1.0
                time.sleep(0.5)
            # Idle sockets are closed by the server after IMGCLF_REST_IDLE_TIMEOUT.
            idle = held[0]
            idle.settimeout(15)
            assert idle.recv(1) == b""
        assert traffic.failures == []
    finally:
        for sock in held:
            sock.close()
        server.stop()


def test_oversize_body_gets_a_json_413(model_dir):
    server = start_server(model_dir, max_request_bytes=1024 * 1024)
    try:
        answer = requests.post(
            f"http://127.0.0.1:{server.rest_port}/v1/models/shapes:predict",
            data=b"x" * (2 * 1024 * 1024),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert answer.status_code == 413
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.json()["error"] == (
            "request body over the limit of 1048576 bytes (IMGCLF_MAX_REQUEST_BYTES)"
        )
    finally:
        server.stop()


def test_ipv6_loopback_bind(model_dir, image):
    server = start_server(model_dir, host="::1")
    try:
        answer = requests.post(
            f"http://[::1]:{server.rest_port}/v1/models/shapes:predict",
            json={"instances": [b64(image)]},
            timeout=30,
        )
        assert answer.status_code == 200
        with grpc.insecure_channel(f"[::1]:{server.grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
    finally:
        server.stop()


def test_metric_labels_only_name_models_that_exist(model_dir, image):
    server = start_server(model_dir, predict_tokens=["p1"], admin_tokens=["a1"])
    base = f"http://127.0.0.1:{server.rest_port}"
    token = {"Authorization": "Bearer p1"}
    try:
        body = {"instances": [b64(image)]}
        name = "m" * 60
        for i in range(20):
            missing = requests.post(
                f"{base}/v1/models/{name}{i}:predict", json=body, headers=token, timeout=10
            )
            assert missing.status_code == 404
            refused = requests.post(f"{base}/v1/models/{name}x{i}:predict", json=body, timeout=10)
            assert refused.status_code == 401
        ok = requests.post(f"{base}/v1/models/shapes:predict", json=body, headers=token, timeout=30)
        assert ok.status_code == 200
        text = requests.get(f"{base}/metrics", timeout=10).text
        assert name not in text
        assert 'imgclf_requests_total{code="404",model="_unknown",protocol="rest",version=""}' in (
            text
        )
        assert 'model="shapes"' in text
    finally:
        server.stop()


def test_cross_site_requests_are_refused_without_tokens(model_dir, image, shapes_dir, tmp_path):
    server = start_server(
        model_dir,
        data_roots=[shapes_dir.parent],
        result_backend=f"db+sqlite:///{tmp_path / 'jobs.db'}",
        broker_url=f"sqla+sqlite:///{tmp_path / 'broker.db'}",
    )
    base = f"http://127.0.0.1:{server.rest_port}"
    label = f"{base}/v1/models/shapes/labels/stable"
    job = json.dumps({"name": "shapes", "data": str(shapes_dir), "weights": "none"})
    try:
        with Traffic(f"{base}/v1/models/shapes:predict", image) as traffic:
            plain = requests.post(
                f"{base}/v1/jobs",
                data=job,
                headers={"Content-Type": "text/plain", "Origin": "http://evil.example"},
                timeout=10,
            )
            assert plain.status_code == 415
            assert "needs Content-Type: application/json" in plain.json()["error"]
            foreign = requests.post(
                label, json={"version": 1}, headers={"Origin": "http://evil.example"}, timeout=10
            )
            assert foreign.status_code == 403 and "cross-site" in foreign.json()["error"]
            rebound = requests.post(
                label, json={"version": 1}, headers={"Host": "evil.example:80"}, timeout=10
            )
            assert rebound.status_code == 403 and "not a loopback name" in rebound.json()["error"]
            # The same calls from this machine go through.
            same_site = requests.post(
                label, json={"version": 1}, headers={"Origin": base}, timeout=30
            )
            assert same_site.status_code == 200, same_site.text
            # Predictions keep TF Serving's lenient rules (curl -d is form-encoded).
            form = requests.post(
                f"{base}/v1/models/shapes:predict",
                data=json.dumps({"instances": [b64(image)]}),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=30,
            )
            assert form.status_code == 200
            nul = requests.post(
                f"{base}/v1/jobs",
                json={"name": "shapes", "data": "shapes\u0000x", "weights": "none"},
                timeout=30,
            )
            assert nul.status_code == 400 and "NUL byte" in nul.json()["error"]
        assert traffic.failures == []
        assert requests.get(f"{base}/v1/jobs", timeout=10).json()["jobs"] == []
    finally:
        server.stop()
