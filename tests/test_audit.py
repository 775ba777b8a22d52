"""The data audit on real photos with planted problems: near-copies across splits,
the same picture under two labels, label errors ranked by a trained model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from imgclf.audit import audit_folder, drop_leaks
from imgclf.audit.index import near_pairs
from imgclf.cli import main
from tests.audit_data import planted_folder


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("audit") / "data"
    return root, planted_folder(root)


@pytest.fixture(scope="module")
def report(planted) -> dict:
    return audit_folder(planted[0])


def _grouped(report: dict) -> list[set[str]]:
    return [{m["path"] for m in g["members"]} for g in report["near_duplicates"]]


def test_planted_copies_of_test_images_are_found_as_leakage(planted, report):
    _, plants = planted
    groups = _grouped(report)
    found = [pair for pair in plants["leaks"] if any(set(pair) <= g for g in groups)]
    assert len(found) >= len(plants["leaks"]) - 1, set(plants["leaks"]) - set(found)
    leaked = set(report["leakage"]["test_with_train_copy"])
    assert {test for test, _ in found} <= leaked
    assert report["summary"]["test_with_train_copy"] == len(leaked)
    for group in report["near_duplicates"]:
        for member in group["members"]:
            assert member["split"] in ("train", "val", "test") and member["label"]
            assert (planted[0] / member["path"]).is_file()


def test_same_picture_under_two_labels_is_a_cross_label_group(planted, report):
    _, plants = planted
    cross = [g for g in report["near_duplicates"] if "cross_label" in g["tags"]]
    for pair in plants["cross"]:
        assert any(set(pair) <= {m["path"] for m in g["members"]} for g in cross)
    assert all("exact" in g["tags"] for g in cross)


def test_few_false_groups(planted, report):
    _, plants = planted
    planted_paths = {p for pairs in plants.values() for pair in pairs for p in pair}
    false = [g for g in _grouped(report) if not g & planted_paths]
    assert len(false) <= 2, false
    summary = report["summary"]
    assert summary["pairs_compared"] < summary["images"] ** 2 / 20  # an index, not all pairs
    assert summary["seconds"]["total"] > 0


def test_index_finds_pairs_without_comparing_all_of_them():
    rng = np.random.default_rng(3)
    thumbs = rng.integers(0, 256, (3000, 16, 16), dtype=np.uint8)
    phash = rng.integers(0, 2**63, 3000, dtype=np.int64).astype(np.uint64)
    thumbs[2999], phash[2999] = np.clip(thumbs[7].astype(int) + 2, 0, 255), phash[7] ^ np.uint64(5)
    pairs, compared = near_pairs(phash, thumbs)
    assert [7, 2999] in pairs.tolist()
    assert compared < 3000 * 2999 / 2 / 100


def test_drop_removes_the_training_copies_and_keeps_the_test_split(planted, report):
    from imgclf.trainer.data import load_dataset

    dataset = load_dataset(
        planted[0], val_fraction=0.15, test_fraction=0.15, seed=42, is_image=lambda p: None
    )
    test_before = list(dataset.splits["test"])
    dropped = drop_leaks(dataset, report)
    assert len(dropped) >= len(planted[1]["leaks"]) - 1
    assert all(p.startswith("train/") for p in dropped)
    assert dataset.splits["test"] == test_before
    assert not {dataset.relative(s) for s in dataset.splits["train"]} & set(dropped)


def test_cli_writes_json_and_offline_html(planted, tmp_path, capsys):
    out_json, out_html = tmp_path / "audit.json", tmp_path / "audit.html"
    code = main(
        ["audit", "--data", str(planted[0]), "--json", str(out_json), "--html", str(out_html)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "test image(s) with a near-copy in training" in printed
    document = json.loads(out_json.read_text())
    assert {"near_duplicates", "label_suspects", "summary"} <= set(document)
    page = out_html.read_text()
    assert page.count("data:image/jpeg;base64,") >= 2 * len(document["near_duplicates"])
    assert "http://" not in page and "https://" not in page


def test_cli_refuses_a_missing_folder(tmp_path, capsys):
    assert main(["audit", "--data", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_checks_report_unreadable_tiny_and_grayscale(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(1)
    for label in ("a", "b"):
        for i in range(6):
            pixels = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
            (tmp_path / label).mkdir(exist_ok=True)
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (20, 200), dtype=np.uint8)).save(tmp_path / "a" / "g.png")
    (tmp_path / "b" / "broken.jpg").write_bytes(b"not an image")
    result = audit_folder(tmp_path)
    s = result["summary"]
    assert (s["unreadable"], s["tiny"], s["extreme_aspect"], s["grayscale"]) == (1, 1, 1, 1)
    assert result["image_checks"]["color_modes"]["mixed"]
    assert {f["id"] for f in result["findings"]} >= {"unreadable", "shapes", "color_mix"}


def test_audit_job_through_the_queue(planted, tmp_path, redis_url, capsys):
    from imgclf.jobs.service import celery_sender, submit_job
    from imgclf.jobs.store import open_store
    from tests.workers import WorkerProcess, isolated_queue, wait_final

    data = planted[0]
    settings, env = isolated_queue(tmp_path, redis_url, [data.parent])
    store = open_store(redis_url, settings.key_prefix)
    worker = WorkerProcess(env, tmp_path / "worker.log").wait_ready()
    try:
        job = submit_job(
            {"kind": "audit", "name": "photos", "data": str(data)},
            settings=settings,
            store=store,
            send=celery_sender(settings),
        )
        assert job["kind"] == "audit"
        final = wait_final(store, job["id"], timeout=120)
    finally:
        worker.stop()
    assert final["status"] == "succeeded", final["error"]
    result = final["result"]
    assert result["summary"]["test_with_train_copy"] >= len(planted[1]["leaks"]) - 1
    assert result["near_duplicates"] and Path(final["report"]).is_file()
    assert json.loads(Path(result["json"]).read_text())["summary"] == result["summary"]
    from imgclf.cli_queue import print_record

    print_record(final)
    assert "test image(s) with a near-copy in training" in capsys.readouterr().out


def test_audit_job_fields_are_checked_at_submission():
    from imgclf.errors import ConfigError
    from imgclf.jobs.spec import parse_job

    with pytest.raises(ConfigError, match="'audit_labels' applies only to jobs of kind 'audit'"):
        parse_job({"name": "m", "data": "d", "audit_labels": True})
    with pytest.raises(ConfigError, match="audit_version needs audit_labels"):
        parse_job({"name": "m", "data": "d", "kind": "audit", "audit_version": 2})
    assert parse_job({"name": "m", "data": "d", "kind": "audit", "audit_labels": True})


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory):
    """One small training on digits with planted label errors and leaked test copies."""
    from imgclf.config import parse_config
    from imgclf.trainer.run import train_and_export
    from tests.audit_data import digits_folder
    from tests.conftest import FAST

    root = tmp_path_factory.mktemp("digits")
    plants = digits_folder(root / "data")
    config = {
        **FAST,
        "augmentation": "none",
        "head_epochs": 3,
        "fine_tune_epochs": 5,
        "fine_tune_from": "conv3",
        "fine_tune_learning_rate": 1e-3,
    }
    result = train_and_export(
        parse_config(config),
        data=root / "data",
        name="digits",
        model_dir=root / "models",
        run_dir=root / "run",
    )
    return root / "data", plants, result


def test_training_run_audits_its_data_first(digits_run):
    from imgclf import contract

    _, plants, result = digits_run
    audit = result.card["audit"]
    assert audit["leakage"]["mode"] == "warn" and audit["leakage"]["dropped_from_train"] == []
    leaked = set(audit["leakage"]["test_with_train_copy"])
    assert {test for test, _ in plants["leaks"]} <= leaked
    assert audit["summary"]["test_with_train_copy"] == len(leaked)
    card = json.loads((result.version_dir / contract.MODEL_CARD_FILE).read_text())
    assert card["audit"]["summary"] == audit["summary"]
    page = result.report.read_text()
    assert "Data audit" in page
    assert f"{len(leaked)} test image(s) have a near-copy in training" in page


def test_planted_label_errors_rank_at_the_top(digits_run, tmp_path, capsys):
    data, plants, result = digits_run
    out = tmp_path / "audit.json"
    code = main(
        [
            "audit",
            "--data",
            str(data),
            "--model-dir",
            str(result.version_dir.parent.parent),
            "--name",
            "digits",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    suspects = report["label_suspects"]
    ranks = {s["path"]: i for i, s in enumerate(suspects)}
    wrong = plants["wrong"]
    assert all(ranks.get(p, 99) < 2 * len(wrong) for p in wrong), [ranks.get(p) for p in wrong]
    scores = [s["score"] for s in suspects]
    assert scores == sorted(scores, reverse=True)
    for s in suspects:
        assert s["suggested"] != s["given"] and 0 <= s["score"] <= 1
    first = next(s for s in suspects if s["path"] in wrong)
    digit = first["path"].split("/")[-1][1]  # d<true digit>_NNN.png
    assert first["suggested"] == digit
    assert report["label_model"]["images_the_model_trained_on"] > 0


def test_kfold_predictions_rank_suspects_out_of_fold(planted, tmp_path):
    """The file format run_kfold writes (tests/test_kfold.py checks it), read back."""
    from imgclf.errors import DataError
    from imgclf.trainer.data import load_dataset

    data = planted[0]
    dataset = load_dataset(
        data, val_fraction=0.15, test_fraction=0.15, seed=42, is_image=lambda p: None
    )
    pool = dataset.splits["train"] + dataset.splits["val"]
    classes = dataset.classes
    wrong = {dataset.relative(pool[3]), dataset.relative(pool[40])}
    rows = []
    for sample in pool:
        rel = dataset.relative(sample)
        true = classes.index(sample.label)
        if rel in wrong:
            true = (true + 1) % len(classes)  # the fold's model sees another class
        rows.append([rel, sample.label, [0.85 if i == true else 0.05 for i in range(len(classes))]])
    for index, part in enumerate((rows[::2], rows[1::2]), start=1):
        fold = tmp_path / "kfold" / f"fold_{index}"
        fold.mkdir(parents=True)
        document = {"root": str(dataset.root), "classes": classes, "rows": part}
        (fold / "predictions.json").write_text(json.dumps(document))
    report = audit_folder(data, kfold_dir=tmp_path)
    top = {s["path"] for s in report["label_suspects"][:2]}
    assert top == wrong
    assert not any(s["model_trained_on_it"] for s in report["label_suspects"])
    assert report["label_model"]["images_without_prediction"] == len(dataset.splits["test"])
    with pytest.raises(DataError, match="no out-of-fold predictions"):
        audit_folder(data, kfold_dir=tmp_path / "nothing")


def test_leakage_setting_is_validated():
    from imgclf.config import parse_config
    from imgclf.errors import ConfigError

    assert parse_config({}).leakage == "warn"
    assert parse_config({"leakage": "drop"}).leakage == "drop"
    with pytest.raises(ConfigError, match=r"'leakage'.*'warn', 'drop'"):
        parse_config({"leakage": "ignore"})
