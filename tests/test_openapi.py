"""The OpenAPI document is valid and describes every REST endpoint the app serves."""

from __future__ import annotations

import re

from openapi_spec_validator import validate

from imgclf.server.auth import Auth
from imgclf.server.control import ControlPlane
from imgclf.server.core import DataPlane
from imgclf.server.manager import ModelManager
from imgclf.server.metrics import Metrics
from imgclf.server.openapi import OPENAPI
from imgclf.server.rest import _MODEL_PATH, create_app
from imgclf.settings import Settings

MODEL_ROUTE = "/v1/models/<path:rest>"
# What TF Serving's REST API and our verbs allow under /v1/models/<name>.
TARGETS = ("shapes", "shapes/versions/3", "shapes/labels/stable")
SUFFIXES = {"": {"get"}, "/metadata": {"get"}, ":predict": {"post"}, ":classify": {"post"}}
SUFFIXES[":upload"] = {"post"}


def app(tmp_path):
    settings = Settings(model_dir=tmp_path)
    manager = ModelManager(settings)
    return create_app(
        DataPlane(manager, settings, Metrics()), ControlPlane(settings, manager), Auth(settings)
    )


def spec_path(concrete: str) -> str:
    """/v1/models/shapes/versions/3:predict -> /v1/models/{name}/versions/{version}:predict"""
    path = re.sub(r"^/v1/models/shapes", "/v1/models/{name}", concrete)
    return path.replace("/versions/3", "/versions/{version}").replace(
        "/labels/stable", "/labels/{label}"
    )


def operations(path: str) -> set[str]:
    return {k for k in OPENAPI["paths"][path] if k in ("get", "post", "put", "delete", "patch")}


def test_document_is_valid_openapi():
    validate(OPENAPI)


def test_every_flask_route_is_documented(tmp_path):
    documented = set(OPENAPI["paths"])
    seen = set()
    for rule in app(tmp_path).url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        methods = {m.lower() for m in rule.methods} - {"head", "options"}
        if rule.rule == MODEL_ROUTE:
            # The catch-all: every path its grammar accepts is in the document.
            for target in TARGETS:
                for suffix, verbs in SUFFIXES.items():
                    rest = target + suffix
                    assert _MODEL_PATH.match(rest), rest
                    path = spec_path(f"/v1/models/{rest}")
                    assert path in documented, path
                    assert verbs <= operations(path), path
                    seen.add(path)
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule).replace("{job_id}", "{id}")
        assert path in documented, rule.rule
        assert methods <= operations(path), (rule.rule, methods)
        seen.add(path)
    # And nothing documented that the app does not serve.
    assert documented == seen | {"/v1/models/{name}/labels/{label}"}
    assert "post" in operations("/v1/models/{name}/labels/{label}")  # promote
