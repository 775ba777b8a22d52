"""The promotion gate: a candidate is served only if it is not worse than the live version.

Rule (documented in docs/registry.md): the candidate and the current `stable`
version are both evaluated on the candidate's test split, the images the
candidate never trained on. The candidate is promoted when
  - its parity check passed (the export step refuses to get here otherwise),
  - its accuracy beats chance by `min_over_chance` (always, first version included),
  - the low end of the 95% (`confidence`) Wilson interval of its test accuracy is above
    chance: a
    test split too small to tell a model from a guess promotes nothing (the interval
    and a small-split caveat are kept in the comparison either way),
  - its accuracy is at most `tolerance` below stable's, and
  - no class's recall is more than `max_recall_drop` below stable's, and
  - when `min_gain` is set (a k-fold job's fold-to-fold standard deviation of
    accuracy), its accuracy beats stable's by more than that: a gain smaller than
    the noise between folds is not evidence of a better model.
If stable was trained on some of these images (the data was not new), the
comparison favours stable, which errs on the side of keeping what is live.
If the class sets differ, the versions cannot be compared and only the chance
rule applies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgclf import registry, repository
from imgclf.artifact import LoadedVersion
from imgclf.errors import Rejected
from imgclf.trainer.data import Dataset
from imgclf.trainer.metrics import classification_metrics
from imgclf.trainer.pipeline import label_indices
from imgclf.trainer.uncertainty import accuracy_uncertainty

_BATCH = 32


@dataclass(frozen=True)
class GateRules:
    tolerance: float = 0.005
    max_recall_drop: float = 0.10
    min_over_chance: float = 0.15
    confidence: float = 0.95  # the low end of this interval must beat chance; 0 = off
    min_gain: float | None = None  # set by k-fold jobs: the fold-to-fold std of accuracy


def evaluate_version(version_dir: Path, dataset: Dataset, top_k: int) -> dict | None:
    """The live version's test metrics on `dataset`'s test split, or None if classes differ."""
    loaded = LoadedVersion(version_dir)
    if loaded.labels != dataset.classes:
        return None
    samples = dataset.splits["test"]
    rows = []
    for start in range(0, len(samples), _BATCH):
        chunk = samples[start : start + _BATCH]
        rows.append(loaded.predict_bytes([s.path.read_bytes() for s in chunk]))
    probabilities = np.concatenate(rows)
    return classification_metrics(
        label_indices(samples, dataset.classes), probabilities, dataset.classes, top_k
    )


def decide(candidate: dict, stable: dict | None, classes: list[str], rules: GateRules) -> dict:
    """Pure decision from two metric sets; returns the comparison kept in the job record."""
    chance = 1.0 / len(classes)
    reasons = []
    accuracy = candidate["accuracy"]
    if accuracy < chance + rules.min_over_chance:
        reasons.append(
            f"accuracy {accuracy:.1%} does not beat chance ({chance:.1%}) by "
            f"{rules.min_over_chance:.0%}"
        )
    interval = None
    if "count" in candidate and rules.confidence > 0:
        interval = accuracy_uncertainty(
            accuracy, candidate["count"], len(classes), rules.confidence
        )
        if interval["low"] <= chance:
            reasons.append(
                f"the {rules.confidence:.0%} interval of accuracy {accuracy:.1%} on "
                f"{candidate['count']} test "
                f"images ({interval['low']:.1%}-{interval['high']:.1%}) reaches chance "
                f"({chance:.1%}): too few test images to tell it from a guess"
            )
    recall_drops = {}
    if stable is not None:
        if accuracy < stable["accuracy"] - rules.tolerance:
            reasons.append(
                f"accuracy {accuracy:.1%} is below stable's {stable['accuracy']:.1%} by more "
                f"than {rules.tolerance:.1%}"
            )
        if rules.min_gain is not None and accuracy <= stable["accuracy"] + rules.min_gain:
            reasons.append(
                f"accuracy {accuracy:.1%} does not beat stable's {stable['accuracy']:.1%} by "
                f"more than the fold-to-fold noise ({rules.min_gain:.1%})"
            )
        for name in classes:
            drop = stable["per_class"][name]["recall"] - candidate["per_class"][name]["recall"]
            recall_drops[name] = round(drop, 6)
            if drop > rules.max_recall_drop:
                reasons.append(
                    f"recall of {name!r} drops by {drop:.1%} (allowed {rules.max_recall_drop:.0%})"
                )
    applied = {
        "tolerance": rules.tolerance,
        "max_recall_drop": rules.max_recall_drop,
        "min_over_chance": rules.min_over_chance,
        "confidence": rules.confidence,
    }
    if rules.min_gain is not None:
        applied["min_gain"] = rules.min_gain
    return {
        "decision": "reject" if reasons else "promote",
        "reasons": reasons,
        "candidate": {"accuracy": accuracy, "macro_f1": candidate["macro_f1"]},
        "stable": None
        if stable is None
        else {"accuracy": stable["accuracy"], "macro_f1": stable["macro_f1"]},
        "recall_drops": recall_drops,
        "rules": applied,
        "interval": None if interval is None else {k: interval[k] for k in ("low", "high")},
        "caveat": None if interval is None else interval["warning"],
    }


class PromotionGate:
    """Decides before publishing; moves `stable` and applies retention after."""

    def __init__(
        self, model_dir: str | Path, name: str, rules: GateRules, keep_versions: int | None = None
    ) -> None:
        self.model_dir = Path(model_dir)
        self.name = name
        self.rules = rules
        self.keep_versions = keep_versions

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        with registry.lock(self.model_dir, self.name):
            yield

    def check(self, card: dict, dataset: Dataset) -> dict:
        """Raise Rejected, or return the comparison (which goes into the model card)."""
        stable_version = registry.aliases(self.model_dir, self.name).get(registry.STABLE)
        stable_metrics = None
        if stable_version in repository.list_versions(self.model_dir, self.name):
            stable_metrics = evaluate_version(
                repository.version_path(self.model_dir, self.name, stable_version),
                dataset,
                card["config"]["top_k"],
            )
        else:
            stable_version = None
        comparison = decide(card["metrics"]["test"], stable_metrics, dataset.classes, self.rules)
        comparison["stable_version"] = stable_version
        comparison["compared_on"] = f"candidate test split ({len(dataset.splits['test'])} images)"
        if stable_version is not None and stable_metrics is None:
            comparison["note"] = "class sets differ from stable's; only the chance rule applied"
        if comparison["decision"] == "reject":
            raise Rejected("promotion gate: " + "; ".join(comparison["reasons"]), comparison)
        return comparison

    def after_publish(self, version: int) -> None:
        registry.set_alias(
            self.model_dir, self.name, registry.STABLE, version, by="promotion gate", locked=True
        )
        if self.keep_versions:
            registry.apply_retention(self.model_dir, self.name, self.keep_versions)
