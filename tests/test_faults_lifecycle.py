"""Fault injection: label moves, broken and half-written versions, garbage labels.json.

Each scenario drives a real server with a client loop on the healthy model and asserts
zero failed requests, the version that answers at the end, and a clear reason.
Run alone with `pytest -m faults`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from imgclf import registry
from imgclf.client import Client, Conflict
from imgclf.server.app import ImgclfServer
from imgclf.server.core import Target
from tests.faults import (
    Traffic,
    complete_version,
    half_written_version,
    refused_version,
    status,
    wait_until,
)
from tests.servers import copy_version, start_server

pytestmark = pytest.mark.faults


@dataclass
class Served:
    """A real server on a repository of copies of the shared trained version."""

    model_dir: Path
    server: ImgclfServer
    base: str
    image: bytes
    source: Path  # the trained version the copies come from

    def traffic(self, path: str) -> Traffic:
        """A client loop predicting on `/v1/models/{path}:predict`."""
        return Traffic(f"{self.base}/v1/models/{path}:predict", self.image)


@pytest.fixture
def serve(trained, tmp_path):
    """Start a server on `models` (each a copy of version 1), with label stable -> 1 on
    'shapes' unless `stable=False`; stopped after the test."""
    servers: list[ImgclfServer] = []

    def start(models: tuple[str, ...] = ("shapes",), *, stable: bool = True) -> Served:
        model_dir = tmp_path / "models"
        for name in models:
            copy_version(trained.version_dir, model_dir, name, 1)
        if stable:
            registry.set_alias(model_dir, "shapes", "stable", 1)
        server = start_server(model_dir)
        servers.append(server)
        image = (trained.version_dir / "golden/0000.img").read_bytes()
        base = f"http://127.0.0.1:{server.rest_port}"
        return Served(model_dir, server, base, image, trained.version_dir)

    yield start
    for server in servers:
        server.stop()


def _problems(base: str, name: str) -> list[str]:
    models = requests.get(f"{base}/v1/models", timeout=10)
    assert models.status_code == 200, models.text
    return next(m["problems"] for m in models.json()["models"] if m["name"] == name)


def test_promote_to_a_refused_version_is_409_and_changes_nothing(serve):
    served = serve()
    model_dir, server, base = served.model_dir, served.server, served.base
    with served.traffic("shapes/labels/stable") as traffic:
        refused_version(served.source, model_dir, "shapes", 2)
        wait_until(lambda: status(base, "shapes").get("2") == "END", what="v2 refused")
        answer = requests.post(
            f"{base}/v1/models/shapes/labels/stable", json={"version": 2}, timeout=60
        )
        assert answer.status_code == 409
        assert "golden replay mismatch" in answer.json()["error"]
        assert "unchanged (still version 1)" in answer.json()["error"]
        assert registry.aliases(model_dir, "shapes") == {"stable": 1}
        # The same refusal over gRPC (imgclf.v1 SetLabel) and through the client.
        with Client(grpc_target=f"127.0.0.1:{server.grpc_port}") as client:
            with pytest.raises(Conflict, match="golden replay mismatch"):
                client.set_label("shapes", "stable", 2)
            assert client.set_label("shapes", "stable", 1) == {"stable": 1}
        assert registry.aliases(model_dir, "shapes") == {"stable": 1}
        wait_until(lambda: traffic.count >= 10)
    assert traffic.failures == []
    assert server.data.resolve(Target("shapes"))[0].version == 1
    assert status(base, "shapes")["1"] == "AVAILABLE"
    assert requests.get(f"{base}/readyz", timeout=5).status_code == 200


def test_rollback_to_an_unloaded_version_reloads_it(serve, caplog):
    served = serve()
    model_dir, server, base = served.model_dir, served.server, served.base
    stable = f"{base}/v1/models/shapes/labels/stable"
    with served.traffic("shapes/labels/stable") as traffic:
        copy_version(served.source, model_dir, "shapes", 2)
        answer = requests.post(stable, json={"version": 2}, timeout=60)
        assert answer.status_code == 200, answer.text
        # Version 2 serves at once; version 1 is unloaded once nothing holds it (the
        # version policy's own role moves to version 2 when the poll sees its folder).
        assert server.data.resolve(Target("shapes", alias="stable"))[0].version == 2
        wait_until(lambda: status(base, "shapes")["1"] == "END", what="version 1 unloaded")
        # Back through the API: version 1 is loaded again before the label moves.
        answer = requests.post(stable, json={"version": 1}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert server.data.resolve(Target("shapes", alias="stable"))[0].version == 1
        pinned = requests.post(
            f"{base}/v1/models/shapes/versions/1:predict", data=traffic.body, timeout=30
        )
        assert pinned.status_code == 200, pinned.text
        # And through the CLI's path (labels.json rewritten): 1 -> 2 -> rollback -> 1.
        registry.set_alias(model_dir, "shapes", "stable", 2)
        wait_until(lambda: server.manager.labels("shapes") == {"stable": 2})
        wait_until(lambda: status(base, "shapes")["1"] == "END")
        with caplog.at_level(logging.INFO, logger="imgclf.server.manager"):
            assert registry.rollback(model_dir, "shapes") == 1
            wait_until(lambda: server.manager.labels("shapes") == {"stable": 1})
        assert "label 'stable' -> version 1" in caplog.text
        # Through the manager's own rollback (what an API rollback calls).
        registry.set_alias(model_dir, "shapes", "stable", 2)
        wait_until(lambda: server.manager.labels("shapes") == {"stable": 2})
        assert server.manager.rollback("shapes") == 1
        assert server.data.resolve(Target("shapes"))[0].version == 1
    assert traffic.failures == []


GARBAGE_LABELS = [
    '{"labels": {"stable": "one"}}',
    "[]",
    "null",
    '{"labels": {"stable": 9}}',
    "{not json",
]


def test_garbage_labels_json_keeps_the_last_good_mapping(serve):
    """Each kind of garbage in turn on one server, a good labels.json between them, so
    every round starts from a clean state and the other model gets a new version each time."""
    served = serve(("shapes", "other"))
    model_dir, server, base = served.model_dir, served.server, served.base
    good = (model_dir / "shapes" / "labels.json").read_text()
    for version, garbage in enumerate(GARBAGE_LABELS, start=2):
        with served.traffic("shapes/labels/stable") as traffic:
            (model_dir / "shapes" / "labels.json").write_text(garbage)
            wait_until(lambda: _problems(base, "shapes"), what=f"labels.json {garbage} reported")
            # The scan of the other model goes on: it gets its new version.
            copy_version(served.source, model_dir, "other", version)
            wait_until(lambda v=str(version): status(base, "other").get(v) == "AVAILABLE")
            assert server.manager.labels("shapes") == {"stable": 1}, garbage
            assert requests.get(f"{base}/v1/models/shapes", timeout=10).status_code == 200
            assert requests.get(f"{base}/readyz", timeout=5).status_code == 200
        assert traffic.failures == [], garbage
        problem = " ".join(_problems(base, "shapes"))
        if garbage == '{"labels": {"stable": 9}}':
            assert "label 'stable' wants version 9, which does not exist" in problem
            assert "version 1 still serves" in problem
        else:
            assert "labels.json" in problem and "keeping the last good labels" in problem, garbage
        assert _problems(base, "other") == []
        (model_dir / "shapes" / "labels.json").write_text(good)
        wait_until(lambda: _problems(base, "shapes") == [], what="the good labels.json read again")


def test_hand_edited_label_to_a_refused_version_keeps_serving(serve):
    served = serve()
    model_dir, server, base = served.model_dir, served.server, served.base
    with served.traffic("shapes") as traffic:
        refused_version(served.source, model_dir, "shapes", 2)
        (model_dir / "shapes" / "labels.json").write_text(
            json.dumps({"labels": {"stable": 2}, "history": []})
        )
        wait_until(lambda: any("wants version 2" in p for p in _problems(base, "shapes")))
        wait_until(lambda: traffic.count >= 10)
    assert traffic.failures == []
    assert server.data.resolve(Target("shapes"))[0].version == 1
    assert server.manager.labels("shapes") == {"stable": 1}
    problem = " ".join(_problems(base, "shapes"))
    assert "golden replay mismatch" in problem and "version 1 still serves" in problem


def test_broken_newest_version_never_unloads_the_one_that_serves(serve):
    served = serve(stable=False)
    model_dir, server, base = served.model_dir, served.server, served.base  # no labels
    with served.traffic("shapes") as traffic:
        target = half_written_version(served.source, model_dir, "shapes", 2)
        wait_until(lambda: status(base, "shapes").get("2") == "END", what="v2 refused")
        assert status(base, "shapes")["1"] == "AVAILABLE"
        assert server.data.resolve(Target("shapes"))[0].version == 1
        # Completed later: its files changed, so it is tried again and takes over.
        complete_version(served.source, target)
        wait_until(lambda: status(base, "shapes").get("2") == "AVAILABLE", what="v2 retried")
        wait_until(lambda: status(base, "shapes").get("1") == "END", what="v1 unloaded")
        assert server.data.resolve(Target("shapes"))[0].version == 2
    assert traffic.failures == []


def test_a_broken_new_model_does_not_make_the_server_unready(serve):
    served = serve(stable=False)
    model_dir, server, base = served.model_dir, served.server, served.base
    with served.traffic("shapes") as traffic:
        half_written_version(served.source, model_dir, "broken", 1)
        wait_until(lambda: status(base, "broken").get("1") == "END", what="broken refused")
        ready = requests.get(f"{base}/readyz", timeout=5)
        assert ready.status_code == 200
        broken = ready.json()["models"]["broken"]
        assert broken["ready"] is False and "every version was refused" in broken["reason"]
        assert ready.json()["models"]["shapes"] == {"ready": True, "version": 1, "reason": ""}
        serving = health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            def status_of(service: str) -> int | None:
                request = health_pb2.HealthCheckRequest(service=service)
                try:
                    return health.Check(request, timeout=5).status
                except grpc.RpcError:  # NOT_FOUND until the watcher first sets it
                    return None

            wait_until(
                lambda: status_of("model/broken") is not None and status_of("") == serving,
                10,
                "health reported",
            )
            assert status_of("model/broken") == health_pb2.HealthCheckResponse.NOT_SERVING
            assert status_of("model/shapes") == serving
            assert status_of("") == serving
    assert traffic.failures == []
