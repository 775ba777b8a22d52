"""Every gRPC service we expose can be listed, described and called by a client that knows
nothing but what server reflection tells it (as grpcurl does): grpcio-reflection's
descriptor database feeding a fresh descriptor pool, messages built from it."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf import descriptor_pool, message_factory
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests.servers import copy_version, start_server

EXPOSED = {
    "tensorflow.serving.PredictionService",
    "tensorflow.serving.ModelService",
    "imgclf.v1.Imgclf",
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
}


@pytest.fixture(scope="module")
def reflected(trained, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("reflect") / "models"
    copy_version(trained.version_dir, model_dir, "shapes", 1)
    server = start_server(model_dir)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    database = ProtoReflectionDescriptorDatabase(channel)
    yield channel, database, descriptor_pool.DescriptorPool(database), trained
    channel.close()
    server.stop()


def call(channel, pool, service: str, method: str, fill) -> object:
    """Call `service/method` with request and response types taken from reflection only."""
    described = pool.FindServiceByName(service).FindMethodByName(method)
    request_cls = message_factory.GetMessageClass(described.input_type)
    response_cls = message_factory.GetMessageClass(described.output_type)
    request = request_cls()
    fill(request)
    stub = channel.unary_unary(
        f"/{service}/{method}",
        request_serializer=request_cls.SerializeToString,
        response_deserializer=response_cls.FromString,
    )
    return stub(request, timeout=30)


def test_every_service_is_listed_and_described(reflected):
    _, database, pool, _ = reflected
    assert set(database.get_services()) == EXPOSED
    for name in EXPOSED:
        service = pool.FindServiceByName(name)
        assert service.methods, name
        for method in service.methods:
            assert method.input_type.fields or method.input_type.name.endswith("Request"), name


def test_every_service_is_called_through_reflected_descriptors(reflected):
    channel, _, pool, trained = reflected
    image = (trained.version_dir / "golden/0000.img").read_bytes()

    def predict(request) -> None:
        request.model_spec.name = "shapes"
        tensor = request.inputs["image_bytes"]
        tensor.dtype = 7  # DT_STRING
        tensor.tensor_shape.dim.add(size=1)
        tensor.string_val.append(image)

    answer = call(channel, pool, "tensorflow.serving.PredictionService", "Predict", predict)
    probabilities = answer.outputs["probabilities"]
    assert [d.size for d in probabilities.tensor_shape.dim] == [1, 3]
    assert len(probabilities.tensor_content) == 3 * 4  # float32

    def classify(request) -> None:
        request.model_spec.name = "shapes"
        example = request.input.example_list.examples.add()
        example.features.feature["image_bytes"].bytes_list.value.append(image)

    answer = call(channel, pool, "tensorflow.serving.PredictionService", "Classify", classify)
    assert len(answer.result.classifications[0].classes) == 3

    def metadata(request) -> None:
        request.model_spec.name = "shapes"
        request.metadata_field.append("signature_def")

    answer = call(
        channel, pool, "tensorflow.serving.PredictionService", "GetModelMetadata", metadata
    )
    assert answer.model_spec.version.value == 1

    def status(request) -> None:
        request.model_spec.name = "shapes"

    answer = call(channel, pool, "tensorflow.serving.ModelService", "GetModelStatus", status)
    assert [(v.version, v.state) for v in answer.model_version_status] == [(1, 30)]

    answer = call(channel, pool, "imgclf.v1.Imgclf", "ListModels", lambda r: None)
    assert "shapes" in str(answer)

    def own_classify(request) -> None:
        request.model = "shapes"
        request.images.append(image)

    answer = call(channel, pool, "imgclf.v1.Imgclf", "Classify", own_classify)
    assert answer.version == 1 and answer.results[0].top

    # The server refreshes health every 0.5 s after readiness: wait for SERVING (1).
    deadline = time.monotonic() + 30
    while (
        status := call(channel, pool, "grpc.health.v1.Health", "Check", lambda r: None).status
    ) != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 1
