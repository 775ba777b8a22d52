"""The report a person reads, on a real trained model: what to believe and why."""

from __future__ import annotations

import copy
import shutil

import pytest

from imgclf import registry
from imgclf.errors import Rejected
from imgclf.trainer.pipeline import load_for_config
from imgclf.trainer.promotion import GateRules, PromotionGate, decide
from imgclf.trainer.report import kept_epoch, write_report
from imgclf.trainer.uncertainty import accuracy_uncertainty, wilson_interval


def test_wilson_interval_matches_known_values():
    low, high = wilson_interval(4, 6)  # the 6-image split at 66.7%
    assert low == pytest.approx(0.300, abs=1e-3) and high == pytest.approx(0.903, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(100, 100)[1] == 1.0
    small = accuracy_uncertainty(4 / 6, 6, 3)
    assert "too small to tell" in small["warning"] and "2.0 per class" in small["warning"]
    assert accuracy_uncertainty(0.9, 3000, 3)["warning"] is None


def test_the_gate_refuses_a_split_too_small_to_tell_from_chance():
    def metrics(accuracy: float, count: int) -> dict:
        recall = {"a": accuracy, "b": accuracy, "c": accuracy}
        per_class = {k: {"recall": v} for k, v in recall.items()}
        return {"accuracy": accuracy, "macro_f1": accuracy, "per_class": per_class, "count": count}

    rules = GateRules()
    tiny = decide(metrics(4 / 6, 6), None, ["a", "b", "c"], rules)
    assert tiny["decision"] == "reject"
    assert any("reaches chance" in r for r in tiny["reasons"])
    assert tiny["interval"]["low"] < 1 / 3 and "too small" in tiny["caveat"]
    plenty = decide(metrics(4 / 6, 600), None, ["a", "b", "c"], rules)
    assert plenty["decision"] == "promote" and plenty["caveat"] is None
    off = decide(metrics(4 / 6, 6), None, ["a", "b", "c"], GateRules(confidence=0))
    assert off["decision"] == "promote" and off["interval"] is None
    # 16 of 30: the 95% interval starts at 36.1% (> chance), the 99% one at 31.5% (< chance).
    assert decide(metrics(16 / 30, 30), None, ["a", "b", "c"], rules)["decision"] == "promote"
    wider = decide(metrics(16 / 30, 30), None, ["a", "b", "c"], GateRules(confidence=0.99))
    assert wider["decision"] == "reject" and wider["rules"]["confidence"] == 0.99


def test_the_report_states_weights_interval_kept_epoch_and_tables(trained):
    card = trained.card
    html = (trained.version_dir / "report/report.html").read_text()
    test = card["metrics"]["test"]
    interval = card["test_uncertainty"]
    assert interval["low"] <= test["accuracy"] <= interval["high"]
    assert interval["method"] == "wilson" and interval["count"] == test["count"]
    assert f"{interval['low']:.1%}" in html and "95% interval" in html
    assert "starting weights\n<b>none</b>" in html
    # A few test images per class: too few to tell, and the page says so.
    assert "too small to tell" in html and interval["warning"]
    kept = kept_epoch(card["history"])
    assert f"Kept weights: epoch {kept + 1} of {len(card['history'])}" in html
    assert "<th>top-k on test</th>" in html and "top-3" in html
    assert "<th>class</th><th>train</th><th>val</th><th>test</th>" in html
    assert "<th>software</th>" in html and card["software"]["tensorflow"] in html
    assert "<th>timing</th>" in html and "total_seconds" in html
    assert card["created_at"] in html
    assert "No promotion gate ran" in html  # the fixture publishes without the gate
    assert "{&quot;" not in html  # no raw JSON dumps left


def test_the_promotion_section_on_a_real_comparison(trained, shapes_dir, fast_config, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(trained.version_dir, models / "shapes" / "1")
    registry.set_alias(models, "shapes", registry.STABLE, 1, by="test")
    dataset, _ = load_for_config(fast_config, shapes_dir)
    card = copy.deepcopy(trained.card)
    try:
        comparison = PromotionGate(models, "shapes", GateRules()).check(card, dataset)
    except Rejected as exc:
        comparison = exc.comparison
    assert comparison["stable_version"] == 1
    assert comparison["stable"]["accuracy"] == pytest.approx(card["metrics"]["test"]["accuracy"])
    assert comparison["interval"]["low"] <= card["metrics"]["test"]["accuracy"]
    card["promotion"] = comparison
    html = write_report(tmp_path / "report", card).read_text()
    verdict = "promoted to stable" if comparison["decision"] == "promote" else "rejected"
    assert f"<b>Verdict: {verdict}.</b>" in html
    assert "Compared with version 1 (stable): accuracy" in html
    assert f"candidate test split ({card['metrics']['test']['count']} images)" in html
    assert "low end of its 95% accuracy interval must be above chance" in html
    assert "<td>max_recall_drop</td>" in html
