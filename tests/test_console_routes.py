"""The console's files and its read-only routes, without a browser (Flask's test client
over a repository holding two copies of the trained version)."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

from imgclf import registry, repository
from imgclf.server.auth import Auth
from imgclf.server.console import UI_DIR
from imgclf.server.control import ControlPlane
from imgclf.server.core import DataPlane
from imgclf.server.manager import ModelManager
from imgclf.server.metrics import Metrics
from imgclf.server.rest import create_app
from imgclf.settings import Settings
from tests.servers import copy_version

ROOT = Path(__file__).resolve().parent.parent


def client(model_dir: Path, **settings):
    config = Settings(model_dir=model_dir, **settings)
    manager = ModelManager(config)  # never started: these routes load no model
    app = create_app(
        DataPlane(manager, config, Metrics()), ControlPlane(config, manager), Auth(config)
    )
    return _Buffered(app)


class _Buffered:
    """A test client whose answers are read and closed (file responses hold a handle)."""

    def __init__(self, app) -> None:
        self._client = app.test_client()

    def get(self, url: str, **kwargs):
        return self._client.get(url, buffered=True, **kwargs)


@pytest.fixture(scope="module")
def repo(trained, tmp_path_factory) -> Path:
    model_dir = tmp_path_factory.mktemp("console-routes") / "models"
    for version in (1, 2):
        copy_version(trained.version_dir, model_dir, "shapes", version)
    registry.set_alias(model_dir, "shapes", registry.STABLE, 1, by="test")
    registry.set_alias(model_dir, "shapes", registry.STABLE, 2, by="test")
    return model_dir


def test_every_console_file_ships_as_package_data():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["imgclf.server"]
    files = [p.relative_to(UI_DIR.parent).as_posix() for p in UI_DIR.iterdir()]
    assert {"ui/index.html", "ui/console.js", "ui/console.css"} <= set(files)
    assert all(any(fnmatch.fnmatch(f, p) for p in patterns) for f in files), files


def test_the_console_loads_nothing_from_elsewhere():
    for path in UI_DIR.iterdir():
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", path.read_text()), path.name
        assert "cdn" not in path.read_text().lower(), path.name


def test_console_page_is_served_with_its_policy(repo):
    web = client(repo)
    page = web.get("/ui/")
    assert page.status_code == 200 and b"<title>imgclf console</title>" in page.data
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert web.get("/ui").status_code == 308
    assert web.get("/ui/console.js").status_code == 200
    assert web.get("/ui/../rest.py").status_code == 404
    assert web.get("/ui/%2e%2e/rest.py").status_code == 404


def test_cards_summarise_every_version_and_the_rollback_target(repo):
    answer = client(repo).get("/v1/models/shapes/cards").get_json()
    assert [v["version"] for v in answer["versions"]] == [2, 1]
    card = repository.read_model_card(repo / "shapes/2")
    newest = answer["versions"][0]
    assert newest["test"]["accuracy"] == card["metrics"]["test"]["accuracy"]
    assert newest["artifact_bytes"] == card["artifact_bytes"] and newest["report"] is True
    assert newest["audit"]["images"] == card["audit"]["summary"]["images"]
    assert "seconds" not in newest["audit"]
    assert answer["aliases"] == {"stable": 2} and answer["rollback"] == {"stable": 1}
    assert client(repo).get("/v1/models/nope/cards").status_code == 404


def test_report_files_stay_inside_the_report_folder(repo, tmp_path):
    web = client(repo)
    base = "/v1/models/shapes/versions/1/report/"
    page = web.get(base + "report.html")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert page.headers["Content-Security-Policy"].startswith("sandbox")
    assert web.get(base + "confusion_matrix.png").mimetype == "image/png"
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the web")
    link = repo / "shapes/1/report/link.txt"  # the module's repo: removed again below
    link.symlink_to(secret)
    escapes = (
        "../model_card.json",
        "..%2fmodel_card.json",
        "%2e%2e/saved_model.pb",
        "/etc/passwd",
        "..\\model_card.json",
        "link.txt",
        "",
        "golden",
    )
    try:
        for escape in escapes:
            assert web.get(base + escape, follow_redirects=True).status_code == 404, escape
    finally:
        link.unlink()
    assert web.get("/v1/models/shapes/versions/9/report/report.html").status_code == 404
    assert web.get("/v1/models/shapes/versions/x1/report/report.html").status_code == 400


def test_compare_gives_deltas_matrices_and_the_gate_verdict(repo):
    web = client(repo)
    answer = web.get("/v1/models/shapes/compare?a=1&b=2").get_json()
    labels = answer["a"]["labels"]
    assert [row["label"] for row in answer["per_class"]] == labels
    assert all(row["recall"]["delta"] == 0 for row in answer["per_class"])
    assert len(answer["confusion"]["a"]) == len(labels) == len(answer["confusion"]["b"])
    assert answer["verdict"]["decision"] == "promote" and answer["verdict"]["reasons"] == []
    assert "recorded in its model card" in answer["verdict"]["compared_on"]
    bad = web.get("/v1/models/shapes/compare?a=1&b=x")
    assert bad.status_code == 400 and "'b'" in bad.get_json()["error"]
    assert web.get("/v1/models/shapes/compare?a=1&b=9").status_code == 404


def test_the_gate_refuses_a_worse_candidate(repo, tmp_path):
    """The verdict is the training gate's decide(): a recall drop is named."""
    import json
    import shutil

    model_dir = tmp_path / "models"
    shutil.copytree(repo, model_dir)
    card_path = model_dir / "shapes/2/model_card.json"
    card = json.loads(card_path.read_text())
    worst = card["labels"][0]
    card["metrics"]["test"]["per_class"][worst]["recall"] -= 0.5
    card["metrics"]["test"]["accuracy"] -= 0.2
    card_path.write_text(json.dumps(card))
    verdict = client(model_dir).get("/v1/models/shapes/compare?a=1&b=2").get_json()["verdict"]
    assert verdict["decision"] == "reject"
    assert any(f"recall of {worst!r} drops" in r for r in verdict["reasons"])


def test_predict_tokens_guard_the_model_routes(repo):
    web = client(repo, predict_tokens=["p"], admin_tokens=["a"])
    assert web.get("/v1/models/shapes/cards").status_code == 401
    assert web.get("/ui/").status_code == 200
    ok = web.get("/v1/models/shapes/cards", headers={"Authorization": "Bearer p"})
    assert ok.status_code == 200
