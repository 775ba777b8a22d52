"""REST and gRPC on loopback: TF Serving formats, equality with plain tf.saved_model.load,
REST/gRPC agreement, bad inputs, limits, auth, metrics."""

from __future__ import annotations

import base64
import json
import threading

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from imgclf.v1 import imgclf_pb2, imgclf_pb2_grpc
from tests.images import png, rgb_array
from tests.servers import copy_version, start_server

ADMIN = "admin-secret-token"
PREDICT = "predict-secret-token"


@pytest.fixture(scope="module")
def srv(trained, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("serve") / "models"
    copy_version(trained.version_dir, model_dir, "shapes", 1)
    server = start_server(
        model_dir,
        admin_tokens=[ADMIN],
        max_images_per_request=8,
        max_image_pixels=200 * 200,
        max_request_bytes=2 * 1024 * 1024,
    )
    server.base = f"http://127.0.0.1:{server.rest_port}"
    server.channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    server.images = [
        (trained.version_dir / "golden" / f"{i:04d}.img").read_bytes() for i in range(4)
    ]
    server.reference = tf.saved_model.load(str(trained.version_dir)).signatures["serving_default"]
    yield server
    server.channel.close()
    server.stop()


def rest_predict(srv, body, path="shapes", **kw):
    return requests.post(
        f"{srv.base}/v1/models/{path}:predict", data=json.dumps(body), timeout=30, **kw
    )


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


def grpc_predict(srv, images, **spec) -> predict_pb2.PredictResponse:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(srv.channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.get("name", "shapes")
    request.model_spec.signature_name = "serving_default"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images, shape=[len(images)]))
    return stub.Predict(request, 30.0)


def test_rest_and_grpc_equal_plain_saved_model(srv):
    expected = srv.reference(image_bytes=tf.constant(srv.images))["probabilities"].numpy()
    rest = rest_predict(srv, {"instances": [b64(i) for i in srv.images]})
    assert rest.status_code == 200, rest.text
    rest_probs = np.array([p["probabilities"] for p in rest.json()["predictions"]])
    stub = prediction_service_pb2_grpc.PredictionServiceStub(srv.channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "shapes"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(srv.images))
    response, call = stub.Predict.with_call(request, 30, metadata=[("x-request-id", "abc-1")])
    assert ("x-request-id", "abc-1") in call.trailing_metadata()
    grpc_probs = tf.make_ndarray(response.outputs["probabilities"])
    np.testing.assert_allclose(rest_probs, expected, atol=1e-5)
    np.testing.assert_allclose(grpc_probs, expected, atol=1e-5)
    np.testing.assert_allclose(rest_probs, grpc_probs, atol=1e-6)
    labels = [p["labels"] for p in rest.json()["predictions"]]
    assert labels == [b.decode() for b in tf.make_ndarray(response.outputs["labels"])]
    assert list(tf.make_ndarray(response.outputs["classes"])) == [
        p["classes"] for p in rest.json()["predictions"]
    ]
    assert response.model_spec.version.value == 1


def test_tf_serving_request_formats(srv):
    one = srv.images[0]
    rows = rest_predict(srv, {"instances": [{"image_bytes": b64(one)}]}).json()
    cols = rest_predict(srv, {"inputs": {"image_bytes": [b64(one)]}}).json()
    bare = rest_predict(srv, {"signature_name": "serving_default", "inputs": [b64(one)]}).json()
    assert rows["predictions"][0]["probabilities"] == pytest.approx(
        cols["outputs"]["probabilities"][0], abs=1e-6
    )
    assert bare["outputs"]["labels"] == cols["outputs"]["labels"]
    wrapped = base64.encodebytes(one).decode()  # what `base64 file.jpg` prints: 76-char lines
    urlsafe = base64.urlsafe_b64encode(one).decode()
    for text in (wrapped, urlsafe):
        same = rest_predict(srv, {"instances": [{"b64": text}]}).json()
        assert same["predictions"][0]["labels"] == rows["predictions"][0]["labels"]
    pinned = rest_predict(srv, {"instances": [b64(one)]}, path="shapes/versions/1")
    assert pinned.status_code == 200
    classify = requests.post(
        f"{srv.base}/v1/models/shapes:classify",
        json={"examples": [{"image_bytes": b64(one)}]},
        timeout=30,
    ).json()
    assert len(classify["results"][0]) == 3
    assert classify["results"][0][0][0] == rows["predictions"][0]["labels"]


def test_predict_images_signature_with_preprocessed_tensors(srv):
    loaded = tf.saved_model.load(str(srv.settings.model_dir / "shapes/1"))
    image = loaded.signatures["preprocess"](image_bytes=tf.constant(srv.images[0]))["image"]
    body = {"signature_name": "predict_images", "instances": [image.numpy().tolist()]}
    got = rest_predict(srv, body).json()["predictions"][0]["probabilities"]
    direct = rest_predict(srv, {"instances": [b64(srv.images[0])]}).json()
    assert got == pytest.approx(direct["predictions"][0]["probabilities"], abs=1e-5)
    wrong = rest_predict(srv, {"signature_name": "predict_images", "instances": [[[1.0, 2.0]]]})
    assert wrong.status_code == 400 and "shape" in wrong.json()["error"]


def test_status_and_metadata_rest_and_grpc(srv):
    status = requests.get(f"{srv.base}/v1/models/shapes", timeout=10).json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    assert status["model_version_status"][0]["version"] == "1"
    meta = requests.get(f"{srv.base}/v1/models/shapes/versions/1/metadata", timeout=10).json()
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    assert set(sigs) == {"serving_default", "preprocess", "predict_images", "explain"}
    assert sigs["serving_default"]["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    stub = prediction_service_pb2_grpc.PredictionServiceStub(srv.channel)
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "shapes"
    response = stub.GetModelMetadata(request, 10)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signature_map)
    assert "serving_default" in signature_map.signature_def
    status_stub = model_service_pb2_grpc.ModelServiceStub(srv.channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "shapes"
    version_status = status_stub.GetModelStatus(request, 10).model_version_status[0]
    assert (version_status.version, version_status.state) == (1, 30)  # AVAILABLE


def test_grpc_classify_own_service_health_and_reflection(srv):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(srv.channel)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "shapes"
    example = request.input.example_list.examples.add()
    example.features.feature["image_bytes"].bytes_list.value.append(srv.images[0])
    classes = stub.Classify(request, 10).result.classifications[0].classes
    assert len(classes) == 3 and classes[0].score >= classes[1].score
    own = imgclf_pb2_grpc.ImgclfStub(srv.channel)
    answer = own.Classify(
        imgclf_pb2.ClassifyRequest(model="shapes", images=srv.images[:2], top_k=2), 10
    )
    assert answer.version == 1 and len(answer.results) == 2 and len(answer.results[0].top) == 2
    assert answer.results[0].top[0].label == classes[0].label
    health = health_pb2_grpc.HealthStub(srv.channel)
    assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == 1
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    reflect = reflection_pb2_grpc.ServerReflectionStub(srv.channel)
    responses = reflect.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"tensorflow.serving.PredictionService", "imgclf.v1.Imgclf"} <= names


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"instances": [{"b64": "aGVsbG8="}]}, 400, "not a JPEG, PNG, GIF, BMP or WebP"),
        ({"instances": [{"b64": "***"}]}, 400, "invalid base64"),
        ({"instances": ["plain string"]}, 400, "b64"),
        ({"instances": []}, 400, "no images"),
        ({"instances": [1], "inputs": [1]}, 400, "exactly one of"),
        ({"signature_name": "nope", "instances": []}, 400, "unknown signature_name"),
        ({"instances": [{"other": {"b64": "aGVsbG8="}}]}, 400, "unknown input"),
        ([1, 2, 3], 400, "JSON object"),
    ],
)
def test_bad_rest_input_is_a_clear_4xx(srv, body, status, message):
    response = rest_predict(srv, body)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert response.headers["X-Request-ID"]


def test_bad_json_unknown_model_and_limits(srv):
    response = requests.post(f"{srv.base}/v1/models/shapes:predict", data=b"{not json", timeout=10)
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]
    assert rest_predict(srv, {"instances": [b64(srv.images[0])]}, path="nope").status_code == 404
    assert (
        rest_predict(srv, {"instances": [b64(srv.images[0])]}, path="shapes/versions/9").status_code
        == 404
    )
    assert requests.get(f"{srv.base}/v1/models/shapes/labels/canary", timeout=10).status_code == 404
    many = rest_predict(srv, {"instances": [b64(srv.images[0])] * 9})
    assert many.status_code == 413 and "limit is 8" in many.json()["error"]
    bomb = png(np.zeros((300, 300, 3), np.uint8))  # 90 000 px > the 40 000 px limit
    refused = rest_predict(srv, {"instances": [b64(bomb)]})
    assert refused.status_code == 413 and "300x300" in refused.json()["error"]
    huge = requests.post(
        f"{srv.base}/v1/models/shapes:predict", data=b"x" * (3 * 1024 * 1024), timeout=30
    )
    assert huge.status_code == 413
    deep = requests.post(
        f"{srv.base}/v1/models/shapes:predict", data=b"[" * 100_000 + b"]" * 100_000, timeout=10
    )
    assert deep.status_code == 400
    corrupt_png = png(rgb_array(20, 20))[:60]  # valid header, truncated body
    assert rest_predict(srv, {"instances": [b64(corrupt_png)]}).status_code == 400
    # The server is still healthy and answers good requests afterwards.
    assert rest_predict(srv, {"instances": [b64(srv.images[0])]}).status_code == 200
    assert requests.get(f"{srv.base}/healthz", timeout=5).json() == {"status": "ok"}


def test_bad_grpc_input_maps_to_grpc_codes(srv):
    with pytest.raises(grpc.RpcError) as info:
        grpc_predict(srv, [b"not an image"])
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a JPEG" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        grpc_predict(srv, srv.images[:1], name="nope")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        grpc_predict(srv, srv.images[:1] * 9)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    stub = prediction_service_pb2_grpc.PredictionServiceStub(srv.channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "shapes"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([1.0, 2.0]))
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, 10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    huge = predict_pb2.PredictRequest()
    huge.model_spec.name = "shapes"
    huge.model_spec.signature_name = "predict_images"
    proto = huge.inputs["images"]
    proto.dtype = tf.float32.as_datatype_enum
    for size in (1_000_000, 32, 32, 3):  # declares 3 billion floats, carries one
        proto.tensor_shape.dim.add(size=size)
    proto.float_val.append(0.0)
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(huge, 10)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_predict(srv, srv.images[:1]).model_spec.version.value == 1


def test_one_bad_image_does_not_affect_concurrent_requests(srv):
    results = []

    def good() -> None:
        results.append(rest_predict(srv, {"instances": [b64(srv.images[1])]}).status_code)

    threads = [threading.Thread(target=good) for _ in range(8)]
    for t in threads:
        t.start()
    bad = rest_predict(srv, {"instances": [b64(srv.images[0]), b64(b"\x89PNG\r\n\x1a\nbroken")]})
    for t in threads:
        t.join()
    assert bad.status_code == 400 and "image 1" in bad.json()["error"]
    assert results == [200] * 8


def test_upload_returns_top_k_and_version(srv):
    files = [("file", ("a.jpg", srv.images[0])), ("file", ("b.jpg", srv.images[1]))]
    answer = requests.post(
        f"{srv.base}/v1/models/shapes:upload?top_k=2", files=files, timeout=30
    ).json()
    assert answer["version"] == 1
    assert [r["filename"] for r in answer["results"]] == ["a.jpg", "b.jpg"]
    assert len(answer["results"][0]["top"]) == 2


def test_admin_endpoints_need_the_admin_token(srv):
    for method, path in [
        ("get", "/v1/jobs"),
        ("post", "/v1/jobs"),
        ("get", "/v1/models"),
        ("delete", "/v1/jobs/x"),
        ("post", "/v1/models/shapes/labels/stable"),
    ]:
        missing = requests.request(method, srv.base + path, json={}, timeout=10)
        assert missing.status_code == 401, (method, path)
        wrong = requests.request(
            method, srv.base + path, json={}, timeout=10, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
    ok = requests.get(
        f"{srv.base}/v1/models", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10
    )
    assert ok.status_code == 200
    assert ok.json()["models"][0]["versions"][0]["state"] == "AVAILABLE"
    promote = requests.post(
        f"{srv.base}/v1/models/shapes/labels/stable",
        json={"version": 1},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    assert promote.status_code == 200 and promote.json()["labels"] == {"stable": 1}
    own = imgclf_pb2_grpc.ImgclfStub(srv.channel)
    with pytest.raises(grpc.RpcError) as info:
        own.SubmitJob(imgclf_pb2.SubmitJobRequest(document_json="{}"), 5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as info:
        own.ListModels(
            imgclf_pb2.ListModelsRequest(), 5, metadata=[("authorization", "Bearer wrong")]
        )
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    listed = own.ListModels(
        imgclf_pb2.ListModelsRequest(), 5, metadata=[("authorization", f"Bearer {ADMIN}")]
    )
    assert listed.models[0].name == "shapes"


def test_metrics_and_readiness(srv):
    rest_predict(srv, {"instances": [b64(srv.images[0])]})
    text = requests.get(f"{srv.base}/metrics", timeout=10).text
    assert 'imgclf_requests_total{code="200",model="shapes",protocol="rest",version="1"}' in text
    assert 'protocol="grpc"' in text
    assert "imgclf_batch_size_bucket" in text
    assert "imgclf_model_load_seconds" in text
    assert "imgclf_prediction_confidence_bucket" in text
    ready = requests.get(f"{srv.base}/readyz", timeout=5).json()
    assert ready["ready"] is True and ready["models"]["shapes"]["ready"] is True
    spec = requests.get(f"{srv.base}/openapi.json", timeout=5).json()
    assert spec["openapi"].startswith("3.") and "/v1/jobs" in spec["paths"]
