"""The web console at /ui/ (static files shipped in imgclf/server/ui/) and the three
small read-only JSON/file routes it needs beyond the public API.

  GET /ui/                                           the console (HTML, JS, CSS)
  GET /v1/models/<name>/cards                        every version's model-card summary
  GET /v1/models/<name>/versions/<v>/report/<path>   a file of that version's report
  GET /v1/models/<name>/compare?a=<v>&b=<v>          two versions and the gate's verdict

The three model routes read what a model already tells anyone who may query it, so they
need the predict role (open unless IMGCLF_PREDICT_TOKENS is set), like :upload. The
console page itself is static and needs no token: every call it makes carries the
token typed into it. The work happens in imgclf.server.versions.
"""

from __future__ import annotations

from pathlib import Path

from flask import (
    Blueprint,
    Response,
    jsonify,
    redirect,
    request,
    send_file,
    send_from_directory,
)

from imgclf.errors import InvalidInput
from imgclf.server import versions
from imgclf.server.auth import Auth, bearer
from imgclf.server.rest_codec import parse_target

UI_DIR = Path(__file__).resolve().parent / "ui"
# The console loads only its own files; images it shows are data: or blob: URLs.
_UI_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "frame-src 'self' data: blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
)
# A report page is shown as an inert document: no scripts, its own opaque origin.
_REPORT_POLICY = "sandbox; default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"


def _confined(response: Response, policy: str) -> Response:
    """A served file under its Content-Security-Policy, never content-sniffed."""
    response.headers["Content-Security-Policy"] = policy
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _version(name: str, version: str) -> int:
    number = parse_target(name, version).version
    assert number is not None
    return number


def _query_version(key: str) -> int:
    value = request.args.get(key, "")
    if not value.isdigit() or len(value) > 19:
        raise InvalidInput(f"query parameter {key!r} must be a version number, got {value[:20]!r}")
    return int(value)


def console_routes(model_dir: Path, auth: Auth) -> Blueprint:
    bp = Blueprint("console", __name__)

    def reader() -> None:
        auth.require("predict", bearer(request.headers.get("Authorization")))

    @bp.get("/ui")
    def ui_root():
        return redirect("/ui/", code=308)

    @bp.get("/ui/", defaults={"filename": "index.html"})
    @bp.get("/ui/<path:filename>")
    def ui_file(filename: str):
        return _confined(send_from_directory(UI_DIR, filename, max_age=0), _UI_POLICY)

    @bp.get("/v1/models/<segment:name>/cards")
    def cards(name: str):
        reader()
        parse_target(name)
        return jsonify(versions.model_versions(model_dir, name))

    @bp.get("/v1/models/<segment:name>/versions/<segment:version>/report/<path:path>")
    def report(name: str, version: str, path: str):
        reader()
        target = versions.report_file(model_dir, name, _version(name, version), path)
        return _confined(send_file(target, max_age=0), _REPORT_POLICY)

    @bp.get("/v1/models/<segment:name>/compare")
    def compare(name: str):
        reader()
        parse_target(name)
        a, b = _query_version("a"), _query_version("b")
        return jsonify(versions.compare(model_dir, name, a, b))

    return bp
