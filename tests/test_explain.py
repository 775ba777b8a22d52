"""Explanations: the `explain` signature (Grad-CAM), its golden heatmaps, and serving it
over REST, gRPC, :upload and the client; old versions and bad input are refused clearly."""

from __future__ import annotations

import base64
import io
import json
import shutil

import grpc
import keras
import numpy as np
import pytest
import requests
import tensorflow as tf
from PIL import Image

from imgclf import contract
from imgclf.artifact import LoadedVersion, replay_golden
from imgclf.client import Client, Conflict
from imgclf.explanation import quantise
from imgclf.server.app import ImgclfServer
from imgclf.settings import Settings
from imgclf.trainer.gallery import confident_mistakes
from imgclf.v1 import imgclf_pb2, imgclf_pb2_grpc
from tests.explain_data import (
    QUADRANT_SHAPES,
    draw_in_quadrant,
    export_untrained,
    strip_explain,
)
from tests.images import png
from tests.servers import copy_version

SIZE = 64
# The localization test's data and training (measured: docs/BENCHMARKS.md, "Explanations").
LOCALIZE_PER_CLASS = 40
LOCALIZE_CONFIG = {
    "image_size": SIZE,
    "weights": "none",
    "recipe": "from_scratch",
    "batch_size": 16,
    "head_epochs": 8,
    "fine_tune_epochs": 0,
    "augmentation": "none",
    "learning_rate": 2e-3,
    "early_stopping_patience": 0,
}


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image)


def b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


@pytest.fixture(scope="module")
def images() -> list[bytes]:
    rng = np.random.default_rng(7)
    shapes = list(QUADRANT_SHAPES)
    return [png(draw_in_quadrant(shapes[i % 3], 80, i % 4, rng)) for i in range(4)]


@pytest.fixture(scope="module")
def untrained64(tmp_path_factory, images):
    folder = tmp_path_factory.mktemp("untrained64") / "export"
    export_untrained(folder, size=SIZE, images=images)
    return folder


@pytest.fixture(scope="module")
def srv(trained, untrained64, tmp_path_factory):
    """shapes: a current export (32 px); old: the same without `explain` (an export from
    before it existed); drifted: golden heatmaps that no longer match (explanations
    drifted); random: an untrained 64 px export, whose maps have spatial structure."""
    root = tmp_path_factory.mktemp("explain-serve")
    model_dir = root / "models"
    copy_version(trained.version_dir, model_dir, "shapes", 1)
    old = root / "old"
    shutil.copytree(trained.version_dir, old)
    strip_explain(old)
    copy_version(old, model_dir, "old", 1)
    drifted = root / "drifted"
    shutil.copytree(trained.version_dir, drifted)
    first = drifted / "golden/0000.heatmap.npy"
    np.save(first, np.load(first) * 0.9 + 0.05, allow_pickle=False)
    copy_version(drifted, model_dir, "drifted", 1)
    copy_version(untrained64, model_dir, "random", 1)
    server = ImgclfServer(
        Settings(
            model_dir=model_dir,
            rest_port=0,
            grpc_port=0,
            poll_interval=0.2,
            server_threads=8,
            max_images_per_request=8,
        )
    ).start()
    # Four versions load and replay their golden files one after another.
    assert server.wait_ready(300), "server did not become ready"
    server.base = f"http://127.0.0.1:{server.rest_port}"
    server.grpc_target = f"127.0.0.1:{server.grpc_port}"
    server.channel = grpc.insecure_channel(server.grpc_target)
    yield server
    server.channel.close()
    server.stop()


def rest_explain(srv, path: str, body) -> requests.Response:
    return requests.post(f"{srv.base}/v1/models/{path}:explain", data=json.dumps(body), timeout=60)


def grpc_explain(srv, images, **fields) -> imgclf_pb2.ExplainResponse:
    stub = imgclf_pb2_grpc.ImgclfStub(srv.channel)
    return stub.Explain(imgclf_pb2.ExplainRequest(images=images, **fields), timeout=60)


def test_explain_signature_gives_maps_and_serving_defaults_probabilities(untrained64, images):
    loaded = LoadedVersion(untrained64)
    assert loaded.has_explain
    assert contract.EXPLAIN in loaded.signature_def_map.signature_def
    heatmaps, probabilities = loaded.explain_bytes(images)
    assert heatmaps.shape == (len(images), SIZE, SIZE) and heatmaps.dtype == np.float32
    assert heatmaps.min() >= 0.0 and heatmaps.max() <= 1.0
    np.testing.assert_allclose(probabilities, loaded.predict_bytes(images), atol=1e-6)
    # 64 px: a 2x2 last stage, so a map is not constant; each is scaled to peak at 1.
    assert all(h.max() - h.min() > 0.1 for h in heatmaps)
    np.testing.assert_allclose(heatmaps.max(axis=(1, 2)), 1.0, atol=1e-6)
    assert replay_golden(loaded) <= contract.PARITY_TOLERANCE
    out = loaded.signatures[contract.EXPLAIN](image_bytes=tf.constant([], tf.string))
    assert out[contract.OUTPUT_HEATMAP].shape == (0, SIZE, SIZE)


def test_trained_export_records_heatmap_parity_and_golden_heatmaps(trained):
    parity = trained.card["parity"]
    assert parity["passed"] and parity["heatmap_max_abs_diff"] <= parity["heatmap_tolerance"]
    manifest = json.loads((trained.version_dir / contract.GOLDEN_MANIFEST).read_text())
    assert all(entry["heatmap"].endswith(".npy") for entry in manifest["inputs"])
    assert contract.EXPLAIN in trained.card["signatures"]
    assert isinstance(trained.card["mistakes"], list)  # the gallery ran (empty: no mistakes)


def test_rest_grpc_and_client_equal_the_signature(srv, untrained64, images):
    heatmaps, probabilities = LoadedVersion(untrained64).explain_bytes(images)
    rest = rest_explain(srv, "random", {"instances": [b64(i) for i in images], "top_k": 2})
    assert rest.status_code == 200, rest.text
    body = rest.json()
    assert body["model_spec"] == {"name": "random", "version": "1", "signature_name": "explain"}
    answer = grpc_explain(srv, images, model="random", top_k=2)
    classes = list(QUADRANT_SHAPES)
    pairs = zip(body["explanations"], answer.explanations, strict=True)
    for i, (entry, message) in enumerate(pairs):
        expected = quantise(heatmaps[i]).astype(int)
        rest_map = decode_png(base64.b64decode(entry["heatmap"]["b64"])).astype(int)
        assert rest_map.shape == (SIZE, SIZE)
        assert np.abs(rest_map - expected).max() <= 1
        assert base64.b64decode(entry["heatmap"]["b64"]) == message.heatmap_png
        assert base64.b64decode(entry["overlay"]["b64"]) == message.overlay_png
        assert decode_png(message.overlay_png).shape == (SIZE, SIZE, 3)
        top = int(probabilities[i].argmax())
        assert entry["label"] == message.label == classes[top]
        assert entry["score"] == pytest.approx(probabilities[i][top], abs=1e-6)
        assert len(entry["top"]) == len(message.top) == 2
        np.testing.assert_allclose(message.probabilities, probabilities[i], atol=1e-6)
    for client in (
        Client(rest_url=srv.base, model="random"),
        Client(grpc_target=srv.grpc_target, model="random"),
    ):
        with client:
            got = client.explain(images[:2], top_k=1)
        assert [e.label for e in got] == [body["explanations"][i]["label"] for i in range(2)]
        np.testing.assert_allclose(got[0].heatmap(), quantise(heatmaps[0]) / 255.0, atol=1e-6)
        assert got[0].version == 1 and len(got[0].top) == 1


def test_upload_can_ask_for_explanations(srv, images):
    files = [("file", ("a.png", images[0])), ("file", ("b.png", images[1]))]
    answer = requests.post(
        f"{srv.base}/v1/models/random:upload",
        files=files,
        data={"explain": "true", "top_k": "2"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["filename"] for r in results] == ["a.png", "b.png"]
    direct = rest_explain(srv, "random", {"instances": [b64(i) for i in images[:2]], "top_k": 2})
    for result, entry in zip(results, direct.json()["explanations"], strict=True):
        assert result["heatmap"] == entry["heatmap"] and result["label"] == entry["label"]
    plain = requests.post(f"{srv.base}/v1/models/random:upload", files=files[:1], timeout=60)
    assert "heatmap" not in plain.json()["results"][0]
    bad = requests.post(
        f"{srv.base}/v1/models/random:upload", files=files[:1], data={"explain": "maybe"}
    )
    assert bad.status_code == 400 and "explain must be true or false" in bad.json()["error"]


def test_min_score_answers_unknown(srv, images):
    answer = rest_explain(srv, "random", {"instances": [b64(images[0])], "min_score": 1.0})
    entry = answer.json()["explanations"][0]
    assert entry["label"] == "unknown" and entry["top"][0]["label"] != "unknown"
    message = grpc_explain(srv, images[:1], model="random", min_score=1.0)
    assert message.explanations[0].label == "unknown"


def test_version_from_before_explanations_predicts_but_refuses_explain(srv, trained):
    image = (trained.version_dir / "golden/0000.img").read_bytes()
    body = {"instances": [b64(image)]}
    predict = requests.post(f"{srv.base}/v1/models/old:predict", data=json.dumps(body), timeout=60)
    assert predict.status_code == 200, predict.text
    refused = rest_explain(srv, "old/versions/1", body)
    assert refused.status_code == 409
    assert "before explanations existed" in refused.json()["error"]
    assert "retrain" in refused.json()["error"]
    with pytest.raises(grpc.RpcError) as failed:
        grpc_explain(srv, [image], model="old", version=1)
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with Client(rest_url=srv.base, model="old") as client, pytest.raises(Conflict):
        client.explain([image])
    metadata = requests.get(f"{srv.base}/v1/models/old/metadata", timeout=30)
    assert "explain" not in metadata.json()["metadata"]["signature_def"]["signature_def"]
    current = requests.get(f"{srv.base}/v1/models/shapes/metadata", timeout=30)
    assert "explain" in current.json()["metadata"]["signature_def"]["signature_def"]
    served = rest_explain(srv, "shapes/versions/1", body)
    assert served.status_code == 200, served.text


def test_version_whose_explanations_drift_is_refused(srv):
    status = requests.get(f"{srv.base}/v1/models/drifted", timeout=30).json()
    entry = status["model_version_status"][0]
    assert entry["state"] == "END"
    assert "golden heatmap mismatch (explanations drifted)" in entry["status"]["error_message"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": [{"b64": "not base64!"}]}, "invalid base64"),
        ({"instances": [b64(b"not an image at all")]}, "not a JPEG, PNG"),
        ({"instances": []}, "no images"),
        ({"instances": [[1, 2, 3]]}, "got numbers where"),
        ({"inputs": []}, "instances"),
        ({"instances": [], "top_k": 0}, "top_k must be a positive integer"),
        ({"instances": [], "min_score": 2}, "min_score must be a number between 0 and 1"),
        ({"instances": [], "extra": 1}, "unknown field"),
    ],
)
def test_bad_rest_input_is_a_clear_400(srv, body, message):
    answer = rest_explain(srv, "random", body)
    assert answer.status_code == 400, answer.text
    assert message in answer.json()["error"]


def test_bad_grpc_input_is_invalid_argument(srv, images):
    for fields, message in (
        ({"model": "random", "images": [b"junk"]}, "not a JPEG, PNG"),
        ({"model": "random", "images": []}, "no images"),
        ({"model": "", "images": images[:1]}, "model is required"),
        ({"model": "random", "images": images[:1], "min_score": 1.5}, "min_score"),
    ):
        stub = imgclf_pb2_grpc.ImgclfStub(srv.channel)
        with pytest.raises(grpc.RpcError) as failed:
            stub.Explain(imgclf_pb2.ExplainRequest(**fields), timeout=30)
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in failed.value.details()


def test_confident_mistakes_come_most_confident_first():
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.3, 0.7], [0.45, 0.55]])
    assert confident_mistakes(probabilities, [0, 0, 0, 1, 0], count=2) == [1, 2]
    assert confident_mistakes(probabilities, [0, 1, 1, 1, 1]) == []


def test_report_shows_the_confident_mistakes_gallery(trained, tmp_path):
    """An untrained model gets most images wrong: the gallery holds its most confident
    mistakes, each an overlay PNG with the true and the two top labels, in the report."""
    import copy

    from imgclf.trainer.gallery import write_gallery
    from imgclf.trainer.model import build_classifier
    from imgclf.trainer.preprocessing import make_preprocess
    from imgclf.trainer.report import write_report

    rng = np.random.default_rng(5)
    shapes = list(QUADRANT_SHAPES)
    truth = [i % 3 for i in range(9)]
    preprocess = make_preprocess(32)
    files = [png(draw_in_quadrant(shapes[t], 32, i % 4, rng)) for i, t in enumerate(truth)]
    images = np.stack([preprocess(tf.constant(f)).numpy() for f in files])
    model = build_classifier(3, image_size=32, weights="none", dropout=0.0, l2=0.0).model
    probabilities = model.predict(images, verbose=0)
    wrong = int((probabilities.argmax(axis=1) != np.array(truth)).sum())
    assert wrong > 0
    entries = write_gallery(
        tmp_path,
        model,
        32,
        lambda indices: images[indices],
        probabilities,
        truth,
        [f"{shapes[t]}/{i}.png" for i, t in enumerate(truth)],
        shapes,
        count=4,
    )
    assert len(entries) == min(4, wrong)
    confidences = [entry["top"][0][1] for entry in entries]
    assert confidences == sorted(confidences, reverse=True)
    card = copy.deepcopy(trained.card)
    card["mistakes"] = entries
    page = write_report(tmp_path, card).read_text()
    assert "Most confident mistakes" in page
    for entry in entries:
        assert decode_png((tmp_path / entry["file"]).read_bytes()).shape == (32, 32, 3)
        assert entry["true"] != entry["top"][0][0] and len(entry["top"]) == 2
        assert entry["file"] in page and entry["source"] in page
    assert trained.card["mistakes"] == [] or (trained.version_dir / "report/mistakes").is_dir()


def detector_model(size: int) -> keras.Model:
    """A classifier shaped like build_classifier's (a nested base whose last layer is named
    conv5_block3_out, avg_pool, head) whose evidence is known: 16x16 patches vote 'red'
    (R - G) or 'green' (G - R) on a 4x4 grid. Grad-CAM must find the patch."""
    inputs = keras.Input((size, size, 3))
    detector = keras.layers.Conv2D(2, 16, strides=16, use_bias=False, name="detector")
    features = keras.layers.Activation("relu", name="conv5_block3_out")(detector(inputs))
    base = keras.Model(inputs, features, name="resnet50")
    head = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(2, activation="softmax", name="probabilities")],
        name="head",
    )
    images = keras.Input((size, size, 3))
    pooled = keras.layers.GlobalAveragePooling2D(name="avg_pool")(base(images))
    model = keras.Model(images, head(pooled))
    kernel = np.zeros((16, 16, 3, 2), np.float32)
    kernel[:, :, 2, 0], kernel[:, :, 1, 0] = 1 / 256, -1 / 256  # BGR after preprocess: R - G
    kernel[:, :, 2, 1], kernel[:, :, 1, 1] = -1 / 256, 1 / 256
    detector.set_weights([kernel])
    head.layers[-1].set_weights([np.eye(2, dtype=np.float32) * 10, np.zeros(2, np.float32)])
    return model


def test_signature_heatmap_peaks_on_the_known_evidence(tmp_path):
    """Through the exported `explain` signature (decode, preprocess, Grad-CAM, upsampling):
    a red or green patch in one quadrant of a gray noisy image is where the map peaks,
    for every image; a transposed or flipped map would put it elsewhere."""
    from imgclf.trainer import export
    from imgclf.trainer.preprocessing import make_preprocess
    from tests.explain_data import peak_quadrant

    rng = np.random.default_rng(2)
    files, quadrants, colours = [], [], []
    for i in range(8):
        pixels = rng.normal(120, 10, (SIZE, SIZE, 3))
        quadrant, colour = i % 4, i % 2
        y, x = (quadrant // 2) * 32 + int(rng.integers(0, 16)), (quadrant % 2) * 32
        x += int(rng.integers(0, 16))
        pixels[y : y + 16, x : x + 16] = (200, 60, 60) if colour == 0 else (60, 200, 60)
        files.append(png(np.clip(pixels, 0, 255).astype(np.uint8)))
        quadrants.append(quadrant)
        colours.append(colour)
    export.write_savedmodel(
        tmp_path / "v", detector_model(SIZE), make_preprocess(SIZE), ["red", "green"], SIZE
    )
    heatmaps, probabilities = LoadedVersion(tmp_path / "v").explain_bytes(files)
    assert list(probabilities.argmax(axis=1)) == colours
    assert [peak_quadrant(h) for h in heatmaps] == quadrants


@pytest.mark.slow
def test_heatmap_mass_peaks_where_the_evidence_is(tmp_path):
    """A small shape (the class) in one random quadrant of a noisy 64 px image: for the
    test images a model trained from random weights gets right, the Grad-CAM heatmap's
    heaviest quadrant is the shape's far more often than chance (1 in 4).

    Computed on conv3_block4_out (stride 8, an 8x8 map at 64 px), with the same heatmap
    code the signature runs: at 64 px the last stage is 2x2, each cell sees the whole
    image, and this small model localises there only weakly (measured 33-43%; conv4:
    51%; conv3: 87%, docs/BENCHMARKS.md). The signature's own map is checked exactly by
    test_signature_heatmap_peaks_on_the_known_evidence."""
    from imgclf.config import parse_config
    from imgclf.trainer import experiment
    from imgclf.trainer.data import Sample
    from imgclf.trainer.gradcam import GradCam
    from imgclf.trainer.pipeline import evaluation_dataset
    from imgclf.trainer.preprocessing import make_preprocess
    from tests.explain_data import make_quadrant_dataset, peak_quadrant

    where = make_quadrant_dataset(tmp_path / "data", per_class=LOCALIZE_PER_CLASS, seed=3)
    classes = sorted(QUADRANT_SHAPES)
    samples = [Sample(path, path.parent.name) for path in where]
    np.random.default_rng(0).shuffle(samples)
    n = len(samples)
    train, val, test = (
        samples[: n * 6 // 10],
        samples[n * 6 // 10 : n * 3 // 4],
        samples[n * 3 // 4 :],
    )
    config = parse_config(LOCALIZE_CONFIG)
    preprocess = make_preprocess(SIZE)
    classifier, _ = experiment.fit(
        config,
        classes=classes,
        train=train,
        val=val,
        preprocess=preprocess,
        checkpoint_dir=tmp_path / "checkpoints",
    )
    images = np.concatenate(
        [x.numpy() for x, _ in evaluation_dataset(test, classes, preprocess, config)]
    )
    heatmaps, probabilities = GradCam(classifier.model, SIZE).at_stage(
        tf.constant(images), "conv3_block4_out"
    )
    truth = np.array([classes.index(s.label) for s in test])
    right = probabilities.numpy().argmax(axis=1) == truth
    assert right.sum() >= len(test) // 2, f"the model did not learn: {right.mean():.0%} right"
    hits = [
        peak_quadrant(heatmap) == where[sample.path]
        for heatmap, sample, ok in zip(heatmaps.numpy(), test, right, strict=True)
        if ok
    ]
    assert np.mean(hits) >= 0.6, f"heatmap peaks in the shape's quadrant {np.mean(hits):.0%}"
