"""gRPC messages decoded to core calls and core answers encoded to messages.

TensorFlow Serving's PredictRequest / ClassificationRequest / GetModelMetadataRequest /
GetModelStatusRequest and imgclf's own messages. No protocol decision lives in the
servicers: they call `parse_*`, the core, then `encode_*`. Refusals are the project's
errors (InvalidInput -> INVALID_ARGUMENT, PayloadTooLarge -> RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
)

from imgclf import contract
from imgclf.errors import InvalidInput, PayloadTooLarge, quote
from imgclf.explanation import Explanations
from imgclf.prediction import Prediction, parse_min_score
from imgclf.server.core import Limits, Target
from imgclf.server.manager import ServedVersion
from imgclf.v1 import imgclf_pb2

_INPUT_OF = {
    contract.SERVING_DEFAULT: contract.INPUT_IMAGE_BYTES,
    contract.PREDICT_IMAGES: contract.INPUT_IMAGES,
}
_OUTPUTS = (contract.OUTPUT_PROBABILITIES, contract.OUTPUT_CLASSES, contract.OUTPUT_LABELS)


@dataclass(frozen=True)
class PredictCall:
    target: Target
    signature: str
    inputs: list[bytes] | np.ndarray  # encoded images, or float [n, H, W, 3]
    outputs: tuple[str, ...]  # what the response carries (output_filter, else all)


def target(model_spec) -> Target:
    """TF Serving's ModelSpec -> Target (version and version_label are one oneof)."""
    if not model_spec.name:
        raise InvalidInput("model_spec.name is required")
    version = model_spec.version.value if model_spec.HasField("version") else None
    return Target(model_spec.name, version, model_spec.version_label or None)


def own_min_score(request: imgclf_pb2.ClassifyRequest | imgclf_pb2.ExplainRequest) -> float | None:
    """The request's min_score, None when unset (the model card's default applies)."""
    return parse_min_score(request.min_score) if request.HasField("min_score") else None


def own_target(request: imgclf_pb2.ClassifyRequest | imgclf_pb2.ExplainRequest) -> Target:
    if not request.model:
        raise InvalidInput("model is required")
    which = request.WhichOneof("target")
    return Target(
        request.model,
        request.version if which == "version" else None,
        request.label if which == "label" else None,
    )


def fill_spec(spec, target: Target, version: int, signature: str) -> None:
    spec.name = target.name
    spec.version.value = version
    spec.signature_name = signature


# ---- Predict ------------------------------------------------------------------------
def _declared_elements(proto) -> int:
    count = 1
    for dim in proto.tensor_shape.dim:
        count *= max(0, dim.size)
    return count


def tensor_to_array(proto, name: str, max_elements: int) -> np.ndarray:
    """A TensorProto as a NumPy array, refusing declared shapes bigger than the limit
    (a few bytes on the wire may declare billions of elements)."""
    declared = _declared_elements(proto)
    if declared > max_elements:
        raise PayloadTooLarge(
            f"input {name!r} declares {declared} elements; the limit is {max_elements}"
        )
    try:
        return tf.make_ndarray(proto)
    except Exception:
        raise InvalidInput(f"input {name!r} is not a valid TensorProto") from None


def parse_predict(request: predict_pb2.PredictRequest, limits: Limits) -> PredictCall:
    """PredictRequest -> PredictCall; checks signature, input names, dtype and size."""
    spec = target(request.model_spec)
    signature = request.model_spec.signature_name or contract.SERVING_DEFAULT
    if signature not in _INPUT_OF:
        raise InvalidInput(
            f"unknown signature_name {quote(signature)}; use '{contract.SERVING_DEFAULT}' or "
            f"'{contract.PREDICT_IMAGES}'"
        )
    name = _INPUT_OF[signature]
    extra = set(request.inputs) - {name}
    if name not in request.inputs or extra:
        raise InvalidInput(
            f"signature {signature!r} takes exactly one input {name!r}"
            + (f"; unknown {quote(sorted(extra))}" if extra else "")
        )
    unknown = [o for o in request.output_filter if o not in _OUTPUTS]
    if unknown:
        raise InvalidInput(
            f"output_filter names unknown output(s) {quote(unknown)}; the outputs are "
            f"{list(_OUTPUTS)}"
        )
    outputs = tuple(o for o in _OUTPUTS if o in request.output_filter) or _OUTPUTS
    proto = request.inputs[name]
    if signature == contract.SERVING_DEFAULT:
        array = tensor_to_array(proto, name, limits.max_images)
        if array.dtype != object:
            raise InvalidInput(f"input {name!r} must be DT_STRING (encoded image bytes)")
        return PredictCall(spec, signature, [bytes(b) for b in array.reshape(-1)], outputs)
    # float32: no more elements than the body could carry
    array = tensor_to_array(proto, name, limits.max_request_bytes // 4)
    if array.dtype.kind not in "fiu":
        raise InvalidInput(f"input {name!r} must be a float tensor [batch, H, W, 3]")
    return PredictCall(spec, signature, array.astype(np.float32), outputs)


def encode_predict(call: PredictCall, prediction: Prediction) -> predict_pb2.PredictResponse:
    response = predict_pb2.PredictResponse()
    fill_spec(response.model_spec, call.target, prediction.version, call.signature)
    tensors = {
        contract.OUTPUT_PROBABILITIES: lambda: tf.make_tensor_proto(
            prediction.probabilities.astype(np.float32)
        ),
        contract.OUTPUT_CLASSES: lambda: tf.make_tensor_proto(prediction.classes(), dtype=tf.int64),
        contract.OUTPUT_LABELS: lambda: tf.make_tensor_proto(
            [s.encode() for s in prediction.predicted_names()], dtype=tf.string
        ),
    }
    for name in call.outputs:
        response.outputs[name].CopyFrom(tensors[name]())
    return response


# ---- Classify ----------------------------------------------------------------------
def images_from_examples(model_input) -> list[bytes]:
    """ClassificationRequest.input (tf.Example list, with or without context) -> bytes."""
    kind = model_input.WhichOneof("kind")
    if kind == "example_list":
        examples, context = list(model_input.example_list.examples), None
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


def encode_classify(
    request: classification_pb2.ClassificationRequest, spec: Target, prediction: Prediction
) -> classification_pb2.ClassificationResponse:
    response = classification_pb2.ClassificationResponse()
    signature = request.model_spec.signature_name or contract.SERVING_DEFAULT
    fill_spec(response.model_spec, spec, prediction.version, signature)
    for row in prediction.top_k():
        classification = response.result.classifications.add()
        for class_name, score in row:
            classification.classes.add(label=class_name, score=score)
    return response


def encode_own_classify(
    request: imgclf_pb2.ClassifyRequest, prediction: Prediction
) -> imgclf_pb2.ClassifyResponse:
    response = imgclf_pb2.ClassifyResponse(
        model=request.model, version=prediction.version, class_names=prediction.class_names
    )
    response.min_score = prediction.min_score
    top = prediction.top_k(request.top_k or contract.DEFAULT_TOP_K)
    rows = zip(top, prediction.labels(), prediction.probabilities, strict=True)
    for row, answer, probabilities in rows:
        result = response.results.add(
            probabilities=probabilities.tolist(), label=answer.class_name, score=answer.score
        )
        for class_name, score in row:
            result.top.add(label=class_name, score=score)
    return response


def parse_explain(request: imgclf_pb2.ExplainRequest) -> tuple[Target, float | None]:
    """(target, min_score or None); min_score must lie in [0, 1]."""
    spec = own_target(request)
    if request.top_k < 0:
        raise InvalidInput(
            f"top_k must be >= 0 (0 = {contract.DEFAULT_TOP_K}), got {request.top_k}"
        )
    return spec, own_min_score(request)


def encode_explain(
    request: imgclf_pb2.ExplainRequest, explained: Explanations
) -> imgclf_pb2.ExplainResponse:
    prediction = explained.prediction
    response = imgclf_pb2.ExplainResponse(
        model=request.model, version=prediction.version, class_names=prediction.class_names
    )
    top = prediction.top_k(request.top_k or contract.DEFAULT_TOP_K)
    rows = zip(
        top,
        prediction.labels(),
        prediction.probabilities,
        explained.heatmap_pngs,
        explained.overlay_pngs,
        strict=True,
    )
    for row, (label, score), probabilities, heatmap, overlay in rows:
        entry = response.explanations.add(
            label=label,
            score=score,
            probabilities=probabilities.tolist(),
            heatmap_png=heatmap,
            overlay_png=overlay,
        )
        for class_name, class_score in row:
            entry.top.add(label=class_name, score=class_score)
    return response


# ---- metadata and status ---------------------------------------------------------------
def parse_metadata(request: get_model_metadata_pb2.GetModelMetadataRequest) -> Target:
    """As TF Serving: metadata_field must be given and be 'signature_def'."""
    fields = list(request.metadata_field)
    if fields != ["signature_def"]:
        raise InvalidInput(
            "metadata_field must be ['signature_def'] (the only metadata served), got "
            f"{quote(fields)}"
        )
    return target(request.model_spec)


def encode_metadata(
    spec: Target, served: ServedVersion, signature_def_map
) -> get_model_metadata_pb2.GetModelMetadataResponse:
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    fill_spec(response.model_spec, spec, served.version, "")
    response.metadata["signature_def"].Pack(signature_def_map)
    return response


def encode_status(
    statuses: Sequence[ServedVersion],
) -> get_model_status_pb2.GetModelStatusResponse:
    response = get_model_status_pb2.GetModelStatusResponse()
    for served in statuses:
        entry = response.model_version_status.add()
        entry.version = served.version
        entry.state = int(served.state)
        entry.status.error_code = 2 if served.error else 0  # UNKNOWN / OK
        entry.status.error_message = served.error
    return response


# ---- jobs and models ---------------------------------------------------------------------
def parse_job_document(request: imgclf_pb2.SubmitJobRequest) -> object:
    try:
        return json.loads(request.document_json or "null")
    except (ValueError, RecursionError):
        raise InvalidInput("document_json is not valid JSON") from None


def encode_job(record: dict) -> imgclf_pb2.Job:
    return imgclf_pb2.Job(
        id=record["id"],
        status=record["status"],
        name=record.get("name") or "",
        version=record.get("version") or 0,
        error=record.get("error") or "",
        record_json=json.dumps(record),
    )


def encode_job_logs(chunk: dict) -> imgclf_pb2.JobLogs:
    return imgclf_pb2.JobLogs(
        id=chunk["id"],
        status=chunk["status"],
        offset=chunk["offset"],
        next_offset=chunk["next_offset"],
        text=chunk["text"],
    )


def encode_aliases(name: str, aliases: dict[str, int]) -> imgclf_pb2.SetLabelResponse:
    return imgclf_pb2.SetLabelResponse(model=name, labels=aliases)


def encode_models(models: Sequence[dict]) -> imgclf_pb2.ListModelsResponse:
    response = imgclf_pb2.ListModelsResponse()
    for model in models:
        entry = response.models.add(name=model["name"])
        for alias, version in model["labels"].items():
            entry.labels[alias] = version
        for version in model["versions"]:
            entry.versions.add(
                version=version["version"], state=version["state"], error=version["error"]
            )
    return response
