"""Shared fixtures: a generated image set and one trained export reused by many tests.

Everything runs on CPU with weights=none and 32 px images, so a full train ->
export -> reload cycle takes well under a minute on 2 cores.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path

import pytest

from bench.common import free_port
from imgclf.config import parse_config
from imgclf.demo_data import make_shapes_dataset

FAST = {
    "image_size": 32,
    "weights": "none",
    # The cheapest recipe: this fixture tests the plumbing (train -> export -> serve);
    # tests/test_recipe.py and tests/test_quality.py test from_scratch, weights=none's default.
    "recipe": "fine_tune",
    "batch_size": 16,
    "head_epochs": 4,
    "fine_tune_epochs": 2,
    "augmentation": "light",
    "learning_rate": 2e-3,
    "fine_tune_learning_rate": 1e-4,
    "early_stopping_patience": 0,
}


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shapes_dataset(
        tmp_path_factory.mktemp("shapes"), classes=3, per_class=30, size=48, seed=1
    )


@pytest.fixture(scope="session")
def fast_config():
    return parse_config(FAST)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, shapes_dir: Path, fast_config):
    """One real run, published to its own model repository."""
    from imgclf.trainer.run import train_and_export

    root = tmp_path_factory.mktemp("trained")
    return train_and_export(
        fast_config,
        data=shapes_dir,
        name="shapes",
        model_dir=root / "models",
        run_dir=root / "run",
    )


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory):
    """IMGCLF_TEST_REDIS_URL, or a throwaway redis-server on a free port."""
    import shutil
    import subprocess
    import time

    import redis

    given = os.environ.get("IMGCLF_TEST_REDIS_URL")
    if given:
        yield given
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "the queue tests need Redis: install redis-server (Debian/Ubuntu: "
            "apt-get install redis-server; macOS: brew install redis) or set "
            "IMGCLF_TEST_REDIS_URL=redis://HOST:PORT/DB"
        )
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    client.close()
    yield url
    proc.terminate()
    proc.wait(10)


def _amqp_reachable(url: str) -> bool:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def amqp_url(tmp_path_factory: pytest.TempPathFactory):
    """IMGCLF_TEST_AMQP_URL, else a RabbitMQ on 127.0.0.1:5672 (guest), else a throwaway
    rabbitmq-server on free ports. Skipped when none can be had, except under CI."""
    given = os.environ.get("IMGCLF_TEST_AMQP_URL")
    if given:
        yield given
        return
    local = "amqp://guest:guest@127.0.0.1:5672//"
    if _amqp_reachable(local):
        yield local
        return
    from tests.rabbitmq import start_rabbitmq

    server = start_rabbitmq(tmp_path_factory.mktemp("rabbitmq"))
    if server is None:
        message = (
            "the RabbitMQ tests need RabbitMQ: install rabbitmq-server (Debian/Ubuntu: "
            "apt-get install rabbitmq-server) or set IMGCLF_TEST_AMQP_URL=amqp://..."
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield server.url
    finally:
        server.stop()
