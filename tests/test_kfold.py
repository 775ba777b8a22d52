"""K-fold cross-validation: folds are stratified and disjoint and never hold test images,
finished folds survive an interruption, a real worker reports per-fold and mean
metrics, and the optional promotion margin is the fold-to-fold noise."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from imgclf.cli_experiments import kfold_table
from imgclf.errors import Cancelled, ConfigError, DataError
from imgclf.jobs.service import celery_sender, submit_job
from imgclf.jobs.spec import parse_job
from imgclf.jobs.store import open_store
from imgclf.trainer.data import Sample
from imgclf.trainer.kfold import check_fold_sizes, run_kfold, stratified_folds, summarize
from imgclf.trainer.promotion import GateRules, decide
from imgclf.trainer.training import Hooks
from tests.workers import WorkerProcess, isolated_queue, wait_final

TINY = {
    "image_size": 32,
    "weights": "none",
    # head-only on cached features keeps folds cheap; from_scratch is tested in test_recipe.py
    "recipe": "fine_tune",
    "batch_size": 16,
    "head_epochs": 2,
    "fine_tune_epochs": 0,
    "augmentation": "none",
    "learning_rate": 2e-3,
    "early_stopping_patience": 0,
}


def samples(counts: dict[str, int]) -> list[Sample]:
    return [
        Sample(Path(f"{label}/{i}.png"), label) for label, n in counts.items() for i in range(n)
    ]


def test_folds_are_stratified_disjoint_and_cover_the_pool():
    pool = samples({"a": 10, "b": 7, "c": 4})
    folds = stratified_folds(pool, 3, seed=1)
    assert sorted(s.path for f in folds for s in f) == sorted(s.path for s in pool)
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for label, n in (("a", 10), ("b", 7), ("c", 4)):
        per_fold = [sum(s.label == label for s in f) for f in folds]
        assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == n
    assert folds == stratified_folds(list(reversed(pool)), 3, seed=1)  # order-independent
    assert folds != stratified_folds(pool, 3, seed=2)


def test_classes_too_small_for_k_folds_are_refused():
    check_fold_sizes(samples({"a": 7, "b": 9}), 5)
    with pytest.raises(DataError, match=r"5-fold.*'a' has 6; each class needs at least 7"):
        check_fold_sizes(samples({"a": 6, "b": 9}), 5)


def test_kfold_fields_are_checked_at_submission():
    base = {"name": "m", "data": "d", "kind": "kfold", **TINY}
    assert parse_job(base).folds == 5
    with pytest.raises(ConfigError, match=r"'folds'.*greater than or equal to 2"):
        parse_job({**base, "folds": 1})
    with pytest.raises(ConfigError, match="fold_noise_gate needs then_train"):
        parse_job({**base, "fold_noise_gate": True})
    with pytest.raises(ConfigError, match="'folds' applies only to jobs of kind 'kfold'"):
        parse_job({**base, "kind": "train", "folds": 3})


def test_mean_and_sample_std_across_folds():
    folds = [{"metrics": {"accuracy": a, "loss": 1 - a, "count": 9}} for a in (0.6, 0.7, 0.8)]
    mean, std = summarize(folds)
    assert mean == {"accuracy": pytest.approx(0.7), "loss": pytest.approx(0.3)}
    assert std["accuracy"] == pytest.approx(np.std([0.6, 0.7, 0.8], ddof=1))


def metrics(accuracy: float) -> dict:
    return {
        "accuracy": accuracy,
        "macro_f1": accuracy,
        "per_class": {c: {"recall": accuracy} for c in ("a", "b")},
    }


def test_fold_noise_margin_in_the_promotion_gate():
    stable = metrics(0.80)
    plain = GateRules()
    noisy = GateRules(min_gain=0.04)
    # A 2-point gain passes the usual rules but is within the fold-to-fold noise.
    assert decide(metrics(0.82), stable, ["a", "b"], plain)["decision"] == "promote"
    within = decide(metrics(0.82), stable, ["a", "b"], noisy)
    assert within["decision"] == "reject"
    assert any("fold-to-fold noise (4.0%)" in r for r in within["reasons"])
    assert within["rules"]["min_gain"] == 0.04
    assert decide(metrics(0.85), stable, ["a", "b"], noisy)["decision"] == "promote"
    # The first version has nothing to beat: only the chance rule applies.
    assert decide(metrics(0.85), None, ["a", "b"], noisy)["decision"] == "promote"
    assert "min_gain" not in decide(metrics(0.82), stable, ["a", "b"], plain)["rules"]


def test_interrupted_kfold_keeps_finished_folds(tmp_path, shapes_dir):
    config = parse_job({"name": "m", "data": "d", "kind": "kfold", **TINY}).train_config()
    seen: list[int] = []

    with pytest.raises(Cancelled):
        run_kfold(
            config,
            folds=2,
            data=shapes_dir,
            run_dir=tmp_path,
            hooks=Hooks(
                on_progress=lambda e: seen.append(e["fold"]), should_stop=lambda: 2 in seen
            ),
        )
    fold1 = tmp_path / "kfold/fold_1/result.json"
    saved = fold1.read_text()
    assert not (tmp_path / "kfold/fold_2/result.json").exists()
    assert not (tmp_path / "kfold/fold_1/checkpoints").exists()  # finished: nothing to resume

    again: list[int] = []
    done = run_kfold(
        config,
        folds=2,
        data=shapes_dir,
        run_dir=tmp_path,
        hooks=Hooks(on_progress=lambda e: again.append(e["fold"])),
    )
    assert set(again) == {2}  # fold 1 was not trained again
    assert fold1.read_text() == saved
    assert [f["fold"] for f in done.result["per_fold"]] == [1, 2]
    assert done.result["finished"] and done.curves.is_file()
    assert not list((tmp_path / "kfold").glob("fold_*/checkpoints"))
    folds = json.loads((tmp_path / "kfold/folds.json").read_text())["folds"]
    for index, fold in enumerate(folds, start=1):  # out-of-fold predictions for the audit
        saved = json.loads((tmp_path / f"kfold/fold_{index}/predictions.json").read_text())
        assert [row[:2] for row in saved["rows"]] == fold
        assert all(abs(sum(row[2]) - 1) < 1e-3 for row in saved["rows"])


@pytest.fixture
def queue(tmp_path, redis_url, shapes_dir):
    """A real worker on its own queue and key prefix, against the test Redis."""
    settings, env = isolated_queue(tmp_path, redis_url, [shapes_dir.parent])
    store = open_store(redis_url, settings.key_prefix)
    worker = WorkerProcess(env, tmp_path / "worker.log")

    def submit(**fields) -> dict:
        document = {"name": "shapes", "data": str(shapes_dir), "kind": "kfold", **TINY, **fields}
        return submit_job(document, settings=settings, store=store, send=celery_sender(settings))

    try:
        worker.wait_ready()
        yield SimpleNamespace(settings=settings, store=store, submit=submit)
    finally:
        worker.stop()


def test_kfold_through_the_worker_reports_per_fold_and_mean(queue):
    # 12 test images cannot tell so short a run from chance: the interval rule is off here.
    record = queue.submit(folds=3, then_train=True, fold_noise_gate=True, promotion_confidence=0)
    done = wait_final(queue.store, record["id"], timeout=300)
    assert done["status"] == "succeeded", done["error"]
    result = done["result"]
    assert result["finished"] and result["completed"] == 3
    folds = result["per_fold"]
    assert [f["fold"] for f in folds] == [1, 2, 3]
    for fold in folds:
        assert 0 <= fold["metrics"]["accuracy"] <= 1 and fold["metrics"]["loss"] > 0
        assert fold["epochs"] == len(fold["history"]) == TINY["head_epochs"]
        assert fold["counts"]["held_out"] == fold["metrics"]["count"]
    accuracies = [f["metrics"]["accuracy"] for f in folds]
    assert result["mean"]["accuracy"] == pytest.approx(np.mean(accuracies), abs=1e-6)
    assert result["std"]["accuracy"] == pytest.approx(np.std(accuracies, ddof=1), abs=1e-6)
    assert Path(result["curves"]).is_file()
    table = kfold_table(result)
    assert [line.split()[0] for line in table[1:4]] == ["1", "2", "3"]
    assert (
        f"accuracy {result['mean']['accuracy']:.1%} ± {result['std']['accuracy']:.1%}" in table[4]
    )

    # The held-out folds partition train+val; the test split is in none of them.
    run = queue.settings.runs_dir() / "jobs" / record["id"]
    assignment = json.loads((run / "kfold/folds.json").read_text())
    held = [path for fold in assignment["folds"] for path, _ in fold]
    test = set(assignment["test_split_kept_out"])
    splits = json.loads((run / "final/splits.json").read_text())  # the version trained after
    assert sorted(held) == sorted(p for p, _ in splits["train"] + splits["val"])
    assert test == {p for p, _ in splits["test"]} and not test & set(held)
    assert sum(f["counts"]["held_out"] for f in folds) == len(held)
    per_class = Counter(label for fold in assignment["folds"] for _, label in fold)
    assert set(per_class) == set(result["classes"])

    # then_train published the recipe through the gate with the fold noise as margin.
    assert done["version"] == 1 and done["report"].endswith("shapes/1/report/report.html")
    assert done["promotion"]["rules"]["min_gain"] == result["std"]["accuracy"]
