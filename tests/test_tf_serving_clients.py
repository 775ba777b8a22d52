"""TensorFlow Serving's example clients, as they send requests: the versions that send
the image bytes work unchanged; the newer ones that send /255 floats are refused with a
message that names the skew and the way out."""

from __future__ import annotations

import base64
import io
import json

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from PIL import Image
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tests.servers import copy_version, start_server


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("tfs-clients") / "models"
    copy_version(trained.version_dir, model_dir, "resnet", 1)
    srv = start_server(model_dir)
    srv.base = f"http://127.0.0.1:{srv.rest_port}"
    png = (trained.version_dir / "golden/0000.img").read_bytes()
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(buffer, format="JPEG")
    srv.jpeg = buffer.getvalue()
    srv.channel = grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}")
    yield srv
    srv.channel.close()
    srv.stop()


def test_resnet_client_rest_jpeg_bytes_works(server):
    # resnet_client.py (TF Serving, before mid-2021), verbatim request format.
    predict_request = '{"instances" : [{"b64": "%s"}]}' % base64.b64encode(server.jpeg).decode()  # noqa: UP031
    response = requests.post(f"{server.base}/v1/models/resnet:predict", data=predict_request)
    response.raise_for_status()
    prediction = response.json()["predictions"][0]
    assert prediction["classes"] in (0, 1, 2)
    assert prediction["labels"] in ("circle", "square", "triangle")


def test_resnet_client_grpc_jpeg_bytes_works(server):
    # resnet_client_grpc.py (before mid-2021): a DT_STRING tensor named image_bytes.
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "resnet"
    request.model_spec.signature_name = "serving_default"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(server.jpeg, shape=[1]))
    result = stub.Predict(request, 10.0)
    probabilities = tf.make_ndarray(result.outputs["probabilities"])
    assert probabilities.shape == (1, 3)
    assert abs(float(probabilities.sum()) - 1.0) < 1e-4


def test_current_resnet_client_rest_floats_are_refused_naming_the_skew(server):
    # The current resnet_client.py: decode, /255, send float instances.
    image = np.array(Image.open(io.BytesIO(server.jpeg)).convert("RGB"))
    body = json.dumps({"instances": np.expand_dims(image / 255.0, 0).tolist()})
    response = requests.post(f"{server.base}/v1/models/resnet:predict", data=body, timeout=30)
    assert response.status_code == 400
    message = response.json()["error"]
    for needed in ("skew", "/255", '{"b64"', "predict_images"):
        assert needed in message, message


def test_current_resnet_client_grpc_float_input_1_is_refused(server):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(server.channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "resnet"
    request.inputs["input_1"].CopyFrom(
        tf.make_tensor_proto(np.zeros([1, 32, 32, 3], np.float32) / 255.0)
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, 10.0)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
