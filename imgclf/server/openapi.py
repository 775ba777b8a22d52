"""OpenAPI 3 description of every REST endpoint: TensorFlow Serving's (status, metadata,
:predict, :classify, each by model, version or label) and ours (:explain, :upload, jobs,
models, labels, health, metrics). A test validates it and checks every Flask route is in it."""

from __future__ import annotations

from imgclf import __version__

_ERROR = {
    "description": "error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_JOB = {
    "description": "job record",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}},
}
_AUTH = [{"bearer": []}]

OPENAPI: dict = {
    "openapi": "3.0.3",
    "info": {
        "title": "imgclf",
        "version": __version__,
        "description": "TensorFlow Serving's REST API (status, metadata, :predict, :classify) "
        "and imgclf's extras (:explain, :upload, jobs, model labels, health, metrics). Image "
        'inputs are the encoded file bytes as {"b64": "..."}: the model preprocesses them itself.',
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}, "request_id": {"type": "string"}},
            },
            "Job": {
                "type": "object",
                "required": ["id", "status"],
                "properties": {
                    "id": {"type": "string"},
                    "status": {
                        "type": "string",
                        "enum": [
                            "queued",
                            "running",
                            "succeeded",
                            "failed",
                            "rejected",
                            "cancelled",
                        ],
                    },
                    "name": {"type": "string"},
                    "version": {"type": "integer", "nullable": True},
                    "progress": {"type": "object", "nullable": True},
                    "metrics": {"type": "object", "nullable": True},
                    "error": {"type": "string", "nullable": True},
                },
            },
            "JobRequest": {
                "type": "object",
                "required": ["name", "data"],
                "additionalProperties": True,
                "properties": {
                    "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_-]*$"},
                    "data": {"type": "string"},
                    "idempotency_key": {"type": "string"},
                },
            },
        },
    },
    "paths": {
        "/v1/jobs": {
            "post": {
                "summary": "Submit a training job",
                "security": _AUTH,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/JobRequest"}}
                    },
                },
                "responses": {"202": _JOB, "400": _ERROR, "401": _ERROR, "503": _ERROR},
            },
            "get": {
                "summary": "List jobs, newest first",
                "security": _AUTH,
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1}}
                ],
                "responses": {"200": {"description": "jobs"}, "401": _ERROR},
            },
        },
        "/v1/jobs/{id}": {
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {
                "summary": "One job",
                "security": _AUTH,
                "responses": {"200": _JOB, "404": _ERROR, "401": _ERROR},
            },
            "delete": {
                "summary": "Cancel a job",
                "security": _AUTH,
                "responses": {"200": _JOB, "404": _ERROR, "409": _ERROR, "401": _ERROR},
            },
        },
        "/v1/jobs/{id}/logs": {
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
            ],
            "get": {
                "summary": "The job's log from byte `offset` (follow with next_offset)",
                "security": _AUTH,
                "responses": {"200": {"description": "log chunk"}, "404": _ERROR, "401": _ERROR},
            },
        },
        "/v1/models": {
            "get": {
                "summary": "Models, versions, states and labels",
                "security": _AUTH,
                "responses": {"200": {"description": "models"}, "401": _ERROR},
            }
        },
        "/healthz": {
            "get": {"summary": "Process alive", "responses": {"200": {"description": "ok"}}}
        },
        "/readyz": {
            "get": {
                "summary": "Every configured model has a loaded, warmed version",
                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3 document"}},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text exposition format"}},
            }
        },
    },
}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_B64 = {
    "type": "object",
    "required": ["b64"],
    "properties": {"b64": {"type": "string", "format": "byte"}},
    "description": "Encoded image file bytes (JPEG, PNG, GIF, BMP, WebP), base64.",
}
_PREDICT_REQUEST = {
    "type": "object",
    "description": "TF Serving's row ('instances') or columnar ('inputs') format. "
    'serving_default takes image_bytes as {"b64": ...}; predict_images takes float '
    "[batch, H, W, 3] already preprocessed the model's way. Numbers sent to serving_default "
    "(e.g. /255 floats) are refused with 400: that would be a train/serve skew.",
    "properties": {
        "signature_name": {"type": "string", "enum": ["serving_default", "predict_images"]},
        "instances": {"type": "array", "items": {}},
        "inputs": {},
    },
}
_PREDICT_RESPONSE = {
    "type": "object",
    "properties": {
        "predictions": {"type": "array", "items": {"type": "object"}},
        "outputs": {"type": "object"},
    },
}
_MIN_SCORE = {
    "type": "number",
    "minimum": 0,
    "maximum": 1,
    "description": "imgclf extension: an image whose top (calibrated) score is below this "
    "is answered label 'unknown' (its scores still listed). Default: the model card's "
    "min_score. Outside [0, 1]: 400.",
}
_CLASSIFY_REQUEST = {
    "type": "object",
    "required": ["examples"],
    "properties": {
        "signature_name": {"type": "string"},
        "min_score": _MIN_SCORE,
        "context": {"type": "object"},
        "examples": {
            "type": "array",
            "items": {"type": "object", "properties": {"image_bytes": _B64}},
        },
    },
}
_CLASSIFY_RESPONSE = {
    "type": "object",
    "properties": {
        "results": {
            "type": "array",
            "description": "Per example: [label, score] for every class, best first.",
            "items": {"type": "array", "items": {"type": "array", "items": {}}},
        },
        "labels": {
            "type": "array",
            "items": {"type": "string"},
            "description": "imgclf extension: per example the answer, the top label or "
            "'unknown' when its score is below min_score.",
        },
    },
}
_STATUS = {
    "type": "object",
    "properties": {"model_version_status": {"type": "array", "items": {"type": "object"}}},
}
_METADATA = {
    "type": "object",
    "properties": {"model_spec": {"type": "object"}, "metadata": {"type": "object"}},
}


_PNG_B64 = {"type": "object", "properties": {"b64": {"type": "string", "format": "byte"}}}
_LABEL_SCORE = {
    "type": "object",
    "properties": {"label": {"type": "string"}, "score": {"type": "number"}},
}
_EXPLAIN_REQUEST = {
    "type": "object",
    "required": ["instances"],
    "properties": {
        "instances": {"type": "array", "items": _B64, "description": "encoded images"},
        "top_k": {"type": "integer", "minimum": 1, "default": 5},
        "min_score": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "below this top score the label is 'unknown' (default: the model "
            "card's min_score, if any)",
        },
    },
}
_EXPLANATION = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "description": "top-1 class, or 'unknown' under min_score"},
        "score": {"type": "number"},
        "top": {"type": "array", "items": _LABEL_SCORE},
        "heatmap": {
            **_PNG_B64,
            "description": "PNG, 8-bit grayscale, image_size x image_size: Grad-CAM of the "
            "predicted class on ResNet-50's last convolutional stage, 255 = most evidence",
        },
        "overlay": {
            **_PNG_B64,
            "description": "PNG, RGB: the heatmap colour-mapped over the image",
        },
    },
}
_EXPLAIN_RESPONSE = {
    "type": "object",
    "properties": {
        "model_spec": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "signature_name": {"type": "string"},
            },
        },
        "explanations": {"type": "array", "items": _EXPLANATION},
        "min_score": _MIN_SCORE,
    },
}


def _param(name: str, kind: str = "string") -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": kind}}


def _model_paths(paths: dict, upload: dict) -> None:
    """TF Serving's per-model endpoints under each way of naming what serves."""
    targets = {
        "/v1/models/{name}": ([_param("name")], "the newest served version"),
        "/v1/models/{name}/versions/{version}": (
            [_param("name"), _param("version", "integer")],
            "that version",
        ),
        "/v1/models/{name}/labels/{label}": (
            [_param("name"), _param("label")],
            "the version the label points at",
        ),
    }
    errors = {"400": _ERROR, "401": _ERROR, "404": _ERROR, "413": _ERROR, "503": _ERROR}
    for base, (params, which) in targets.items():
        paths.setdefault(base, {})["parameters"] = params
        paths[base]["get"] = {
            "summary": f"Version status (TF Serving), {which}",
            "responses": {"200": _json(_STATUS, "model_version_status"), "404": _ERROR},
        }
        paths[f"{base}/metadata"] = {
            "parameters": params,
            "get": {
                "summary": f"Signature metadata (TF Serving), {which}",
                "responses": {"200": _json(_METADATA, "signature_def map"), "404": _ERROR},
            },
        }
        paths[f"{base}:predict"] = {
            "parameters": params,
            "post": {
                "summary": f"Predict (TF Serving), {which}",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _PREDICT_REQUEST}},
                },
                "responses": {"200": _json(_PREDICT_RESPONSE, "outputs"), **errors},
            },
        }
        paths[f"{base}:classify"] = {
            "parameters": params,
            "post": {
                "summary": f"Classify tf.Example-style examples (TF Serving), {which}",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _CLASSIFY_REQUEST}},
                },
                "responses": {"200": _json(_CLASSIFY_RESPONSE, "ranked labels"), **errors},
            },
        }
        paths[f"{base}:explain"] = {
            "parameters": params,
            "post": {
                "summary": f"Explain: prediction plus Grad-CAM heatmap and overlay (PNG), {which}",
                "description": "Runs the version's `explain` signature through the same queue "
                "and limits as :predict. A version exported before explanations existed "
                "answers 409: retrain it.",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _EXPLAIN_REQUEST}},
                },
                "responses": {
                    "200": _json(_EXPLAIN_RESPONSE, "explanations"),
                    "409": _ERROR,
                    **errors,
                },
            },
        }
        paths[f"{base}:regress"] = {
            "parameters": params,
            "post": {
                "summary": "Regress (TF Serving): not offered, the models are classifiers",
                "responses": {"400": _ERROR, "404": _ERROR},
            },
        }
        operation = {**upload["post"], "parameters": upload["post"]["parameters"][1:]}
        paths[f"{base}:upload"] = {"parameters": params, "post": operation}


_UPLOAD = {
    "post": {
        "summary": "Classify uploaded image files (multipart), top-k labels per image",
        "parameters": [
            {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "top_k", "in": "query", "schema": {"type": "integer", "minimum": 1}},
            {"name": "min_score", "in": "query", "schema": _MIN_SCORE},
        ],
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "explain": {
                                "type": "boolean",
                                "description": "true: each result also carries label, score, "
                                "heatmap and overlay as :explain returns them",
                            },
                            "min_score": _MIN_SCORE,
                        },
                    }
                }
            },
        },
        "responses": {
            "200": {
                "description": "top-k per image and the version that answered",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "model": {"type": "string"},
                                "version": {"type": "integer"},
                                "min_score": _MIN_SCORE,
                                "results": {
                                    "type": "array",
                                    "description": "per file: filename, label (top label "
                                    "or 'unknown' under min_score), score (top score), top",
                                },
                            },
                        }
                    }
                },
            },
            "400": _ERROR,
            "404": _ERROR,
            "413": _ERROR,
            "503": _ERROR,
        },
    }
}
_PROMOTE = {
    "summary": "Point a label at a version (promote)",
    "security": _AUTH,
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["version"],
                    "properties": {"version": {"type": "integer"}},
                }
            }
        },
    },
    "responses": {
        "200": {"description": "new labels"},
        "400": _ERROR,
        "404": _ERROR,
        "401": _ERROR,
        "409": _ERROR,
    },
}


def _console_paths(paths: dict) -> None:
    """The web console (imgclf.server.console): its files and its read-only model routes."""
    html = {"200": {"description": "the console", "content": {"text/html": {}}}}
    paths["/ui"] = {
        "get": {"summary": "Redirect to /ui/", "responses": {"308": {"description": "to /ui/"}}}
    }
    paths["/ui/"] = {"get": {"summary": "The web console", "responses": html}}
    paths["/ui/{filename}"] = {
        "parameters": [_param("filename")],
        "get": {
            "summary": "A file of the web console (JavaScript, CSS)",
            "responses": {"200": {"description": "the file"}, "404": _ERROR},
        },
    }
    paths["/v1/models/{name}/cards"] = {
        "parameters": [_param("name")],
        "get": {
            "summary": "Every published version's model-card summary and the model's labels",
            "description": "Created time, artifact size, test metrics, diagnosis, data audit "
            "summary, signatures and whether a report exists; newest version first. Needs a "
            "predict token when predict tokens are configured.",
            "security": _AUTH,
            "responses": {"200": {"description": "versions"}, "401": _ERROR, "404": _ERROR},
        },
    }
    paths["/v1/models/{name}/versions/{version}/report/{path}"] = {
        "parameters": [_param("name"), _param("version", "integer"), _param("path")],
        "get": {
            "summary": "A file of the version's report folder (report.html, its images)",
            "description": "Read-only; only files inside the version's report/ folder. Sent "
            "with a sandboxing Content-Security-Policy.",
            "security": _AUTH,
            "responses": {"200": {"description": "the file"}, "401": _ERROR, "404": _ERROR},
        },
    }
    paths["/v1/models/{name}/compare"] = {
        "parameters": [
            _param("name"),
            {"name": "a", "in": "query", "required": True, "schema": {"type": "integer"}},
            {"name": "b", "in": "query", "required": True, "schema": {"type": "integer"}},
        ],
        "get": {
            "summary": "Two versions side by side and the promotion gate's verdict on b vs a",
            "description": "Test metrics, per-class precision/recall/F1 deltas, both "
            "confusion matrices, and imgclf.trainer.promotion.decide() applied to the two "
            "model cards' recorded test metrics (a = live, b = candidate).",
            "security": _AUTH,
            "responses": {
                "200": {"description": "comparison"},
                "400": _ERROR,
                "401": _ERROR,
                "404": _ERROR,
            },
        },
    }


_model_paths(OPENAPI["paths"], _UPLOAD)
OPENAPI["paths"]["/v1/models/{name}/labels/{label}"]["post"] = _PROMOTE
_console_paths(OPENAPI["paths"])
