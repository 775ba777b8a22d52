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
from imgclf.server.rest import create_app
from imgclf.settings import Settings

# The catch-all that answers "unknown verb" for anything but the documented verbs.
UNKNOWN_VERB = ":<segment:verb>"


def app(tmp_path):
    settings = Settings(model_dir=tmp_path)
    manager = ModelManager(settings)
    return create_app(
        DataPlane(manager, settings, Metrics()), ControlPlane(settings, manager), Auth(settings)
    )


def operations(path: str) -> set[str]:
    return {k for k in OPENAPI["paths"][path] if k in ("get", "post", "put", "delete", "patch")}


def test_document_is_valid_openapi():
    validate(OPENAPI)


def test_every_flask_route_is_documented(tmp_path):
    documented = set(OPENAPI["paths"])
    seen = set()
    for rule in app(tmp_path).url_map.iter_rules():
        if rule.endpoint == "static" or rule.rule.endswith(UNKNOWN_VERB):
            continue
        methods = {m.lower() for m in rule.methods} - {"head", "options"}
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule).replace("{job_id}", "{id}")
        assert path in documented, rule.rule
        assert methods <= operations(path), (rule.rule, methods)
        seen.add(path)
    # And nothing documented that the app does not serve.
    assert documented == seen
    assert "post" in operations("/v1/models/{name}/labels/{label}")  # promote
    for target in ("{name}", "{name}/versions/{version}", "{name}/labels/{label}"):
        for verb in (":predict", ":classify", ":explain", ":upload", ":regress"):
            assert f"/v1/models/{target}{verb}" in seen
