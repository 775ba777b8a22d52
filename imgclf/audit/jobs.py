"""The `audit` job kind: audit the job's data, write the reports, and return the record fields."""

from __future__ import annotations

from pathlib import Path

from imgclf import registry, repository
from imgclf.audit.core import audit_folder
from imgclf.audit.report import write_html, write_json
from imgclf.config import TrainConfig

RECORD_LIMIT = 50  # groups and suspects kept in the job record; the JSON file has them all


def run_audit_job(
    config: TrainConfig,
    *,
    data: Path,
    run_dir: Path,
    model_dir: Path,
    name: str | None,
    version: int | None,
) -> dict:
    """Job record fields: `result` (summary, findings, the first groups and suspects) and
    `report` (the HTML page; audit.json lies next to it)."""
    version_dir = None
    if name is not None:
        # The version a server (default policy) answers with, unless the job names one.
        version = registry.repository_version(model_dir, name, version=version)
        version_dir = repository.version_path(model_dir, name, version)
    report = audit_folder(
        data,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        seed=config.seed,
        version_dir=version_dir,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    json_path = write_json(report, run_dir / "audit.json")
    html_path = write_html(report, run_dir / "audit.html")
    result = {
        "summary": report["summary"],
        "findings": report["findings"],
        "near_duplicates": report["near_duplicates"][:RECORD_LIMIT],
        "label_suspects": report["label_suspects"][:RECORD_LIMIT],
        "label_model": report["label_model"],
        "json": str(json_path),
    }
    return {"result": result, "report": str(html_path)}
