"""End to end: a real run publishes a SavedModel that reproduces training from raw bytes."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from imgclf import contract, repository


def test_run_learns_clearly_better_than_chance(trained):
    assert trained.version == 1
    assert trained.metrics["accuracy"] >= 0.6  # chance is 1/3
    assert trained.card["metrics"]["val"]["accuracy"] >= 0.6


def test_layout_matches_the_contract(trained):
    d = trained.version_dir
    assert d == d.parent / "1"
    for rel in [
        "saved_model.pb",
        "variables",
        contract.LABELS_FILE,
        contract.WARMUP_FILE,
        contract.MODEL_CARD_FILE,
        contract.GOLDEN_MANIFEST,
        "report/report.html",
        "report/learning_curves.png",
        "report/confusion_matrix.png",
        "report/splits.json",
    ]:
        assert (d / rel).exists(), rel
    assert repository.read_labels(d) == ["circle", "square", "triangle"]


def test_plain_tf_load_gives_identical_predictions_from_bytes(trained):
    loaded = tf.saved_model.load(str(trained.version_dir))
    assert set(contract.SIGNATURES) <= set(loaded.signatures)
    manifest = json.loads((trained.version_dir / contract.GOLDEN_MANIFEST).read_text())
    images = [(trained.version_dir / e["file"]).read_bytes() for e in manifest["inputs"]]
    expected = np.array([e["probabilities"] for e in manifest["inputs"]])
    out = loaded.signatures["serving_default"](image_bytes=tf.constant(images))
    np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    assert out["classes"].dtype == tf.int64
    labels = [b.decode() for b in out["labels"].numpy()]
    assert labels == [["circle", "square", "triangle"][i] for i in expected.argmax(1)]
    # The golden inputs are the raw files of held-out images, byte for byte.
    sources = [trained.card["data"]["root"] + "/" + e["source"] for e in manifest["inputs"]]
    assert images == [Path(s).read_bytes() for s in sources]
    test_files = {
        p for p, _ in json.loads((trained.version_dir / "report/splits.json").read_text())["test"]
    }
    assert {e["source"] for e in manifest["inputs"]} <= test_files


def test_signatures_shapes_and_dtypes(trained):
    loaded = tf.saved_model.load(str(trained.version_dir))
    serving = loaded.signatures["serving_default"]
    assert serving.structured_input_signature[1]["image_bytes"].dtype == tf.string
    assert serving.structured_input_signature[1]["image_bytes"].shape.as_list() == [None]
    pre = loaded.signatures["preprocess"]
    assert pre.structured_input_signature[1]["image_bytes"].shape.as_list() == []
    images = loaded.signatures["predict_images"].structured_input_signature[1]["images"]
    assert images.shape.as_list() == [None, 32, 32, 3]
    assert images.dtype == tf.float32
    # preprocess + predict_images == serving_default
    data = (trained.version_dir / "golden/0000.img").read_bytes()
    image = pre(image_bytes=tf.constant(data))["image"]
    assert image.shape == (32, 32, 3)
    via_parts = loaded.signatures["predict_images"](images=image[None])["probabilities"]
    direct = serving(image_bytes=tf.constant([data]))["probabilities"]
    np.testing.assert_allclose(via_parts.numpy(), direct.numpy(), atol=1e-6)
    # An empty batch is valid and returns zero rows.
    empty = serving(image_bytes=tf.constant([], dtype=tf.string))["probabilities"]
    assert empty.shape == (0, 3)


def test_warmup_records_are_tf_serving_prediction_logs(trained):
    records = list(tf.data.TFRecordDataset(str(trained.version_dir / contract.WARMUP_FILE)))
    assert 1 <= len(records) <= 1000
    log = prediction_log_pb2.PredictionLog.FromString(records[0].numpy())
    request = log.predict_log.request
    assert request.model_spec.signature_name == "serving_default"
    assert request.inputs["image_bytes"].dtype == tf.string.as_datatype_enum


def test_model_card_and_report(trained):
    card = json.loads((trained.version_dir / contract.MODEL_CARD_FILE).read_text())
    assert card["version"] == 1
    assert card["parity"]["passed"] is True
    assert card["parity"]["max_abs_diff"] <= 1e-5
    assert card["labels"] == ["circle", "square", "triangle"]
    assert len(card["data"]["fingerprint"]) == 64
    assert set(card["metrics"]) == {"train", "val", "test"}
    test = card["metrics"]["test"]
    assert {"accuracy", "top_3_accuracy", "per_class", "confusion_matrix", "macro_f1"} <= set(test)
    assert sum(map(sum, test["confusion_matrix"])) == test["count"]
    assert [h["phase"] for h in card["history"]] == [1] * 4 + [2] * 2
    assert "summary" in card["diagnosis"] and "gap" in card["diagnosis"]
    assert card["timings"]["total_seconds"] > 0
    html = (trained.version_dir / "report/report.html").read_text()
    assert "learning_curves.png" in html and "Diagnosis" in html
    assert (trained.run_dir / "tensorboard").is_dir()
    assert list((trained.run_dir / "tensorboard").rglob("events.out.tfevents*"))


def test_two_class_artifact_is_under_100_mb(trained):
    size = sum(p.stat().st_size for p in trained.version_dir.rglob("*") if p.is_file())
    # 3 classes here; a 2-class head is 2048 weights smaller still.
    assert size < 100_000_000
    assert trained.card["artifact_bytes"] < 100_000_000


def test_parity_check_detects_a_mismatch(trained):
    from imgclf.trainer.export import parity_check

    manifest = json.loads((trained.version_dir / contract.GOLDEN_MANIFEST).read_text())
    images = [(trained.version_dir / e["file"]).read_bytes() for e in manifest["inputs"]]
    expected = np.array([e["probabilities"] for e in manifest["inputs"]], dtype=np.float32)
    loaded = tf.saved_model.load(str(trained.version_dir))
    pre = np.stack(
        [
            loaded.signatures["preprocess"](image_bytes=tf.constant(b))["image"].numpy()
            for b in images
        ]
    )
    ok = parity_check(trained.version_dir, images, expected, pre)
    assert ok["passed"] and ok["max_abs_diff"] <= 1e-5
    # A training path that scaled by 1/255 on top (the classic drift) is caught.
    drifted = parity_check(trained.version_dir, images, expected, pre / 255.0)
    assert not drifted["passed"]
    shifted = parity_check(trained.version_dir, images, expected + 1e-3, pre)
    assert not shifted["passed"]


@pytest.mark.parametrize("signature", ["serving_default"])
def test_corrupt_bytes_fail_in_the_served_path(trained, signature):
    loaded = tf.saved_model.load(str(trained.version_dir))
    with pytest.raises(tf.errors.InvalidArgumentError):
        loaded.signatures[signature](image_bytes=tf.constant([b"garbage"]))


def _example(image: bytes) -> bytes:
    feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))
    return tf.train.Example(
        features=tf.train.Features(feature={contract.INPUT_IMAGE_BYTES: feature})
    ).SerializeToString()


def test_signature_defs_are_what_tf_serving_expects(trained):
    """Read saved_model.pb as TF Serving does: the `serve` graph, each SignatureDef's
    method name, input keys and dtypes (Predict takes any; Classify needs its method name,
    one DT_STRING input of serialized tf.Examples, DT_STRING classes and DT_FLOAT scores)."""
    from tensorflow.core.framework import types_pb2
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((trained.version_dir / "saved_model.pb").read_bytes())
    (graph,) = [g for g in proto.meta_graphs if "serve" in g.meta_info_def.tags]
    defs = {k: v for k, v in graph.signature_def.items() if not k.startswith("__")}
    string, float_, int64 = types_pb2.DT_STRING, types_pb2.DT_FLOAT, types_pb2.DT_INT64
    predict_outputs = {"probabilities": float_, "classes": int64, "labels": string}
    want = {
        "serving_default": (contract.PREDICT_METHOD, {"image_bytes": string}, predict_outputs),
        "preprocess": (contract.PREDICT_METHOD, {"image_bytes": string}, {"image": float_}),
        "predict_images": (contract.PREDICT_METHOD, {"images": float_}, predict_outputs),
        "classify": (
            contract.CLASSIFY_METHOD,
            {"inputs": string},
            {"classes": string, "scores": float_},
        ),
        "explain": (
            contract.PREDICT_METHOD,
            {"image_bytes": string},
            {**predict_outputs, "heatmap": float_},
        ),
    }
    assert set(defs) == set(want)
    for name, (method, inputs, outputs) in want.items():
        sig = defs[name]
        assert sig.method_name == method, name
        assert {k: v.dtype for k, v in sig.inputs.items()} == inputs, name
        assert {k: v.dtype for k, v in sig.outputs.items()} == outputs, name
    classify = defs["classify"]
    assert [d.size for d in classify.inputs["inputs"].tensor_shape.dim] == [-1]
    for key in ("classes", "scores"):
        assert len(classify.outputs[key].tensor_shape.dim) == 2


def test_classify_signature_ranks_every_class_from_tf_examples(trained):
    loaded = tf.saved_model.load(str(trained.version_dir))
    manifest = json.loads((trained.version_dir / contract.GOLDEN_MANIFEST).read_text())
    images = [(trained.version_dir / e["file"]).read_bytes() for e in manifest["inputs"]]
    expected = np.array([e["probabilities"] for e in manifest["inputs"]])
    out = loaded.signatures["classify"](inputs=tf.constant([_example(b) for b in images]))
    labels = ["circle", "square", "triangle"]
    classes = [[c.decode() for c in row] for row in out["classes"].numpy()]
    scores = out["scores"].numpy()
    assert scores.shape == np.shape(classes) == (len(images), 3)
    for row_classes, row_scores, probs in zip(classes, scores, expected, strict=True):
        assert sorted(row_classes) == labels
        assert list(row_scores) == sorted(row_scores, reverse=True)
        np.testing.assert_allclose(
            row_scores, [probs[labels.index(c)] for c in row_classes], atol=1e-5
        )


def test_tensorboard_phases_share_one_step_axis(trained):
    """Phase 2's epoch summaries continue after phase 1's, instead of restarting at 0."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps = {}
    for phase in (1, 2):
        events = EventAccumulator(str(trained.run_dir / f"tensorboard/phase{phase}/validation"))
        events.Reload()
        tags = [t for t in events.Tags()["tensors"] if t.startswith("epoch_")]
        assert tags, events.Tags()
        steps[phase] = sorted({e.step for e in events.Tensors(tags[0])})
    history = trained.card["history"]
    phase1 = sum(1 for h in history if h["phase"] == 1)
    assert steps[1] == list(range(phase1))
    assert steps[2] == list(range(phase1, len(history)))
