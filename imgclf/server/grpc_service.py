"""gRPC: TensorFlow Serving's PredictionService and ModelService (from the
tensorflow-serving-api stubs, so TF Serving's own clients work unchanged), plus
imgclf's own service, health checking and reflection.

Each method is parse (grpc_codec) -> core -> encode (grpc_codec). One wrapper,
installed by `RpcWrapper` around every unary method of these three services, does
what every call needs: the request id (x-request-id, echoed in trailing metadata),
one access-log line, a request that does not parse -> INVALID_ARGUMENT, and error
mapping from the error's own `grpc_code` (errors.py); anything else is INTERNAL
with the request id, logged once.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from imgclf.errors import ImgclfError, InvalidInput, Unimplemented
from imgclf.server import grpc_codec
from imgclf.server.auth import Auth, bearer
from imgclf.server.control import ControlPlane
from imgclf.server.core import DataPlane
from imgclf.server.reflection import enable_reflection
from imgclf.v1 import imgclf_pb2_grpc

log = logging.getLogger(__name__)
access = logging.getLogger("imgclf.server.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
PROTOCOL = "grpc"

SERVICE_NAMES = (
    "tensorflow.serving.PredictionService",
    "tensorflow.serving.ModelService",
    "imgclf.v1.Imgclf",
)


def grpc_status(exc: ImgclfError) -> grpc.StatusCode:
    """The error's own gRPC code (errors.py holds the one table)."""
    return grpc.StatusCode[exc.grpc_code]


def request_id(context: grpc.ServicerContext) -> str:
    """The caller's x-request-id, or a new one; sent back in the trailing metadata."""
    given = next((v for k, v in context.invocation_metadata() if k == "x-request-id"), "")
    rid = given if _REQUEST_ID.match(given or "") else uuid.uuid4().hex
    context.set_trailing_metadata((("x-request-id", rid),))
    return rid


class _Undecodable:
    """Stands for a request whose bytes are not the method's message."""


_UNDECODABLE = _Undecodable()


def _lenient(deserializer: Callable[[bytes], object] | None) -> Callable[[bytes], object]:
    def parse(raw: bytes) -> object:
        try:
            return deserializer(raw) if deserializer else raw
        except Exception:  # protobuf's DecodeError and friends: the client sent garbage
            return _UNDECODABLE

    return parse


def _model_name(request: object) -> str | None:
    """The model a request names (TF Serving's model_spec or imgclf's model), cut short."""
    spec = getattr(request, "model_spec", None)
    name = getattr(spec, "name", None) or getattr(request, "model", None)
    return name[:64] if isinstance(name, str) and name else None


def _rpc(method: str, behaviour: Callable) -> Callable:
    """Every RPC: request id, access log, parse failure and error mapping."""

    def call(request, context: grpc.ServicerContext):
        started = time.monotonic()
        rid = request_id(context)
        code, message = grpc.StatusCode.OK, ""
        try:
            if request is _UNDECODABLE:
                raise InvalidInput(f"the request bytes are not a valid message for {method}")
            return behaviour(request, context)
        except ImgclfError as exc:
            code, message = grpc_status(exc), str(exc)
            if exc.status == 503:  # overloaded or not ready: when to try again (REST: header)
                context.set_trailing_metadata((("retry-after", "1"),))
        except Exception:
            log.exception("unhandled error in %s (request %s)", method, rid)
            code, message = grpc.StatusCode.INTERNAL, f"internal error (request {rid})"
        finally:
            access.info(
                json.dumps(
                    {
                        "request_id": rid,
                        "rpc": method,
                        "code": code.name,
                        "ms": round((time.monotonic() - started) * 1000, 2),
                        "model": _model_name(request),
                    }
                )
            )
        context.abort(code, message)

    return call


class RpcWrapper(grpc.ServerInterceptor):
    """Installs `_rpc` around every unary-unary method of the services in SERVICE_NAMES."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or handler.unary_unary is None:
            return handler
        if not method.lstrip("/").startswith(SERVICE_NAMES):
            return handler
        return handler._replace(
            request_deserializer=_lenient(handler.request_deserializer),
            unary_unary=_rpc(method, handler.unary_unary),
        )


def _token(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata():
        if key == "authorization":
            return bearer(value)
    return None


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, data: DataPlane, auth: Auth) -> None:
        self.data = data
        self.auth = auth

    def Predict(self, request, context):
        self.auth.require("predict", _token(context))
        call = grpc_codec.parse_predict(request, self.data.limits)
        prediction = self.data.predict(call.target, call.inputs, PROTOCOL)
        return grpc_codec.encode_predict(call, prediction)

    def Classify(self, request, context):
        self.auth.require("predict", _token(context))
        target = grpc_codec.target(request.model_spec)
        images = grpc_codec.images_from_examples(request.input)
        prediction = self.data.classify(target, images, PROTOCOL)
        return grpc_codec.encode_classify(request, target, prediction)

    def GetModelMetadata(self, request, context):
        target = grpc_codec.parse_metadata(request)
        served, signature_def_map = self.data.metadata(target, PROTOCOL)
        return grpc_codec.encode_metadata(target, served, signature_def_map)

    def Regress(self, request, context):
        raise Unimplemented(
            "Regress is not offered: the models are classifiers; use Predict or Classify"
        )

    def MultiInference(self, request, context):
        raise Unimplemented("MultiInference is not offered; use Predict or Classify")


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, data: DataPlane) -> None:
        self.data = data

    def GetModelStatus(self, request, context):
        statuses = self.data.status(grpc_codec.target(request.model_spec), PROTOCOL)
        return grpc_codec.encode_status(statuses)

    def HandleReloadConfigRequest(self, request, context):
        raise Unimplemented(
            "HandleReloadConfigRequest is not offered: the server follows the model "
            "repository (IMGCLF_MODEL_DIR, IMGCLF_MODELS) and labels.json by itself"
        )


class ImgclfService(imgclf_pb2_grpc.ImgclfServicer):
    def __init__(self, data: DataPlane, control: ControlPlane, auth: Auth) -> None:
        self.data = data
        self.control = control
        self.auth = auth

    def Classify(self, request, context):
        target = grpc_codec.own_target(request)
        self.auth.require("predict", _token(context))
        min_score = grpc_codec.own_min_score(request)
        prediction = self.data.classify(target, list(request.images), PROTOCOL, min_score)
        return grpc_codec.encode_own_classify(request, prediction)

    def Explain(self, request, context):
        target, min_score = grpc_codec.parse_explain(request)
        self.auth.require("predict", _token(context))
        explained = self.data.explain(target, list(request.images), PROTOCOL, min_score)
        return grpc_codec.encode_explain(request, explained)

    def SubmitJob(self, request, context):
        self.auth.require("admin", _token(context))
        return grpc_codec.encode_job(self.control.submit(grpc_codec.parse_job_document(request)))

    def GetJob(self, request, context):
        self.auth.require("admin", _token(context))
        return grpc_codec.encode_job(self.control.job(request.id))

    def CancelJob(self, request, context):
        self.auth.require("admin", _token(context))
        return grpc_codec.encode_job(self.control.cancel(request.id))

    def GetJobLogs(self, request, context):
        self.auth.require("admin", _token(context))
        return grpc_codec.encode_job_logs(self.control.job_log(request.id, request.offset))

    def SetLabel(self, request, context):
        self.auth.require("admin", _token(context))
        answer = self.control.promote(request.model, request.label, int(request.version))
        return grpc_codec.encode_aliases(answer["name"], answer["labels"])

    def ListModels(self, request, context):
        self.auth.require("admin", _token(context))
        return grpc_codec.encode_models(self.control.models())


def build_grpc_server(
    data: DataPlane, control: ControlPlane, auth: Auth, address: str, threads: int
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A gRPC server with every service registered; returns (server, bound port, health)."""
    max_bytes = data.limits.max_request_bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        interceptors=[RpcWrapper()],
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(data, auth), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(data), server)
    imgclf_pb2_grpc.add_ImgclfServicer_to_server(ImgclfService(data, control, auth), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    enable_reflection(SERVICE_NAMES, server)
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind gRPC to {address}")
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    return server, port, health_servicer
