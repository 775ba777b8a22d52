"""The audit at the start of a training run: find, log, and apply `leakage: warn | drop`.

Its result goes into model_card.json under `audit` (AUDIT_CARD_KEY) and into the run's
report; long lists are cut to CARD_LIMIT entries there (the summary counts them all).
"""

from __future__ import annotations

import logging
from typing import Literal

from imgclf.audit.core import audit_dataset, drop_leaks
from imgclf.audit.report import console_lines
from imgclf.trainer.data import Dataset

log = logging.getLogger(__name__)

CARD_LIMIT = 200


def audit_for_run(dataset: Dataset, leakage: Literal["warn", "drop"]) -> dict:
    """Audit `dataset` before training; with "drop", remove the training copies of
    validation/test images from it (in place). Returns the model card's `audit` section."""
    report = audit_dataset(dataset)
    dropped = drop_leaks(dataset, report) if leakage == "drop" else []
    for line in console_lines(report, limit=5):
        log.warning(line) if report["findings"] else log.info(line)
    if dropped:
        log.warning("leakage: drop removed %d training image(s) copied in val/test", len(dropped))
    section = {
        **report,
        "near_duplicates": report["near_duplicates"][:CARD_LIMIT],
        "leakage": {
            "mode": leakage,
            "dropped_from_train": dropped,
            **{k: v[:CARD_LIMIT] for k, v in report["leakage"].items()},
        },
        "unreadable": report["unreadable"][:CARD_LIMIT],
    }
    section["summary"] = {**report["summary"], "dropped_from_train": len(dropped)}
    return section
