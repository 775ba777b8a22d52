"""The Python client over REST and gRPC against real servers and a real worker."""

from __future__ import annotations

import threading
import time

import pytest

import imgclf.client
from imgclf.client import BadRequest, Client, Conflict, NotFound, ServerUnavailable, Unauthorized
from tests.servers import copy_version, start_server
from tests.workers import WorkerProcess, isolated_queue

ADMIN = "client-test-token"


@pytest.fixture(scope="module")
def env(trained, tmp_path_factory, redis_url, shapes_dir):
    root = tmp_path_factory.mktemp("client")
    model_dir = root / "models"
    copy_version(trained.version_dir, model_dir, "shapes", 1)
    settings, worker_env = isolated_queue(root, redis_url, [shapes_dir.parent])
    server = start_server(
        model_dir,
        admin_tokens=[ADMIN],
        **{
            key: getattr(settings, key)
            for key in (
                "broker_url",
                "result_backend",
                "queue",
                "key_prefix",
                "data_roots",
                "work_dir",
            )
        },
    )
    worker = WorkerProcess(worker_env, root / "worker.log").wait_ready()
    server.rest_url = f"http://127.0.0.1:{server.rest_port}"
    server.grpc_target = f"127.0.0.1:{server.grpc_port}"
    server.images = [(trained.version_dir / f"golden/{i:04d}.img") for i in range(3)]
    server.shapes = str(shapes_dir)
    yield server
    worker.stop()
    server.stop()


def clients(env):
    return [
        Client(rest_url=env.rest_url, token=ADMIN, model="shapes"),
        Client(grpc_target=env.grpc_target, token=ADMIN, model="shapes"),
    ]


def test_public_surface_is_pinned():
    assert imgclf.client.__all__ == [
        "DEFAULT_RETRIES",
        "DEFAULT_TIMEOUT",
        "BadRequest",
        "Client",
        "Conflict",
        "Explanation",
        "Forbidden",
        "ImgclfClientError",
        "Job",
        "LabelScore",
        "NotFound",
        "PayloadTooLarge",
        "Prediction",
        "RequestError",
        "ServerUnavailable",
        "TransportError",
        "Unauthorized",
    ]


def test_rest_and_grpc_give_the_same_results(env):
    rest, grpc_client = clients(env)
    with rest, grpc_client:
        a = rest.predict(env.images)
        b = grpc_client.predict([p.read_bytes() for p in env.images])
        assert [p.label for p in a] == [p.label for p in b]
        assert [p.version for p in a] == [p.version for p in b] == [1, 1, 1]
        for x, y in zip(a, b, strict=True):
            assert set(x.scores) == {"circle", "square", "triangle"}
            assert x.scores == pytest.approx(y.scores, abs=1e-5)
            assert abs(sum(x.scores.values()) - 1.0) < 1e-4
            # One order over both transports: by score, best first.
            assert list(x.scores) == list(y.scores)
            assert list(x.scores.values()) == sorted(x.scores.values(), reverse=True)
            assert next(iter(x.scores)) == x.label
        top = rest.classify(env.images[:1], top_k=2)[0]
        assert [t.label for t in top] == [
            t.label for t in grpc_client.classify(env.images[:1], top_k=2)[0]
        ]
        assert len(top) == 2 and top[0].score >= top[1].score
        # REST classify is TF Serving's :classify; it agrees with predict.
        first = rest.predict(env.images[:1])[0]
        assert [t.label for t in top] == list(first.scores)[:2]
        assert [t.score for t in top] == pytest.approx(list(first.scores.values())[:2], abs=1e-5)
        assert rest.models()[0]["name"] == grpc_client.models()[0]["name"] == "shapes"


def test_clear_errors_and_no_retry_on_4xx(env):
    for client in clients(env):
        with client:
            with pytest.raises(BadRequest, match="not a JPEG"):
                client.predict([b"not an image"])
            with pytest.raises(NotFound):
                client.predict(env.images[:1], model="nope")
            with pytest.raises(BadRequest, match="outside the allowed data roots"):
                client.submit_job("/etc")
    with Client(rest_url=env.rest_url, model="shapes") as anonymous, pytest.raises(Unauthorized):
        anonymous.models()


def test_submit_wait_and_cancel(env):
    grpc_client = Client(grpc_target=env.grpc_target, token=ADMIN, model="shapes")
    rest = Client(rest_url=env.rest_url, token=ADMIN, model="shapes")
    with grpc_client, rest:
        job = grpc_client.submit_job(
            env.shapes,
            image_size=32,
            weights="none",
            recipe="fine_tune",  # the cheap recipe: this tests the client, not the recipe
            head_epochs=1,
            fine_tune_epochs=0,
            augmentation="none",
            promotion_tolerance=1.0,
            max_recall_drop=1.0,
        )
        queued = rest.submit_job(env.shapes, weights="none", image_size=32)
        cancelled = rest.cancel(queued.id)
        assert cancelled.status == "cancelled"
        with pytest.raises(Conflict):
            rest.cancel(queued.id)
        done = grpc_client.wait(job.id, progress=True, timeout=240)
        assert done.status in ("succeeded", "rejected"), done.error
        assert rest.job(job.id).status == done.status


def test_retries_503_until_the_model_is_ready(trained, tmp_path):
    model_dir = tmp_path / "models"
    (model_dir / "late").mkdir(parents=True)
    server = start_server_not_ready(model_dir)
    try:
        url = f"http://127.0.0.1:{server.rest_port}"
        image = trained.version_dir / "golden/0000.img"
        with (
            Client(rest_url=url, model="late", retries=1, backoff=0.05) as impatient,
            pytest.raises(ServerUnavailable),
        ):
            impatient.predict([image])
        threading.Timer(1.0, copy_version, (trained.version_dir, model_dir, "late", 1)).start()
        started = time.monotonic()
        with Client(rest_url=url, model="late", retries=8, backoff=0.25) as patient:
            assert patient.predict([image])[0].version == 1
        assert time.monotonic() - started >= 1.0  # it really waited and retried
    finally:
        server.stop()


def start_server_not_ready(model_dir):
    from imgclf.server.app import ImgclfServer
    from imgclf.settings import Settings

    return ImgclfServer(
        Settings(model_dir=model_dir, rest_port=0, grpc_port=0, poll_interval=0.2, models=["late"])
    ).start()
