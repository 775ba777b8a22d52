"""OpenAPI 3 description of the endpoints that are not TensorFlow Serving's own."""

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
        "description": "Extras beside TensorFlow Serving's REST API (/v1/models/...:predict, "
        ":classify, /metadata and status are documented by TensorFlow Serving).",
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
        "/v1/models/{name}:upload": {
            "post": {
                "summary": "Classify uploaded image files (multipart), top-k labels per image",
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "top_k", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {"file": {"type": "string", "format": "binary"}},
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
                                        "results": {"type": "array"},
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
        },
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
        "/v1/models/{name}/labels/{label}": {
            "post": {
                "summary": "Point a label at a version (promote)",
                "security": _AUTH,
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
                    {"name": "label", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
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
                },
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
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "text exposition format"}},
            }
        },
    },
}
