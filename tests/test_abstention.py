"""Calibrated probabilities end to end, and min_score ("unknown") on REST, gRPC, the
client and the CLI, against a real server on loopback serving the shared trained model."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import grpc
import numpy as np
import pytest
import requests

from imgclf import contract
from imgclf.client import BadRequest, Client
from imgclf.trainer import calibration
from imgclf.v1 import imgclf_pb2, imgclf_pb2_grpc
from tests.servers import copy_version, start_server


@pytest.fixture(scope="module")
def srv(trained, tmp_path_factory):
    """Model "shapes" as trained; model "strict": the same version whose card says
    min_score 1.0 (nothing is sure enough), to check the card's default applies."""
    model_dir = tmp_path_factory.mktemp("abstain") / "models"
    copy_version(trained.version_dir, model_dir, "shapes", 1)
    strict = copy_version(trained.version_dir, model_dir, "strict", 1)
    card = json.loads((strict / contract.MODEL_CARD_FILE).read_text())
    card["min_score"] = 1.0
    (strict / contract.MODEL_CARD_FILE).write_text(json.dumps(card))
    server = start_server(model_dir)
    server.base = f"http://127.0.0.1:{server.rest_port}"
    server.target = f"127.0.0.1:{server.grpc_port}"
    server.channel = grpc.insecure_channel(server.target)
    server.stub = imgclf_pb2_grpc.ImgclfStub(server.channel)
    manifest = json.loads((trained.version_dir / contract.GOLDEN_MANIFEST).read_text())
    # Least sure first: a threshold above their top score still lies in [0, 1].
    inputs = sorted(manifest["inputs"], key=lambda e: max(e["probabilities"]))
    server.images = [(trained.version_dir / e["file"]).read_bytes() for e in inputs]
    server.golden = np.array([e["probabilities"] for e in inputs])
    assert server.golden[0].max() < 0.999
    yield server
    server.channel.close()
    server.stop()


def _classify(srv, images, model="shapes", **extra):
    examples = [{"image_bytes": {"b64": base64.b64encode(i).decode()}} for i in images]
    return requests.post(
        f"{srv.base}/v1/models/{model}:classify",
        json={"examples": examples, **extra},
        timeout=30,
    )


def _upload(srv, images, **params):
    files = [("file", (f"i{n}.png", data)) for n, data in enumerate(images)]
    return requests.post(
        f"{srv.base}/v1/models/shapes:upload", files=files, data=params, timeout=30
    )


def test_card_keeps_temperature_and_ece_before_after(trained):
    record = trained.card["calibration"]
    assert record["method"] == "temperature"
    # Not pinned at a bound: a small validation split without mistakes does not make T -> 0.
    assert calibration.MIN_TEMPERATURE < record["temperature"] < calibration.MAX_TEMPERATURE
    for split in ("val", "test"):
        for when in ("before", "after"):
            assert 0.0 <= record[f"ece_{when}_{split}"] <= 1.0
        summary = record["splits"][split]
        assert len(summary["reliability_after"]) == calibration.ECE_BINS
    assert trained.card["min_score"] == 0.0
    coverage = trained.card["thresholds"]["coverage"]
    assert coverage[0]["min_score"] == 0.0 and coverage[0]["coverage"] == 1.0
    assert coverage[0]["accuracy"] == pytest.approx(trained.metrics["accuracy"])
    assert set(trained.card["thresholds"]["per_class"]) == set(trained.card["labels"])
    assert trained.parity["passed"] and trained.parity["max_abs_diff"] <= 1e-5
    page = (trained.version_dir / contract.REPORT_DIR / "report.html").read_text()
    assert "Calibration" in page and "reliability_diagram.png" in page
    assert "coverage" in page and "pr_curves.png" in page


def test_served_probabilities_are_the_golden_calibrated_ones(srv, trained):
    """REST :predict, imgclf gRPC Classify and TF Serving's :classify all serve what the
    training side computed (Keras softmax, then the card's temperature)."""
    answer = requests.post(
        f"{srv.base}/v1/models/shapes:predict",
        json={"instances": [{"b64": base64.b64encode(i).decode()} for i in srv.images]},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    rest = np.array([p["probabilities"] for p in answer.json()["predictions"]])
    np.testing.assert_allclose(rest, srv.golden, atol=contract.PARITY_TOLERANCE)
    grpc_answer = srv.stub.Classify(
        imgclf_pb2.ClassifyRequest(model="shapes", images=srv.images), timeout=30
    )
    served = np.array([list(r.probabilities) for r in grpc_answer.results])
    np.testing.assert_allclose(served, srv.golden, atol=contract.PARITY_TOLERANCE)
    ranked = _classify(srv, srv.images).json()["results"]
    assert [row[0][1] for row in ranked] == pytest.approx(srv.golden.max(axis=1), abs=1e-5)
    # Undo the temperature (p_raw ∝ p^T): the card's test ECE pair is what these scores give.
    temperature = trained.card["calibration"]["temperature"]
    raw = served**temperature
    raw /= raw.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(calibration.calibrate(raw, temperature), served, atol=1e-5)


def test_min_score_above_the_top_score_answers_unknown_everywhere(srv):
    images = srv.images[:2]
    top = srv.golden[:2].max(axis=1)
    above = float(min(1.0, top.max() + 1e-3))
    # REST :classify: the ranked scores stay, the labels say unknown.
    body = _classify(srv, images, min_score=above).json()
    assert body["labels"] == ["unknown", "unknown"]
    assert [row[0][1] for row in body["results"]] == pytest.approx(top, abs=1e-5)
    plain = _classify(srv, images).json()
    assert plain["labels"] == [row[0][0] for row in plain["results"]]
    # :upload (form field).
    body = _upload(srv, images, min_score=str(above)).json()
    assert [r["label"] for r in body["results"]] == ["unknown", "unknown"]
    assert [r["score"] for r in body["results"]] == pytest.approx(top, abs=1e-5)
    assert body["min_score"] == pytest.approx(above)
    # gRPC.
    answer = srv.stub.Classify(
        imgclf_pb2.ClassifyRequest(model="shapes", images=images, min_score=above), timeout=30
    )
    assert [r.label for r in answer.results] == ["unknown", "unknown"]
    assert [r.top[0].label for r in answer.results] == [r[0][0] for r in plain["results"]]
    # A threshold below every top score changes nothing.
    answer = srv.stub.Classify(
        imgclf_pb2.ClassifyRequest(model="shapes", images=images, min_score=0.0), timeout=30
    )
    assert [r.label for r in answer.results] == plain["labels"]
    # The client, both transports.
    for client in (Client(rest_url=srv.base), Client(grpc_target=srv.target)):
        with client:
            unsure = client.predict(images, model="shapes", min_score=above)
            sure = client.predict(images, model="shapes")
        assert [p.label for p in unsure] == ["unknown", "unknown"], client.protocol
        assert [p.score for p in unsure] == pytest.approx(top, abs=1e-5)
        assert [p.label for p in sure] == plain["labels"], client.protocol


def test_the_model_cards_min_score_is_the_default(srv):
    images = srv.images[:1]
    assert _classify(srv, images, model="strict").json()["labels"] == ["unknown"]
    answer = srv.stub.Classify(imgclf_pb2.ClassifyRequest(model="strict", images=images))
    assert answer.results[0].label == "unknown" and answer.min_score == 1.0
    # A request's own threshold overrides the card's.
    assert _classify(srv, images, model="strict", min_score=0).json()["labels"] != ["unknown"]


@pytest.mark.parametrize("bad", [1.5, -0.1, "high", True, [0.5]])
def test_bad_min_score_is_a_400_naming_it(srv, bad):
    answer = _classify(srv, srv.images[:1], min_score=bad)
    assert answer.status_code == 400
    assert "min_score must be a number between 0 and 1" in answer.json()["error"]


def test_bad_min_score_upload_grpc_and_client(srv):
    answer = _upload(srv, srv.images[:1], min_score="nan")
    assert answer.status_code == 400 and "min_score" in answer.json()["error"]
    with pytest.raises(grpc.RpcError) as info:
        srv.stub.Classify(
            imgclf_pb2.ClassifyRequest(model="shapes", images=srv.images[:1], min_score=2.0)
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "min_score" in info.value.details()
    with Client(rest_url=srv.base) as client, pytest.raises(ValueError, match="min_score"):
        client.predict(srv.images[:1], model="shapes", min_score=3)
    with Client(rest_url=srv.base) as client, pytest.raises(BadRequest, match="min_score"):
        client._transport.predict("shapes", srv.images[:1], None, None, 3.0)


def test_cli_predict_min_score(trained, tmp_path):
    image = tmp_path / "x.img"
    manifest = json.loads((trained.version_dir / contract.GOLDEN_MANIFEST).read_text())
    least_sure = min(manifest["inputs"], key=lambda e: max(e["probabilities"]))
    image.write_bytes((trained.version_dir / least_sure["file"]).read_bytes())
    model_dir = trained.version_dir.parent.parent

    def run(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "imgclf", "predict", "--model-dir", str(model_dir)]
        return subprocess.run(
            [*command, "--name", "shapes", *args, str(image)],
            capture_output=True,
            text=True,
            env=os.environ,
            timeout=120,
        )

    done = run("--json", "--min-score", str(min(1.0, max(least_sure["probabilities"]) + 1e-3)))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["results"][0]
    assert result["label"] == "unknown" and result["score"] == result["top"][0]["score"]
    done = run("--min-score", "1.5")
    assert done.returncode == 2 and "between 0 and 1" in done.stderr


def test_the_shared_rule_and_its_validation():
    from imgclf.errors import InvalidInput
    from imgclf.prediction import Prediction, card_min_score, parse_min_score

    probabilities = np.array([[0.5, 0.3, 0.2], [0.1, 0.85, 0.05]], np.float32)
    answer = Prediction("m", 1, probabilities, ["a", "b", "c"], min_score=0.6)
    assert [a.class_name for a in answer.labels()] == ["unknown", "b"]
    assert [a.score for a in answer.labels()] == pytest.approx([0.5, 0.85])
    assert answer.top_k(1)[0][0].class_name == "a"  # the ranking is untouched
    assert [a.class_name for a in Prediction("m", 1, probabilities, ["a", "b", "c"]).labels()] == [
        "a",
        "b",
    ]
    assert parse_min_score(None) is None and parse_min_score("") is None
    assert parse_min_score("0.25") == 0.25 and parse_min_score(1) == 1.0
    for bad in ("nan", "inf", "-0.01", "1.01", "x", True, {}):
        with pytest.raises(InvalidInput, match="between 0 and 1"):
            parse_min_score(bad)
    assert card_min_score({}) == 0.0 and card_min_score({"min_score": 0.4}) == 0.4
    assert card_min_score({"min_score": "high"}) == 0.0


def test_models_show_reports_the_temperature_and_min_score(trained):
    from imgclf.cli_models import card_summary
    from imgclf.settings import Settings

    model_dir = trained.version_dir.parent.parent
    summary = card_summary(model_dir, "shapes", trained.version, Settings(model_dir=model_dir))
    record = trained.card["calibration"]
    assert summary["calibration"] == {
        "method": "temperature",
        "temperature": record["temperature"],
        "ece_before": record["ece_before"],
        "ece_after": record["ece_after"],
    }
    assert summary["min_score"] == 0.0
