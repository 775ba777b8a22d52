"""The REST API (Flask): TensorFlow Serving's endpoints plus upload, jobs and ops.

Four blueprints: `predict` (the TF Serving model routes, one view per verb), `admin`
(model list, label promotion, training jobs; admin token), `ops` (health, readiness,
metrics, OpenAPI) and `console` (the web console at /ui/ and its read-only model routes,
imgclf.server.console). Each view is parse (rest_codec) -> core -> encode (rest_codec);
errors are the project's exceptions, rendered as {"error": "...", "request_id": "..."}
with their own HTTP status.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
import uuid

from flask import Blueprint, Flask, Request, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.routing import BaseConverter

from imgclf import contract
from imgclf.errors import ImgclfError, InvalidInput, NotFound, PayloadTooLarge, quote
from imgclf.server import rest_codec
from imgclf.server.auth import Auth, bearer
from imgclf.server.console import console_routes
from imgclf.server.control import ControlPlane
from imgclf.server.core import DataPlane, Target
from imgclf.server.openapi import OPENAPI

log = logging.getLogger("imgclf.server.access")
PROTOCOL = "rest"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_FORM_PARTS_SLACK = 16  # multipart parts beyond the image limit (form fields such as top_k)

# The three ways to name what serves: a model, a pinned version, or a version alias.
_TARGETS = (
    "/v1/models/<segment:name>",
    "/v1/models/<segment:name>/versions/<segment:version>",
    "/v1/models/<segment:name>/labels/<segment:label>",
)


class _Request(Request):
    """Multipart parts held in memory (the body is already capped at max_request_bytes):
    a refused upload leaves no temporary files behind to close."""

    def _get_file_stream(
        self, total_content_length, content_type, filename=None, content_length=None
    ):
        return io.BytesIO()


class SegmentConverter(BaseConverter):
    """One path segment up to a ':verb' (checked by rest_codec.parse_target, not here,
    so a wrong name or version gets a message rather than a bare 404)."""

    regex = "[^/:]+"


def _target(name: str, version: str | None = None, label: str | None = None) -> Target:
    g.target = rest_codec.parse_target(name, version, label)
    return g.target


def _token() -> str | None:
    return bearer(request.headers.get("Authorization"))


def _body_json(max_bytes: int):
    if request.content_length and request.content_length > max_bytes:
        raise PayloadTooLarge(f"request body over the limit of {max_bytes} bytes")
    try:
        return json.loads(request.get_data(cache=False) or b"null")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidInput("the request body is not valid JSON") from None


def _add_target_rules(bp: Blueprint, suffix: str, view, methods: list[str]) -> None:
    for rule in _TARGETS:
        bp.add_url_rule(rule + suffix, view_func=view, methods=methods)


def predict_routes(data: DataPlane, auth: Auth) -> Blueprint:
    """TF Serving's model routes: status, metadata, :predict, :classify, plus :explain and
    :upload."""
    bp = Blueprint("predict", __name__)
    max_bytes = data.limits.max_request_bytes

    def status(name: str, version: str | None = None, label: str | None = None):
        target = _target(name, version, label)
        return jsonify(rest_codec.version_status(data.status(target, PROTOCOL)))

    def metadata(name: str, version: str | None = None, label: str | None = None):
        target = _target(name, version, label)
        served, signature_def_map = data.metadata(target, PROTOCOL)
        g.version = served.version
        return jsonify(rest_codec.encode_metadata(target, served.version, signature_def_map))

    def predict(name: str, version: str | None = None, label: str | None = None):
        target = _target(name, version, label)
        auth.require("predict", _token())
        signature, fmt, values = rest_codec.parse_predict_body(_body_json(max_bytes))
        if signature == contract.SERVING_DEFAULT:
            inputs = rest_codec.decode_images(values)
        else:
            inputs = rest_codec.decode_tensors(values)
        prediction = data.predict(target, inputs, PROTOCOL)
        g.version = prediction.version
        return jsonify(rest_codec.encode_outputs(prediction, fmt))

    def classify(name: str, version: str | None = None, label: str | None = None):
        target = _target(name, version, label)
        auth.require("predict", _token())
        images, min_score = rest_codec.parse_classify_body(_body_json(max_bytes))
        prediction = data.classify(target, images, PROTOCOL, min_score)
        g.version = prediction.version
        return jsonify(rest_codec.encode_classify(prediction))

    def explain(name: str, version: str | None = None, label: str | None = None):
        target = _target(name, version, label)
        auth.require("predict", _token())
        images, top_k, min_score = rest_codec.parse_explain_body(_body_json(max_bytes))
        explained = data.explain(target, images, PROTOCOL, min_score)
        g.version = explained.prediction.version
        return jsonify(rest_codec.encode_explain(target, explained, top_k))

    def upload(name: str, version: str | None = None, label: str | None = None):
        target = _target(name, version, label)
        auth.require("predict", _token())
        files = _uploaded_files(data.limits.max_images, max_bytes)
        top_k = rest_codec.parse_top_k(request.values.get("top_k"))
        wants_explanations = rest_codec.parse_flag(request.values.get("explain"), "explain")
        images = [f.read() for f in files]
        explained = None
        min_score = rest_codec.parse_min_score(request.values.get("min_score"))
        if wants_explanations:
            explained = data.explain(target, images, PROTOCOL, min_score)
            prediction = explained.prediction
        else:
            prediction = data.classify(target, images, PROTOCOL, min_score)
        g.version = prediction.version
        filenames = [f.filename or "" for f in files]
        return jsonify(rest_codec.encode_upload(target, filenames, prediction, top_k, explained))

    def regress(name: str, version: str | None = None, label: str | None = None):
        _target(name, version, label)
        raise InvalidInput(
            ":regress is not offered: the models are classifiers; use :predict or :classify"
        )

    def unknown_verb(verb: str, name: str, version: str | None = None, label: str | None = None):
        raise NotFound(f"unknown verb :{quote(verb)}; use :predict, :classify, :explain or :upload")

    _add_target_rules(bp, "", status, ["GET"])
    _add_target_rules(bp, "/metadata", metadata, ["GET"])
    _add_target_rules(bp, ":predict", predict, ["POST"])
    _add_target_rules(bp, ":classify", classify, ["POST"])
    _add_target_rules(bp, ":explain", explain, ["POST"])
    _add_target_rules(bp, ":upload", upload, ["POST"])
    _add_target_rules(bp, ":regress", regress, ["POST"])
    _add_target_rules(bp, ":<segment:verb>", unknown_verb, ["POST"])
    return bp


def _uploaded_files(max_images: int, max_bytes: int) -> list:
    """The multipart file fields; too many parts is named as such, not as a body size."""
    try:
        files = [f for key in request.files for f in request.files.getlist(key)]
    except RequestEntityTooLarge:
        if request.content_length and request.content_length > max_bytes:
            raise PayloadTooLarge(f"request body over the limit of {max_bytes} bytes") from None
        raise PayloadTooLarge(
            f"the multipart body has more than {request.max_form_parts} parts; send at most "
            f"{max_images} images per request"
        ) from None
    if not files:
        raise InvalidInput("send the images as multipart/form-data file fields")
    return files


def admin_routes(control: ControlPlane, auth: Auth, max_bytes: int) -> Blueprint:
    """Model list, label promotion and training jobs; every route needs the admin token."""
    bp = Blueprint("admin", __name__)

    @bp.before_request
    def _admin_only() -> None:
        auth.require("admin", _token())

    @bp.get("/v1/models")
    def list_models():
        return jsonify(models=control.models())

    @bp.post("/v1/models/<segment:name>/labels/<segment:label>")
    def promote(name: str, label: str):
        target = _target(name, None, label)
        body = _body_json(max_bytes)
        version = body.get("version") if isinstance(body, dict) else None
        return jsonify(control.promote(target.name, label, version))

    @bp.post("/v1/jobs")
    def submit_job():
        return jsonify(control.submit(_body_json(max_bytes))), 202

    @bp.get("/v1/jobs")
    def list_jobs():
        try:
            limit = min(1000, max(1, int(request.args.get("limit", "100")[:8])))
        except ValueError:
            raise InvalidInput("limit must be an integer") from None
        return jsonify(jobs=control.jobs(limit))

    @bp.get("/v1/jobs/<job_id>")
    def get_job(job_id: str):
        return jsonify(control.job(job_id))

    @bp.get("/v1/jobs/<job_id>/logs")
    def job_logs(job_id: str):
        try:
            offset = int(request.args.get("offset", 0))
        except ValueError:
            raise InvalidInput("offset must be an integer") from None
        if offset < 0:
            raise InvalidInput("offset must be >= 0")
        return jsonify(control.job_log(job_id, offset))

    @bp.delete("/v1/jobs/<job_id>")
    def cancel_job(job_id: str):
        return jsonify(control.cancel(job_id))

    return bp


def ops_routes(data: DataPlane) -> Blueprint:
    bp = Blueprint("ops", __name__)

    @bp.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @bp.get("/readyz")
    def readyz():
        ready, models = data.ready()
        return jsonify(ready=ready, models=models), 200 if ready else 503

    @bp.get("/metrics")
    def metrics():
        # content_type, not mimetype: Flask would append a second charset.
        return Response(generate_latest(data.metrics.registry), content_type=CONTENT_TYPE_LATEST)

    @bp.get("/openapi.json")
    def openapi():
        return jsonify(OPENAPI)

    return bp


def create_app(data: DataPlane, control: ControlPlane, auth: Auth) -> Flask:
    max_bytes = data.limits.max_request_bytes
    app = Flask("imgclf")
    app.request_class = _Request
    app.config["MAX_CONTENT_LENGTH"] = max_bytes
    app.config["MAX_FORM_PARTS"] = data.limits.max_images + _FORM_PARTS_SLACK
    app.url_map.converters["segment"] = SegmentConverter
    app.register_blueprint(admin_routes(control, auth, max_bytes))
    app.register_blueprint(predict_routes(data, auth))
    app.register_blueprint(ops_routes(data))
    app.register_blueprint(console_routes(control.settings.model_dir, auth))
    _install_request_hooks(app, max_bytes)
    return app


def _install_request_hooks(app: Flask, max_bytes: int) -> None:
    """Request id in and out, one access-log line, errors as JSON with their status."""

    @app.before_request
    def _start() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        g.started = time.monotonic()

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.request_id
        target = g.get("target")
        entry = {
            "request_id": g.request_id,
            "method": request.method,
            "path": request.path[:200],
            "status": response.status_code,
            "ms": round((time.monotonic() - g.started) * 1000, 2),
            "model": target.name if target else None,
            "version": g.get("version"),
        }
        log.info(json.dumps(entry))
        return response

    @app.errorhandler(ImgclfError)
    def _imgclf_error(exc: ImgclfError):
        return jsonify(error=str(exc), request_id=g.get("request_id")), exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"request body over the limit of {max_bytes} bytes"
        return jsonify(error=message, request_id=g.get("request_id")), exc.code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error (request %s)", g.get("request_id"))
        return jsonify(error="internal error", request_id=g.get("request_id")), 500
