"""The protocol codecs and the error table, without a server: what each protocol's
messages become, and that every error knows both its HTTP status and its gRPC code."""

from __future__ import annotations

import inspect
import json

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

from imgclf import contract, errors
from imgclf.errors import InvalidInput, NotFound, PayloadTooLarge
from imgclf.prediction import Prediction
from imgclf.server import grpc_codec, rest_codec
from imgclf.server.core import Limits, Target

LIMITS = Limits(
    max_images=4, max_pixels=100 * 100, max_request_bytes=1 << 20, max_decode_bytes=1 << 26
)


def prediction(probabilities) -> Prediction:
    return Prediction("m", 3, np.array(probabilities, np.float32), ["cat", "dog", "fox"])


# ---- the error table -----------------------------------------------------------------------
ERROR_CLASSES = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, errors.ImgclfError)
]


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda c: c.__name__)
def test_every_error_has_an_http_status_and_a_grpc_code(cls):
    assert 400 <= cls.status < 600
    assert isinstance(grpc.StatusCode[cls.grpc_code], grpc.StatusCode)
    assert cls.grpc_code != "OK"


def test_error_table_maps_the_statuses_that_matter():
    expected = {
        errors.InvalidInput: (400, "INVALID_ARGUMENT"),
        errors.BadImageError: (400, "INVALID_ARGUMENT"),
        errors.PayloadTooLarge: (413, "RESOURCE_EXHAUSTED"),
        errors.NotFound: (404, "NOT_FOUND"),
        errors.Unavailable: (503, "UNAVAILABLE"),
        errors.NotReady: (503, "UNAVAILABLE"),
        errors.Overloaded: (503, "RESOURCE_EXHAUSTED"),
        errors.Unauthorized: (401, "UNAUTHENTICATED"),
        errors.Forbidden: (403, "PERMISSION_DENIED"),
        errors.Unimplemented: (501, "UNIMPLEMENTED"),
        errors.ImgclfError: (500, "INTERNAL"),
    }
    for cls, (status, code) in expected.items():
        assert (cls.status, cls.grpc_code) == (status, code), cls.__name__


def test_quote_cuts_client_supplied_names():
    assert errors.quote("shapes") == "'shapes'"
    long = errors.quote("x" * 5000)
    assert len(long) == errors.QUOTE_LIMIT and long.endswith("...'")


# ---- REST ------------------------------------------------------------------------------------
def test_rest_targets_refuse_huge_versions_and_quote_names_short():
    assert rest_codec.parse_target("shapes", "12") == Target("shapes", 12, None)
    assert rest_codec.parse_target("shapes", None, "stable") == Target("shapes", None, "stable")
    with pytest.raises(InvalidInput, match="at most 18 digits") as info:
        rest_codec.parse_target("shapes", "9" * 5000)
    assert len(str(info.value)) < 150
    with pytest.raises(NotFound) as info:
        rest_codec.parse_target("n" * 5000)
    assert len(str(info.value)) < 150
    with pytest.raises(InvalidInput, match="invalid label"):
        rest_codec.parse_target("shapes", None, "Not/A-Label")


def test_rest_predict_body_formats_and_hostile_numbers():
    body = {"instances": [{"b64": "aGk="}, {"image_bytes": {"b64": "aGk="}}]}
    signature, fmt, values = rest_codec.parse_predict_body(body)
    assert (signature, fmt) == (contract.SERVING_DEFAULT, "row")
    assert rest_codec.decode_images(values) == [b"hi", b"hi"]
    signature, fmt, values = rest_codec.parse_predict_body({"inputs": {"b64": "aGk="}})
    assert fmt == "columnar" and rest_codec.decode_images(values) == [b"hi"]
    huge = json.loads(
        '{"signature_name": "predict_images", "instances": [' + "1" + "0" * 400 + "]}"
    )
    _, _, values = rest_codec.parse_predict_body(huge)
    with pytest.raises(InvalidInput, match="nested list of numbers"):
        rest_codec.decode_tensors(values)
    with pytest.raises(InvalidInput, match="nested list of numbers"):
        rest_codec.decode_tensors([[1, 2], [3]])


def test_rest_encoders_share_one_prediction():
    answer = prediction([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    rows = rest_codec.encode_outputs(answer, "row")["predictions"]
    assert [r["labels"] for r in rows] == ["dog", "cat"] and rows[0]["classes"] == 1
    cols = rest_codec.encode_outputs(answer, "columnar")["outputs"]
    assert cols["classes"] == [1, 0] and cols["labels"] == ["dog", "cat"]
    assert rest_codec.encode_classify(answer)["results"][0][0] == ["dog", pytest.approx(0.7)]
    upload = rest_codec.encode_upload(Target("m"), ["a.png", "b.png"], answer, 1)
    assert upload["version"] == 3 and upload["results"][1]["top"][0]["label"] == "cat"
    assert rest_codec.parse_top_k(None) == contract.DEFAULT_TOP_K
    with pytest.raises(InvalidInput, match="top_k"):
        rest_codec.parse_top_k("0")


# ---- gRPC ------------------------------------------------------------------------------------
def predict_request(images, signature="", output_filter=()) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(output_filter=list(output_filter))
    request.model_spec.name = "m"
    request.model_spec.signature_name = signature
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(images, shape=[len(images)]))
    return request


def test_grpc_predict_parses_and_honours_output_filter():
    call = grpc_codec.parse_predict(predict_request([b"a", b"b"]), LIMITS)
    assert call.inputs == [b"a", b"b"] and call.signature == contract.SERVING_DEFAULT
    assert call.outputs == (
        contract.OUTPUT_PROBABILITIES,
        contract.OUTPUT_CLASSES,
        contract.OUTPUT_LABELS,
    )
    answer = prediction([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    full = grpc_codec.encode_predict(call, answer)
    assert set(full.outputs) == {"probabilities", "classes", "labels"}
    assert full.model_spec.version.value == 3
    filtered = grpc_codec.parse_predict(predict_request([b"a"], output_filter=["labels"]), LIMITS)
    only = grpc_codec.encode_predict(filtered, prediction([[0.1, 0.7, 0.2]]))
    assert list(only.outputs) == ["labels"]
    assert tf.make_ndarray(only.outputs["labels"]).tolist() == [b"dog"]
    with pytest.raises(InvalidInput, match="output_filter"):
        grpc_codec.parse_predict(predict_request([b"a"], output_filter=["heatmap"]), LIMITS)


def test_grpc_predict_refusals():
    with pytest.raises(PayloadTooLarge, match="limit is 4"):
        grpc_codec.parse_predict(predict_request([b"a"] * 5), LIMITS)
    with pytest.raises(InvalidInput, match="unknown signature_name"):
        grpc_codec.parse_predict(predict_request([b"a"], signature="s" * 5000), LIMITS)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([1.0]))
    with pytest.raises(InvalidInput, match="DT_STRING"):
        grpc_codec.parse_predict(request, LIMITS)
    request.model_spec.name = ""
    with pytest.raises(InvalidInput, match=r"model_spec\.name is required"):
        grpc_codec.parse_predict(request, LIMITS)


def test_grpc_metadata_needs_signature_def_field_as_tf_serving():
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "m"
    with pytest.raises(InvalidInput, match="metadata_field"):
        grpc_codec.parse_metadata(request)
    request.metadata_field.append("signature_def")
    assert grpc_codec.parse_metadata(request) == Target("m")


def test_grpc_examples_and_classify_encoding():
    from tensorflow_serving.apis import classification_pb2

    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "m"
    example = request.input.example_list_with_context.examples.add()
    context = request.input.example_list_with_context.context
    context.features.feature["image_bytes"].bytes_list.value.append(b"img")
    assert grpc_codec.images_from_examples(request.input) == [b"img"]
    example.features.feature["image_bytes"].bytes_list.value.append(b"own")
    assert grpc_codec.images_from_examples(request.input) == [b"own"]
    response = grpc_codec.encode_classify(request, Target("m"), prediction([[0.1, 0.7, 0.2]]))
    classes = response.result.classifications[0].classes
    assert [c.label for c in classes] == ["dog", "fox", "cat"]
    with pytest.raises(InvalidInput, match="example_list"):
        grpc_codec.images_from_examples(classification_pb2.ClassificationRequest().input)
