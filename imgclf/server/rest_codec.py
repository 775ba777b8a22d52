"""TensorFlow Serving's REST JSON formats, decoded to plain Python and encoded back.

Row format:      {"signature_name": "...", "instances": [{"b64": "..."}, ...]}
Columnar format: {"signature_name": "...", "inputs": {"image_bytes": [{"b64": "..."}]}}
Both accept the single-input shorthand (values without the input name). Responses
mirror the request: {"predictions": [{...per instance...}]} or {"outputs": {...}}.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import numpy as np

from imgclf import contract
from imgclf.errors import InvalidInput, NotFound, quote
from imgclf.explanation import Explanations
from imgclf.prediction import ClassScore, Prediction, parse_min_score
from imgclf.server.core import Target

_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_ALIAS = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_MAX_VERSION_DIGITS = 18  # every version below 10**18 fits TF Serving's int64


def parse_target(name: str, version: str | None = None, alias: str | None = None) -> Target:
    """URL parts -> Target. Names quoted back are cut short; huge versions are a 400."""
    if not _MODEL_NAME.match(name):
        raise NotFound(f"model {quote(name)} not found (names are 1-64 letters, digits, - or _)")
    number = None
    if version is not None:
        if not version.isdigit() or len(version) > _MAX_VERSION_DIGITS:
            raise InvalidInput(
                f"version {quote(version)} is not a number of at most {_MAX_VERSION_DIGITS} digits"
            )
        number = int(version)
    if alias is not None and not _ALIAS.match(alias):
        raise InvalidInput(
            f"invalid label {quote(alias)}: use 1-32 lowercase letters, digits, '-' or '_'"
        )
    return Target(name, number, alias)


# Clients that decode and scale images themselves (TF Serving's newer resnet_client.py
# sends RGB/255 floats) would be silently mis-scaled: the model's own preprocessing is
# ResNet-50's (BGR, ImageNet means subtracted, no /255) and runs inside the model.
SKEW_MESSAGE = (
    "{where}: got numbers where 'serving_default' takes encoded image bytes. The model "
    "preprocesses inside itself (ResNet-50: RGB->BGR, ImageNet means subtracted, no /255), "
    "so pixels decoded or scaled by the client (e.g. /255 floats) would differ from "
    "training (train/serve skew) and are refused. Send the file as "
    '{{"b64": "<base64 JPEG/PNG bytes>"}}, or use signature_name '
    f"'{contract.PREDICT_IMAGES}' with images already preprocessed the model's way."
)


def _b64(value: Any, where: str) -> bytes:
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        # Line breaks (`base64` without -w0) and the URL-safe alphabet are both accepted.
        text = "".join(value["b64"].split())
        if "-" in text or "_" in text:
            text = text.replace("-", "+").replace("_", "/")
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"{where}: invalid base64 in 'b64'") from None
    if isinstance(value, (list, int, float)) and not isinstance(value, bool):
        raise InvalidInput(SKEW_MESSAGE.format(where=where))
    raise InvalidInput(
        f'{where}: expected {{"b64": "<base64 image bytes>"}} for the string input '
        f"'{contract.INPUT_IMAGE_BYTES}'"
    )


def _unwrap(value: Any, input_name: str, where: str) -> Any:
    """`{"image_bytes": X}` -> X; a bare value is taken as the single input."""
    if isinstance(value, dict) and "b64" not in value:
        if set(value) != {input_name}:
            raise InvalidInput(
                f"{where}: unknown input(s) {sorted(set(value) - {input_name})}; "
                f"this signature takes only '{input_name}'"
            )
        return value[input_name]
    return value


def parse_predict_body(body: Any) -> tuple[str, str, list]:
    """-> (signature_name, format 'row'|'columnar', list of raw instances)."""
    if not isinstance(body, dict):
        raise InvalidInput("the request body must be a JSON object with 'instances' or 'inputs'")
    signature = body.get("signature_name") or contract.SERVING_DEFAULT
    if not isinstance(signature, str):
        raise InvalidInput("'signature_name' must be a string")
    if signature not in (contract.SERVING_DEFAULT, contract.PREDICT_IMAGES):
        raise InvalidInput(
            f"unknown signature_name {signature!r}; use '{contract.SERVING_DEFAULT}' (image "
            f"bytes) or '{contract.PREDICT_IMAGES}' (preprocessed float images)"
        )
    has_rows, has_cols = "instances" in body, "inputs" in body
    if has_rows == has_cols:
        raise InvalidInput("the request must have exactly one of 'instances' or 'inputs'")
    input_name = (
        contract.INPUT_IMAGE_BYTES
        if signature == contract.SERVING_DEFAULT
        else contract.INPUT_IMAGES
    )
    if has_rows:
        rows = body["instances"]
        if not isinstance(rows, list):
            raise InvalidInput("'instances' must be a list")
        values = [_unwrap(row, input_name, f"instance {i}") for i, row in enumerate(rows)]
        return signature, "row", values
    columns = _unwrap(body["inputs"], input_name, "inputs")
    if signature == contract.SERVING_DEFAULT and isinstance(columns, dict):
        columns = [columns]  # a single b64 object is a batch of one
    if not isinstance(columns, list):
        raise InvalidInput(f"'inputs' must hold a list of values for '{input_name}'")
    return signature, "columnar", columns


def decode_images(values: list) -> list[bytes]:
    return [_b64(value, f"instance {i}") for i, value in enumerate(values)]


def decode_tensors(values: list) -> np.ndarray:
    try:
        array = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError, OverflowError):  # 10**400 overflows the conversion
        raise InvalidInput(
            f"'{contract.INPUT_IMAGES}' must be a nested list of numbers shaped [batch, H, W, 3]"
        ) from None
    return array


def encode_outputs(prediction: Prediction, fmt: str) -> dict:
    """TF Serving's response: row format per instance, columnar format per output."""
    probabilities = prediction.probabilities
    classes = prediction.classes()
    names = prediction.predicted_names()
    if fmt == "row":
        return {
            "predictions": [
                {
                    contract.OUTPUT_PROBABILITIES: [float(p) for p in row],
                    contract.OUTPUT_CLASSES: int(c),
                    contract.OUTPUT_LABELS: label,
                }
                for row, c, label in zip(probabilities, classes, names, strict=True)
            ]
        }
    return {
        "outputs": {
            contract.OUTPUT_PROBABILITIES: probabilities.astype(float).tolist(),
            contract.OUTPUT_CLASSES: [int(c) for c in classes],
            contract.OUTPUT_LABELS: names,
        }
    }


def encode_classify(prediction: Prediction) -> dict:
    """TF Serving's classify response: per example, [class name, score] pairs, best first;
    plus imgclf's `labels`: per example the answer, "unknown" under min_score."""
    return {
        "results": [[[name, score] for name, score in row] for row in prediction.top_k()],
        "labels": [name for name, _ in prediction.labels()],
    }


def parse_top_k(value: str | None) -> int:
    if value is None:
        return contract.DEFAULT_TOP_K
    if not value.isdigit() or len(value) > 6 or int(value) < 1:
        raise InvalidInput(f"top_k must be a positive integer, got {quote(value)}")
    return int(value)


def parse_flag(value: str | None, name: str) -> bool:
    """A form field's yes/no ('true'/'false', '1'/'0'; absent = false)."""
    if value is None or value.lower() in ("", "false", "0", "no"):
        return False
    if value.lower() in ("true", "1", "yes"):
        return True
    raise InvalidInput(f"{name} must be true or false, got {quote(value)}")


def parse_explain_body(body: Any) -> tuple[list[bytes], int, float | None]:
    """{"instances": [{"b64": ...}], "top_k": k, "min_score": s} -> (images, k, min_score)."""
    if not isinstance(body, dict) or not isinstance(body.get("instances"), list):
        raise InvalidInput(
            'the explain body must be a JSON object {"instances": [{"b64": "..."}, ...]}'
        )
    unknown = sorted(set(body) - {"instances", "top_k", "min_score", "signature_name"})
    if unknown:
        raise InvalidInput(
            f"unknown field(s) {quote(unknown)}; :explain takes instances, top_k, min_score"
        )
    if body.get("signature_name", contract.EXPLAIN) != contract.EXPLAIN:
        raise InvalidInput(f"signature_name of :explain can only be '{contract.EXPLAIN}'")
    top_k = body.get("top_k", contract.DEFAULT_TOP_K)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 10**6:
        raise InvalidInput(f"top_k must be a positive integer, got {quote(top_k)}")
    images = [
        _b64(_unwrap(row, contract.INPUT_IMAGE_BYTES, f"instance {i}"), f"instance {i}")
        for i, row in enumerate(body["instances"])
    ]
    return images, top_k, parse_min_score(body.get("min_score"))


def _explanation(explained: Explanations, i: int, top: list, label: ClassScore) -> dict:
    return {
        "label": label.class_name,
        "score": label.score,
        "top": [{"label": name, "score": s} for name, s in top],
        "heatmap": {"b64": base64.b64encode(explained.heatmap_pngs[i]).decode()},
        "overlay": {"b64": base64.b64encode(explained.overlay_pngs[i]).decode()},
    }


def encode_explain(target: Target, explained: Explanations, k: int) -> dict:
    prediction = explained.prediction
    rows = prediction.top_k(k)
    return {
        "model_spec": {
            "name": target.name,
            "version": str(prediction.version),
            "signature_name": contract.EXPLAIN,
        },
        "explanations": [
            _explanation(explained, i, row, label)
            for i, (row, label) in enumerate(zip(rows, prediction.labels(), strict=True))
        ],
        "min_score": prediction.min_score,
    }


def encode_upload(
    target: Target,
    filenames: list[str],
    prediction: Prediction,
    k: int,
    explained: Explanations | None = None,
) -> dict:
    """Per file its label (or "unknown" under min_score), score and top-k; with `explained`
    (form field explain=true) each result also carries heatmap and overlay as :explain."""
    results = []
    rows = prediction.top_k(k)
    for i, (filename, answer, row) in enumerate(
        zip(filenames, prediction.labels(), rows, strict=True)
    ):
        if explained is not None:
            results.append({"filename": filename, **_explanation(explained, i, row, answer)})
        else:
            results.append(
                {
                    "filename": filename,
                    "label": answer.class_name,
                    "score": answer.score,
                    "top": [{"label": name, "score": s} for name, s in row],
                }
            )
    return {
        "model": target.name,
        "version": prediction.version,
        "results": results,
        "min_score": prediction.min_score,
    }


def encode_metadata(target: Target, version: int, signature_def_map) -> dict:
    from google.protobuf import json_format

    signatures = json_format.MessageToDict(signature_def_map, preserving_proto_field_name=True)
    return {
        "model_spec": {"name": target.name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": signatures},
    }


def parse_classify_body(body: Any) -> tuple[list[bytes], float | None]:
    """TF Serving classify: {"examples": [{"image_bytes": {"b64": ...}}], "context": {...}},
    plus imgclf's optional "min_score" in [0, 1]. Returns (images, min_score or None)."""
    if not isinstance(body, dict) or not isinstance(body.get("examples"), list):
        raise InvalidInput("the classify body must be a JSON object with an 'examples' list")
    min_score = parse_min_score(body.get("min_score"))
    context = body.get("context") or {}
    if not isinstance(context, dict):
        raise InvalidInput("'context' must be an object")
    images = []
    for i, example in enumerate(body["examples"]):
        if not isinstance(example, dict):
            raise InvalidInput(f"example {i}: must be an object of features")
        merged = {**context, **example}
        if contract.INPUT_IMAGE_BYTES not in merged:
            raise InvalidInput(f"example {i}: missing feature '{contract.INPUT_IMAGE_BYTES}'")
        value = merged[contract.INPUT_IMAGE_BYTES]
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        images.append(_b64(value, f"example {i}"))
    return images, min_score


def version_status(served_list) -> dict:
    return {
        "model_version_status": [
            {
                "version": str(s.version),
                "state": s.state.name,
                "status": {
                    "error_code": "UNKNOWN" if s.error else "OK",
                    "error_message": s.error,
                },
            }
            for s in served_list
        ]
    }
