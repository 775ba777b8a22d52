"""The `imgclf` command as a user runs it: train, then predict from the export alone."""

import json
import os
import subprocess
import sys
from pathlib import Path

from imgclf.cli import main

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def imgclf(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imgclf.cli", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_train_then_predict(tmp_path, shapes_dir):
    done = imgclf(
        "train",
        "--data",
        str(shapes_dir),
        "--name",
        "shapes",
        "--model-dir",
        "models",
        "--set",
        "image_size=32",
        "--set",
        "weights=none",
        "--set",
        "recipe=fine_tune",  # the cheap recipe: this tests the CLI, not the recipe
        "--set",
        "head_epochs=5",
        "--set",
        "fine_tune_epochs=1",
        "--set",
        "augmentation=none",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "published shapes version 1" in done.stdout
    assert "diagnosis:" in done.stdout
    assert "report: models/shapes/1/report/report.html" in done.stdout
    # The local command goes through the promotion gate too: version 1 becomes stable.
    assert json.loads((tmp_path / "models/shapes/labels.json").read_text())["labels"] == {
        "stable": 1
    }
    image = next((shapes_dir / "circle").glob("*.jpg"))
    done = imgclf(
        "predict", "--model-dir", "models", "--name", "shapes", "--json", str(image), cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["version"] == 1
    top = answer["results"][0]["top"]
    assert [t["label"] for t in top] and {t["label"] for t in top} <= {
        "circle",
        "square",
        "triangle",
    }
    assert abs(sum(t["score"] for t in top) - 1.0) < 1e-4  # top-3 of 3 classes
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    done = imgclf(
        "predict", "--model-dir", "models", "--name", "shapes", str(bad), str(image), cwd=tmp_path
    )
    assert done.returncode == 1
    assert "bad.jpg: error: not a decodable" in done.stderr
    assert str(image) in done.stdout


def test_user_errors_exit_2_without_traceback(tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "missing"),
                "--name",
                "m",
                "--model-dir",
                str(tmp_path),
                "--set",
                "weights=none",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    assert main(["train", "--data", str(tmp_path), "--name", "m", "--set", "dropout=3"]) == 2
    assert "'dropout'" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--name", "../x"]) == 2
    assert "invalid model name" in capsys.readouterr().err
    assert main(["predict", "--model-dir", str(tmp_path), "--name", "m", "x.jpg"]) == 2
    assert "no published version" in capsys.readouterr().err


def test_serving_side_never_imports_the_trainer():
    code = (
        "import sys, imgclf.cli, imgclf.artifact, imgclf.server.manager, imgclf.repository\n"
        "bad = [m for m in sys.modules if m.startswith('imgclf.trainer')]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
