"""The `imgclf` command as a user runs it: train, then predict from the export alone."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def _one_line_error(done: subprocess.CompletedProcess, *remedy: str) -> None:
    """A user mistake: non-zero exit, one line on stderr, no traceback, the remedy named."""
    assert done.returncode != 0, done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1, done.stderr
    for words in remedy:
        assert words in lines[0], lines[0]


def _mistake(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imgclf", *args],
        cwd=tmp_path,
        env={**ENV, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


DEAD_REDIS = "redis://127.0.0.1:1/0"


@pytest.mark.parametrize(
    ("args", "env", "remedy"),
    [
        (
            ["jobs"],
            {"IMGCLF_RESULT_BACKEND": DEAD_REDIS},
            ["cannot reach", "IMGCLF_RESULT_BACKEND"],
        ),
        (["cancel", "abcd1234"], {"IMGCLF_RESULT_BACKEND": DEAD_REDIS}, ["start Redis"]),
        (
            ["submit", "--data", ".", "--name", "m"],
            {"IMGCLF_RESULT_BACKEND": DEAD_REDIS, "IMGCLF_BROKER_URL": DEAD_REDIS},
            ["cannot reach", "IMGCLF_RESULT_BACKEND"],
        ),
        (["models"], {"IMGCLF_LOG_LEVEL": "LOUD"}, ["IMGCLF_LOG_LEVEL", "DEBUG", "unset"]),
        (["models"], {"IMGCLF_REST_PORT": "eighty"}, ["IMGCLF_REST_PORT", "unset"]),
        (["models"], {"IMGCLF_REST_PORT": "70000"}, ["IMGCLF_REST_PORT", "65535"]),
        (["serve", "--rest-port", "70000"], {}, ["--rest-port", "0-65535"]),
        (
            ["serve", "--model-dir", "nowhere"],
            {},
            ["does not exist", "imgclf train", "--model-dir"],
        ),
        (["predict", "--name", "m", "--top-k", "0", "x.jpg"], {}, ["--top-k", "at least 1"]),
        (
            ["predict", "--model-dir", "models", "--name", "m", "--version", "7", "x.jpg"],
            {},
            ["no version 7 of model 'm'", "versions: 1"],
        ),
        (["models", "nosuch", "--model-dir", "models"], {}, ["no model 'nosuch'", "models: m"]),
        (["show", "m:9", "--model-dir", "models"], {}, ["no version 9"]),
        (["delete", "m:1", "--model-dir", "models"], {}, ["labelled", "--force"]),
        (["train", "--data", "missing", "--name", "m"], {}, ["does not exist", "sub-folder"]),
        (["jobs", "--limit", "0"], {}, ["--limit", "at least 1"]),
    ],
)
def test_each_mistake_is_one_line_with_the_remedy(tmp_path, args, env, remedy):
    version = tmp_path / "models/m/1"
    version.mkdir(parents=True)
    (tmp_path / "models/m/labels.json").write_text('{"labels": {"stable": 1}, "history": []}')
    _one_line_error(_mistake(tmp_path, *args, **env), *remedy)


def test_a_taken_port_is_named_with_the_flag_that_changes_it(tmp_path):
    import socket

    (tmp_path / "models").mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = _mistake(tmp_path, "serve", "--model-dir", "models", "--rest-port", str(port))
    _one_line_error(done, f"port {port}", "already in use", "--rest-port")


def test_bad_data_is_named_before_training(tmp_path):
    """An empty class folder and a folder of non-images are errors that name the folders."""
    from imgclf.demo_data import make_shapes_dataset

    data = make_shapes_dataset(tmp_path / "d", classes=3, per_class=6, size=32, seed=1)
    (data / "hexagon").mkdir()
    (data / "circle" / "notes.txt").write_text("not an image")
    done = _mistake(tmp_path, "train", "--data", str(data), "--name", "m", "--set", "weights=none")
    _one_line_error(done, "hexagon", "allow_missing_classes=true")
    assert "cuInit" not in done.stderr and "cuda drivers" not in done.stderr

    texts = tmp_path / "texts"
    for label in ("cat", "dog"):
        (texts / label).mkdir(parents=True)
        (texts / label / "a.txt").write_text("words")
    done = _mistake(tmp_path, "train", "--data", str(texts), "--name", "m", "--set", "weights=none")
    _one_line_error(done, "class folders", "cat, dog", "hold no usable images", "a.txt")


def test_versions_flags_and_module_entry(tmp_path):
    from imgclf import __version__

    done = _mistake(tmp_path, "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"imgclf {__version__}"
    done = _mistake(tmp_path, "--debug", "models", "--model-dir", "models", "nosuch")
    assert done.returncode != 0  # --debug shows the traceback of what failed
    assert "Traceback" in done.stderr and "RepositoryError" in done.stderr


def test_jobs_through_the_cli_prefix_follow_logs_and_worker_hint(tmp_path, redis_url, shapes_dir):
    """submit without a worker says so; a short id prefix works for jobs, --follow and logs."""
    from tests.workers import WorkerProcess, isolated_queue

    _, env = isolated_queue(tmp_path, redis_url, [shapes_dir.parent, tmp_path])

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "imgclf", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    overrides = ["image_size=32", "weights=none", "recipe=fine_tune", "head_epochs=2"]
    overrides += ["fine_tune_epochs=1", "augmentation=none"]
    sets = [arg for value in overrides for arg in ("--set", value)]
    done = cli("submit", "--data", str(shapes_dir), "--name", "shapes", *sets)
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.split()[1]
    assert len(job_id) == 32
    assert "no worker has picked the job up" in done.stderr and "imgclf worker" in done.stderr

    prefix = job_id[:6]
    shown = cli("jobs", prefix, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == job_id
    assert "queued" in cli("jobs").stdout

    worker = WorkerProcess(env, tmp_path / "worker.log").wait_ready()
    try:
        followed = cli("jobs", prefix, "--follow")
        # So short a run may be refused by the promotion gate; either way it ended.
        final = json.loads(cli("jobs", prefix, "--json").stdout)
        assert final["status"] in ("succeeded", "rejected"), final["error"]
        assert followed.returncode == (0 if final["status"] == "succeeded" else 1)
        assert f"job {job_id} {final['status']} (train shapes)" in followed.stderr
        # Progress from the typed events: phase, epoch, batch, percent and ETA.
        assert re.search(
            r"phase \d \((head|fine-tune|whole network)\) epoch \d/\d batch \d/\d+ \d+% .*ETA",
            followed.stderr,
        )
        assert f"job {job_id}  {final['status']}" in followed.stdout  # the full id
        logs = cli("logs", prefix)
        assert logs.returncode == 0, logs.stderr
        assert logs.stdout.strip()  # the training process's output
        listed = cli("jobs", "--json")
        assert [r["id"] for r in json.loads(listed.stdout)] == [job_id]
    finally:
        worker.stop()
    missing = cli("jobs", "ffffffff")
    _one_line_error(missing, "no job with id 'ffffffff'", "imgclf jobs")


def test_show_delete_and_completion(trained, tmp_path, capsys):
    import shutil

    from imgclf import registry, repository

    models = tmp_path / "models"
    for version in (1, 2):
        shutil.copytree(trained.version_dir, models / "shapes" / str(version))
    registry.set_alias(models, "shapes", "stable", 1, by="test")

    assert main(["show", "shapes", "--model-dir", str(models), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == 1 and shown["labels"] == ["stable"]  # default: stable
    assert shown["weights"] == "none" and shown["classes"] == ["circle", "square", "triangle"]
    assert shown["report"].endswith("shapes/1/report/report.html")
    assert shown["test"]["accuracy"] == trained.card["metrics"]["test"]["accuracy"]
    assert main(["show", "shapes:2", "--model-dir", str(models)]) == 0
    assert "shapes version 2" in capsys.readouterr().out

    assert main(["delete", "shapes:2", "--model-dir", str(models), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"] == [2]
    assert repository.list_versions(models, "shapes") == [1]
    assert main(["delete", "shapes", "--model-dir", str(models)]) == 2
    assert "stable -> 1" in capsys.readouterr().err
    assert main(["delete", "shapes", "--model-dir", str(models), "--force"]) == 0
    assert "deleted model shapes (versions 1)" in capsys.readouterr().out
    assert not (models / "shapes").exists()

    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert "complete -o filenames -F _imgclf_complete imgclf" in script
    for command in ("train", "submit", "jobs", "logs", "show", "delete", "completion"):
        assert command in script
    assert "--follow" in script and "--top-k" in script
    done = subprocess.run(
        [
            "bash",
            "-c",
            'eval "$(cat)"; COMP_WORDS=(imgclf lo); COMP_CWORD=1; '
            '_imgclf_complete; echo "${COMPREPLY[@]}"',
        ],
        input=script,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout.split() == ["logs"]


def test_promote_and_rollback_verify_the_version_first(tmp_path, trained):
    """A label is never pointed at a version that cannot serve, from the CLI either."""
    from imgclf import registry
    from tests.faults import refused_version
    from tests.servers import copy_version

    models = tmp_path / "models"
    copy_version(trained.version_dir, models, "shapes", 1)
    refused_version(trained.version_dir, models, "shapes", 2)
    copy_version(trained.version_dir, models, "shapes", 3)
    registry.set_alias(models, "shapes", "stable", 1, by="test")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "imgclf", *args, "--model-dir", str(models)],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=300,
        )

    _one_line_error(cli("promote", "shapes", "2"), "cannot serve", "golden", "unchanged")
    assert registry.aliases(models, "shapes") == {"stable": 1}
    assert cli("promote", "shapes", "3").returncode == 0
    assert registry.aliases(models, "shapes") == {"stable": 3}
    assert cli("rollback", "shapes").returncode == 0
    assert registry.aliases(models, "shapes") == {"stable": 1}
    # --no-verify trusts the caller (the server will still refuse to serve it).
    assert cli("promote", "shapes", "2", "--no-verify").returncode == 0
    assert registry.aliases(models, "shapes") == {"stable": 2}
