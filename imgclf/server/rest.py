"""The REST API (Flask): TensorFlow Serving's endpoints plus jobs, upload and ops.

Translation only: requests become DataPlane / ControlPlane calls; errors are the
project's exceptions, rendered as {"error": "..."} with their HTTP status.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from flask import Flask, Response, g, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from imgclf import contract
from imgclf.errors import ImgclfError, InvalidInput, NotFound, PayloadTooLarge
from imgclf.server import rest_codec
from imgclf.server.auth import Auth, bearer
from imgclf.server.control import ControlPlane
from imgclf.server.core import DataPlane, Target
from imgclf.server.openapi import OPENAPI

log = logging.getLogger("imgclf.server.access")

_MODEL_PATH = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_-]{0,63})"
    r"(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[a-z][a-z0-9_-]{0,31}))?"
    r"(?::(?P<verb>[a-z]+)|(?P<metadata>/metadata))?$"
)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def create_app(data: DataPlane, control: ControlPlane, auth: Auth) -> Flask:
    settings = data.settings
    app = Flask("imgclf")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes

    @app.before_request
    def _start() -> None:
        given = request.headers.get("X-Request-ID", "")
        g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        g.started = time.monotonic()
        g.target = None
        g.version = None

    @app.after_request
    def _finish(response: Response) -> Response:
        response.headers["X-Request-ID"] = g.request_id
        target = g.get("target")
        if target is not None:
            data.record(target, "rest", response.status_code, g.get("version"), g.started)
        log.info(
            json.dumps(
                {
                    "request_id": g.request_id,
                    "method": request.method,
                    "path": request.path,
                    "status": response.status_code,
                    "ms": round((time.monotonic() - g.started) * 1000, 2),
                    "model": target.name if target else None,
                    "version": g.get("version"),
                }
            )
        )
        return response

    @app.errorhandler(ImgclfError)
    def _imgclf_error(exc: ImgclfError):
        return jsonify(error=str(exc), request_id=g.get("request_id")), exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        message = exc.description or exc.name
        if exc.code == 413:
            message = f"request body over the limit of {settings.max_request_bytes} bytes"
        return jsonify(error=message, request_id=g.get("request_id")), exc.code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error (request %s)", g.get("request_id"))
        return jsonify(error="internal error", request_id=g.get("request_id")), 500

    def token() -> str | None:
        return bearer(request.headers.get("Authorization"))

    def body_json():
        if request.content_length and request.content_length > settings.max_request_bytes:
            raise PayloadTooLarge("request body too large")
        try:
            return json.loads(request.get_data(cache=False) or b"null")
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise InvalidInput("the request body is not valid JSON") from None

    # ---- TensorFlow Serving API ---------------------------------------------------
    @app.route("/v1/models/<path:rest>", methods=["GET", "POST"])
    def model_endpoint(rest: str):
        match = _MODEL_PATH.match(rest)
        if not match:
            raise NotFound(f"no such endpoint: /v1/models/{rest}")
        parts = match.groupdict()
        target = Target(
            parts["name"], int(parts["version"]) if parts["version"] else None, parts["label"]
        )
        verb = parts["verb"]
        if request.method == "GET":
            if verb:
                raise InvalidInput(f":{verb} needs POST")
            if parts["metadata"]:
                return metadata(target)
            return jsonify(
                rest_codec.version_status(
                    data.manager.statuses(target.name, target.version, target.label)
                )
            )
        if parts["metadata"]:
            raise InvalidInput("metadata needs GET")
        if verb is None and parts["label"]:
            auth.require("admin", token())
            body = body_json()
            version = body.get("version") if isinstance(body, dict) else None
            return jsonify(control.promote(target.name, target.label, version))
        if verb not in ("predict", "classify", "upload"):
            raise NotFound(f"unknown verb :{verb}; use :predict, :classify or :upload")
        auth.require("predict", token())
        g.target = target
        if verb == "upload":
            return upload(target)
        body = body_json()
        if verb == "classify":
            prediction = data.predict_bytes(target, rest_codec.parse_classify_body(body))
            g.version = prediction.version
            k = len(prediction.class_names)
            return jsonify(
                results=[[[label, score] for label, score in row] for row in prediction.top_k(k)]
            )
        signature, fmt, values = rest_codec.parse_predict_body(body)
        if signature == contract.SERVING_DEFAULT:
            prediction = data.predict_bytes(target, rest_codec.decode_images(values))
        else:
            prediction = data.predict_images(target, rest_codec.decode_tensors(values))
        g.version = prediction.version
        return jsonify(
            rest_codec.encode_outputs(prediction.probabilities, prediction.labels(), fmt)
        )

    def metadata(target: Target):
        from google.protobuf import json_format

        served = data.manager.resolve(target.name, target.version, target.label)
        signature_map = json_format.MessageToDict(
            served.loaded.signature_def_map, preserving_proto_field_name=True
        )
        return jsonify(
            {
                "model_spec": {
                    "name": target.name,
                    "signature_name": "",
                    "version": str(served.version),
                },
                "metadata": {"signature_def": signature_map},
            }
        )

    def upload(target: Target):
        files = [f for key in request.files for f in request.files.getlist(key)]
        if not files:
            raise InvalidInput("send the images as multipart/form-data file fields")
        try:
            top_k = int(request.values.get("top_k", 5))
        except ValueError:
            raise InvalidInput("top_k must be an integer") from None
        if top_k < 1:
            raise InvalidInput("top_k must be at least 1")
        prediction = data.predict_bytes(target, [f.read() for f in files])
        g.version = prediction.version
        return jsonify(
            {
                "model": target.name,
                "version": prediction.version,
                "results": [
                    {
                        "filename": f.filename,
                        "top": [{"label": name, "score": s} for name, s in row],
                    }
                    for f, row in zip(files, prediction.top_k(top_k), strict=True)
                ],
            }
        )

    # ---- models and jobs (admin) -----------------------------------------------
    @app.get("/v1/models")
    def list_models():
        auth.require("admin", token())
        return jsonify(models=control.models())

    @app.post("/v1/jobs")
    def submit_job():
        auth.require("admin", token())
        return jsonify(control.submit(body_json())), 202

    @app.get("/v1/jobs")
    def list_jobs():
        auth.require("admin", token())
        try:
            limit = min(1000, max(1, int(request.args.get("limit", 100))))
        except ValueError:
            raise InvalidInput("limit must be an integer") from None
        return jsonify(jobs=control.jobs(limit))

    @app.get("/v1/jobs/<job_id>")
    def get_job(job_id: str):
        auth.require("admin", token())
        return jsonify(control.job(job_id))

    @app.delete("/v1/jobs/<job_id>")
    def cancel_job(job_id: str):
        auth.require("admin", token())
        return jsonify(control.cancel(job_id))

    # ---- ops -------------------------------------------------------------------
    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @app.get("/readyz")
    def readyz():
        ready = data.manager.ready()
        return jsonify(ready=ready, models=data.manager.readiness()), 200 if ready else 503

    @app.get("/metrics")
    def metrics():
        return Response(generate_latest(data.metrics.registry), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/openapi.json")
    def openapi():
        return jsonify(OPENAPI)

    return app
