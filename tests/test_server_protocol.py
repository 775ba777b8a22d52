"""Protocol details and hostile input on a real server (loopback), and the batch path:
a corrupt image fails alone inside a batch decoded by serving_default."""

from __future__ import annotations

import base64
import json
import logging
import threading

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from imgclf import registry
from imgclf.artifact import LoadedVersion
from imgclf.cli import main
from imgclf.errors import BadImageError
from imgclf.server.batching import Batcher
from imgclf.server.core import decode_and_predict
from tests.servers import copy_version, start_server

CORRUPT = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40  # a PNG signature, then nothing decodable


@pytest.fixture(scope="module")
def two(trained, tmp_path_factory):
    """Versions 1 and 2 of one export, `stable` on version 1."""
    model_dir = tmp_path_factory.mktemp("protocol") / "models"
    copy_version(trained.version_dir, model_dir, "shapes", 1)
    copy_version(trained.version_dir, model_dir, "shapes", 2)
    registry.set_alias(model_dir, "shapes", "stable", 1)
    server = start_server(model_dir, max_images_per_request=8)
    both = threading.Event()
    while not both.wait(0.1):  # wait on the state: version 2 loads after version 1
        states = [s.state.name for s in server.manager.statuses("shapes")]
        if states == ["AVAILABLE", "AVAILABLE"]:
            both.set()
    server.base = f"http://127.0.0.1:{server.rest_port}"
    server.channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    server.images = [
        (trained.version_dir / "golden" / f"{i:04d}.img").read_bytes() for i in range(3)
    ]
    yield server
    server.channel.close()
    server.stop()


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def post(srv, path: str, body) -> requests.Response:
    return requests.post(f"{srv.base}{path}", data=json.dumps(body), timeout=30)


def test_server_and_cli_resolve_the_same_version(two, capsys, tmp_path):
    served = post(two, "/v1/models/shapes:predict", {"instances": [b64(two.images[0])]})
    assert served.status_code == 200
    meta = requests.get(f"{two.base}/v1/models/shapes/metadata", timeout=10).json()
    assert meta["model_spec"]["version"] == "1"  # stable, not the newest
    image = tmp_path / "a.img"
    image.write_bytes(two.images[0])
    model_dir = str(two.settings.model_dir)
    assert (
        main(["predict", "--model-dir", model_dir, "--name", "shapes", "--json", str(image)]) == 0
    )
    assert json.loads(capsys.readouterr().out)["version"] == 1
    assert main(["models", "shapes", "--model-dir", model_dir, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["serving"] == 1
    pinned = post(two, "/v1/models/shapes/versions/2:predict", {"instances": [b64(two.images[0])]})
    assert pinned.status_code == 200
    by_alias = post(
        two, "/v1/models/shapes/labels/stable:predict", {"instances": [b64(two.images[0])]}
    )
    assert by_alias.status_code == 200


def test_rest_hostile_input_is_a_short_4xx(two):
    regress = post(two, "/v1/models/shapes:regress", {"examples": []})
    assert regress.status_code == 400 and "not offered" in regress.json()["error"]
    unknown = post(two, "/v1/models/shapes:explode", {})
    assert unknown.status_code == 404 and "unknown verb" in unknown.json()["error"]
    huge_number = b'{"signature_name": "predict_images", "instances": [1' + b"0" * 400 + b"]}"
    response = requests.post(f"{two.base}/v1/models/shapes:predict", data=huge_number, timeout=10)
    assert response.status_code == 400, response.text
    long_version = "9" * 5000
    for method, path in [
        ("post", f"/v1/models/shapes/versions/{long_version}:predict"),
        ("get", f"/v1/models/shapes/versions/{long_version}"),
    ]:
        answer = requests.request(method, two.base + path, json={"instances": []}, timeout=10)
        assert answer.status_code == 400, (method, answer.text)
        assert len(answer.json()["error"]) < 150
    long_name = post(two, "/v1/models/" + "n" * 5000 + ":predict", {"instances": []})
    assert long_name.status_code == 404 and len(long_name.json()["error"]) < 150
    parts = [("file", (f"{i}.png", b"x")) for i in range(2000)]
    many = requests.post(f"{two.base}/v1/models/shapes:upload", files=parts, timeout=30)
    assert many.status_code == 413 and "parts" in many.json()["error"], many.text


def call_raw(srv, method: str, payload: bytes):
    return srv.channel.unary_unary(method)(payload, timeout=10)


GRPC_METHODS = [
    "/tensorflow.serving.PredictionService/Predict",
    "/tensorflow.serving.PredictionService/Classify",
    "/tensorflow.serving.PredictionService/Regress",
    "/tensorflow.serving.PredictionService/MultiInference",
    "/tensorflow.serving.PredictionService/GetModelMetadata",
    "/tensorflow.serving.ModelService/GetModelStatus",
    "/tensorflow.serving.ModelService/HandleReloadConfigRequest",
    "/imgclf.v1.Imgclf/Classify",
    "/imgclf.v1.Imgclf/SubmitJob",
    "/imgclf.v1.Imgclf/GetJob",
    "/imgclf.v1.Imgclf/CancelJob",
    "/imgclf.v1.Imgclf/ListModels",
]


@pytest.mark.parametrize("method", GRPC_METHODS)
def test_grpc_garbage_bytes_are_invalid_argument(two, method):
    with pytest.raises(grpc.RpcError) as info:
        call_raw(two, method, b"\xff\xff\xff\xff\xff")  # a varint that never ends
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "not a valid message" in info.value.details()


def test_grpc_unoffered_methods_answer_cleanly(two, caplog):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(two.channel)
    models = model_service_pb2_grpc.ModelServiceStub(two.channel)
    calls = [
        lambda: stub.Regress(regression_pb2.RegressionRequest(), 10),
        lambda: stub.MultiInference(inference_pb2.MultiInferenceRequest(), 10),
        lambda: models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(), 10),
    ]
    with caplog.at_level(logging.ERROR):
        for call in calls:
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "not offered" in info.value.details()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_grpc_metadata_field_and_output_filter(two):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(two.channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "shapes"
    with pytest.raises(grpc.RpcError) as info:
        stub.GetModelMetadata(request, 10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    predict = predict_pb2.PredictRequest(output_filter=["labels"])
    predict.model_spec.name = "shapes"
    predict.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(two.images[:2], shape=[2]))
    response = stub.Predict(predict, 30)
    assert list(response.outputs) == ["labels"] and response.model_spec.version.value == 1
    assert len(tf.make_ndarray(response.outputs["labels"])) == 2


def test_a_corrupt_image_in_a_batch_fails_alone(trained):
    loaded = LoadedVersion(trained.version_dir)
    good = [(trained.version_dir / "golden" / f"{i:04d}.img").read_bytes() for i in range(2)]
    alone = [decode_and_predict(loaded, [image])[0][0] for image in good]
    calls = []

    def run(images):
        calls.append(len(images))
        return decode_and_predict(loaded, images)

    batcher = Batcher("m", max_batch_size=8, batch_timeout_s=10.0, max_queue=8)
    key = (loaded, "bytes")
    with batcher.admission():  # hold the batch open until all three are queued
        first = batcher.submit([good[0]], key, run)
        bad = batcher.submit([good[1], CORRUPT], key, run)
        last = batcher.submit([good[1]], key, run)
    np.testing.assert_allclose(first.result(30)[0], alone[0], atol=1e-5)
    np.testing.assert_allclose(last.result(30)[0], alone[1], atol=1e-5)
    with pytest.raises(BadImageError, match="image 1: not a decodable"):
        bad.result(30)
    assert calls == [4]  # one batch, one serving_default call that failed, then the fallback
    batcher.close()
