"""gRPC: TensorFlow Serving's PredictionService and ModelService (from the
tensorflow-serving-api stubs, so TF Serving's own clients work unchanged), plus
imgclf's own service, health checking and reflection. Translation only: every
call goes to the same DataPlane / ControlPlane as REST.
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
import numpy as np
import tensorflow as tf
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from imgclf import contract
from imgclf.errors import ImgclfError, InvalidInput, PayloadTooLarge
from imgclf.server.auth import Auth, bearer
from imgclf.server.control import ControlPlane
from imgclf.server.core import DataPlane, Prediction, Target
from imgclf.v1 import imgclf_pb2, imgclf_pb2_grpc

log = logging.getLogger(__name__)
access = logging.getLogger("imgclf.server.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# One table maps the project's HTTP-style statuses to gRPC codes.
GRPC_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
}


def grpc_code(exc: ImgclfError) -> grpc.StatusCode:
    from imgclf.errors import Overloaded

    if isinstance(exc, Overloaded):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if exc.status == 503:
        return grpc.StatusCode.UNAVAILABLE
    return GRPC_CODES.get(exc.status, grpc.StatusCode.INTERNAL)


def abort(context: grpc.ServicerContext, exc: ImgclfError) -> None:
    """End the call with the error's code; a 503 (overloaded, not ready) also says, in
    trailing metadata `retry-after`, how many seconds to wait (REST sends Retry-After)."""
    if exc.status == 503:
        context.set_trailing_metadata((("retry-after", "1"),))
    context.abort(grpc_code(exc), str(exc))


def _handle(data: DataPlane, protocol: str = "grpc"):
    """Turn project errors into gRPC statuses; record metrics for model calls."""

    def wrap(method: Callable) -> Callable:
        def call(self, request, context):
            started = time.monotonic()
            rid = request_id(context)
            target, version, code = None, None, 200
            try:
                response, target, version = method(self, request, context)
                return response
            except ImgclfError as exc:
                target, code = getattr(exc, "target", None), exc.status
                abort(context, exc)
            except Exception:
                code = 500
                log.exception("unhandled error in %s (request %s)", method.__name__, rid)
                context.abort(grpc.StatusCode.INTERNAL, f"internal error (request {rid})")
            finally:
                if target is not None:
                    data.record(target, protocol, code, version, started)
                access.info(
                    json.dumps(
                        {
                            "request_id": rid,
                            "rpc": method.__name__,
                            "status": code,
                            "ms": round((time.monotonic() - started) * 1000, 2),
                            "model": target.name if target else None,
                            "version": version,
                        }
                    )
                )

        call.__name__ = method.__name__
        return call

    return wrap


def request_id(context: grpc.ServicerContext) -> str:
    """The caller's x-request-id, or a new one; sent back in the trailing metadata."""
    given = next((v for k, v in context.invocation_metadata() if k == "x-request-id"), "")
    rid = given if _REQUEST_ID.match(given or "") else uuid.uuid4().hex
    context.set_trailing_metadata((("x-request-id", rid),))
    return rid


def _token(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata():
        if key == "authorization":
            return bearer(value)
    return None


def _target(model_spec) -> Target:
    if not model_spec.name:
        raise InvalidInput("model_spec.name is required")
    version = model_spec.version.value if model_spec.HasField("version") else None
    label = model_spec.version_label or None
    if version is not None and label is not None:
        raise InvalidInput("give model_spec.version or model_spec.version_label, not both")
    return Target(model_spec.name, version, label)


def _attach(exc: ImgclfError, target: Target) -> ImgclfError:
    exc.target = target  # type: ignore[attr-defined]
    return exc


def _fill_spec(spec, target: Target, version: int, signature: str) -> None:
    spec.name = target.name
    spec.version.value = version
    spec.signature_name = signature


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, data: DataPlane, auth: Auth) -> None:
        self.data = data
        self.auth = auth

    def _predict(self, target: Target, request) -> tuple[Prediction, str]:
        signature = request.model_spec.signature_name or contract.SERVING_DEFAULT
        if signature == contract.SERVING_DEFAULT:
            name = contract.INPUT_IMAGE_BYTES
        elif signature == contract.PREDICT_IMAGES:
            name = contract.INPUT_IMAGES
        else:
            raise InvalidInput(
                f"unknown signature_name {signature!r}; use '{contract.SERVING_DEFAULT}' or "
                f"'{contract.PREDICT_IMAGES}'"
            )
        extra = set(request.inputs) - {name}
        if name not in request.inputs or extra:
            raise InvalidInput(
                f"signature {signature!r} takes exactly one input {name!r}"
                + (f"; unknown {sorted(extra)}" if extra else "")
            )
        proto = request.inputs[name]
        declared = 1
        for dim in proto.tensor_shape.dim:
            declared *= max(0, dim.size)
        limit = self.data.settings.max_images_per_request
        if signature == contract.PREDICT_IMAGES:  # float32: no more than the body could carry
            limit = self.data.settings.max_request_bytes // 4
        if declared > limit:
            raise PayloadTooLarge(
                f"input {name!r} declares {declared} elements; the limit is {limit}"
            )
        try:
            array = tf.make_ndarray(proto)
        except Exception:
            raise InvalidInput(f"input {name!r} is not a valid TensorProto") from None
        if signature == contract.SERVING_DEFAULT:
            if array.dtype != object:
                raise InvalidInput(f"input {name!r} must be DT_STRING (encoded image bytes)")
            return self.data.predict_bytes(target, [bytes(b) for b in array.reshape(-1)]), signature
        if array.dtype.kind not in "fiu":
            raise InvalidInput(f"input {name!r} must be a float tensor [batch, H, W, 3]")
        return self.data.predict_images(target, array.astype(np.float32)), signature


def build_prediction_service(data: DataPlane, auth: Auth):
    """The PredictionService servicer with every method wrapped for errors and metrics."""
    handle = _handle(data)

    class Servicer(PredictionService):
        @handle
        def Predict(self, request, context):
            target = _target(request.model_spec)
            try:
                self.auth.require("predict", _token(context))
                prediction, signature = self._predict(target, request)
            except ImgclfError as exc:
                raise _attach(exc, target) from None
            response = predict_pb2.PredictResponse()
            _fill_spec(response.model_spec, target, prediction.version, signature)
            outputs = response.outputs
            outputs[contract.OUTPUT_PROBABILITIES].CopyFrom(
                tf.make_tensor_proto(prediction.probabilities.astype(np.float32))
            )
            outputs[contract.OUTPUT_CLASSES].CopyFrom(
                tf.make_tensor_proto(prediction.classes(), dtype=tf.int64)
            )
            outputs[contract.OUTPUT_LABELS].CopyFrom(
                tf.make_tensor_proto([s.encode() for s in prediction.labels()], dtype=tf.string)
            )
            return response, target, prediction.version

        @handle
        def Classify(self, request, context):
            target = _target(request.model_spec)
            try:
                self.auth.require("predict", _token(context))
                images = _examples_to_images(request.input)
                prediction = self.data.predict_bytes(target, images)
            except ImgclfError as exc:
                raise _attach(exc, target) from None
            response = classification_pb2.ClassificationResponse()
            _fill_spec(
                response.model_spec,
                target,
                prediction.version,
                request.model_spec.signature_name or contract.SERVING_DEFAULT,
            )
            for row in prediction.top_k(len(prediction.class_names)):
                classification = response.result.classifications.add()
                for label, score in row:
                    classification.classes.add(label=label, score=score)
            return response, target, prediction.version

        @handle
        def GetModelMetadata(self, request, context):
            target = _target(request.model_spec)
            fields = list(request.metadata_field) or ["signature_def"]
            if fields != ["signature_def"]:
                raise InvalidInput("only metadata_field 'signature_def' is supported")
            served = self.data.manager.resolve(target.name, target.version, target.label)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            _fill_spec(response.model_spec, target, served.version, "")
            response.metadata["signature_def"].Pack(served.loaded.signature_def_map)
            return response, None, None

    return Servicer(data, auth)


def _examples_to_images(model_input) -> list[bytes]:
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        examples = list(model_input.example_list.examples)
        context = None
    elif kind == "example_list_with_context":
        examples = list(model_input.example_list_with_context.examples)
        context = model_input.example_list_with_context.context
    else:
        raise InvalidInput("input must hold an example_list of tf.train.Example")
    images = []
    for i, example in enumerate(examples):
        feature = example.features.feature.get(contract.INPUT_IMAGE_BYTES)
        if feature is None and context is not None:
            feature = context.features.feature.get(contract.INPUT_IMAGE_BYTES)
        if feature is None or len(feature.bytes_list.value) != 1:
            raise InvalidInput(
                f"example {i}: needs one bytes feature '{contract.INPUT_IMAGE_BYTES}'"
            )
        images.append(bytes(feature.bytes_list.value[0]))
    return images


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, data: DataPlane) -> None:
        self.data = data

    def GetModelStatus(self, request, context):
        try:
            target = _target(request.model_spec)
            statuses = self.data.manager.statuses(target.name, target.version, target.label)
        except ImgclfError as exc:
            context.abort(grpc_code(exc), str(exc))
        response = get_model_status_pb2.GetModelStatusResponse()
        for served in statuses:
            entry = response.model_version_status.add()
            entry.version = served.version
            entry.state = int(served.state)
            entry.status.error_code = 2 if served.error else 0  # UNKNOWN / OK
            entry.status.error_message = served.error
        return response


class ImgclfService(imgclf_pb2_grpc.ImgclfServicer):
    def __init__(self, data: DataPlane, control: ControlPlane, auth: Auth) -> None:
        self.data = data
        self.control = control
        self.auth = auth

    def _abort(self, context, exc: ImgclfError) -> None:
        abort(context, exc)

    def Classify(self, request, context):
        started = time.monotonic()
        target = Target(
            request.model,
            request.version if request.WhichOneof("target") == "version" else None,
            request.label if request.WhichOneof("target") == "label" else None,
        )
        try:
            if not request.model:
                raise InvalidInput("model is required")
            self.auth.require("predict", _token(context))
            prediction = self.data.predict_bytes(target, list(request.images))
        except ImgclfError as exc:
            if request.model:
                self.data.record(target, "grpc", exc.status, None, started)
            self._abort(context, exc)
        self.data.record(target, "grpc", 200, prediction.version, started)
        response = imgclf_pb2.ClassifyResponse(
            model=request.model, version=prediction.version, class_names=prediction.class_names
        )
        for row, probabilities in zip(
            prediction.top_k(request.top_k or 5), prediction.probabilities, strict=True
        ):
            result = response.results.add(probabilities=probabilities.tolist())
            for label, score in row:
                result.top.add(label=label, score=score)
        return response

    def _job(self, record: dict) -> imgclf_pb2.Job:
        return imgclf_pb2.Job(
            id=record["id"],
            status=record["status"],
            name=record.get("name") or "",
            version=record.get("version") or 0,
            error=record.get("error") or "",
            record_json=json.dumps(record),
        )

    def SubmitJob(self, request, context):
        try:
            self.auth.require("admin", _token(context))
            try:
                document = json.loads(request.document_json or "null")
            except ValueError:
                raise InvalidInput("document_json is not valid JSON") from None
            return self._job(self.control.submit(document))
        except ImgclfError as exc:
            self._abort(context, exc)

    def GetJob(self, request, context):
        try:
            self.auth.require("admin", _token(context))
            return self._job(self.control.job(request.id))
        except ImgclfError as exc:
            self._abort(context, exc)

    def CancelJob(self, request, context):
        try:
            self.auth.require("admin", _token(context))
            return self._job(self.control.cancel(request.id))
        except ImgclfError as exc:
            self._abort(context, exc)

    def ListModels(self, request, context):
        try:
            self.auth.require("admin", _token(context))
            models = self.control.models()
        except ImgclfError as exc:
            self._abort(context, exc)
        response = imgclf_pb2.ListModelsResponse()
        for model in models:
            entry = response.models.add(name=model["name"])
            for label, version in model["labels"].items():
                entry.labels[label] = version
            for version in model["versions"]:
                entry.versions.add(
                    version=version["version"], state=version["state"], error=version["error"]
                )
        return response


SERVICE_NAMES = (
    "tensorflow.serving.PredictionService",
    "tensorflow.serving.ModelService",
    "imgclf.v1.Imgclf",
)


def build_grpc_server(
    data: DataPlane, control: ControlPlane, auth: Auth, address: str, threads: int
) -> tuple[grpc.Server, int, health.HealthServicer]:
    """A gRPC server with every service registered; returns (server, bound port, health)."""
    max_bytes = data.settings.max_request_bytes
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", max_bytes),
            ("grpc.max_send_message_length", max_bytes),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        build_prediction_service(data, auth), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(data), server)
    imgclf_pb2_grpc.add_ImgclfServicer_to_server(ImgclfService(data, control, auth), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind gRPC to {address}")
    for name in ("", *SERVICE_NAMES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    return server, port, health_servicer
