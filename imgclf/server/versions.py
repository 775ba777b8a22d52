"""What the web console reads about published versions: model-card summaries, report
files and a side-by-side comparison with the promotion gate's verdict.

Plain functions over MODEL_DIR (no Flask here): `imgclf.server.console` calls them.
Everything is read from the version folders the trainer published; nothing loads a
model. A report file is served only from inside its version's `report/` folder.
"""

from __future__ import annotations

from pathlib import Path

from werkzeug.security import safe_join

from imgclf import contract, registry, repository
from imgclf.audit.core import AUDIT_CARD_KEY
from imgclf.errors import NotFound, RepositoryError

_TEST_KEYS = ("accuracy", "macro_f1", "loss", "count")


def _card(model_dir: Path, name: str, version: int) -> dict:
    if version not in repository.list_versions(model_dir, name):
        raise NotFound(f"model {name!r} has no version {version} in the repository")
    try:
        return repository.read_model_card(repository.version_path(model_dir, name, version))
    except (RepositoryError, ValueError) as exc:
        message = f"model {name!r} version {version} has no readable model card: {exc}"
        raise NotFound(message) from None


def headline_metrics(card: dict) -> dict:
    """The test split's headline numbers (accuracy, macro F1, top-k, loss, count)."""
    test = (card.get("metrics") or {}).get("test") or {}
    shown = {k: test[k] for k in _TEST_KEYS if k in test}
    shown.update({k: v for k, v in test.items() if k.startswith("top_") and k.endswith("accuracy")})
    return shown


def summary(card: dict, version_dir: Path, version: int) -> dict:
    """One version as the console's model list shows it (a few hundred bytes). The
    number is the folder's: a copied version keeps its card's old one."""
    diagnosis = card.get("diagnosis") or {}
    audit = (card.get(AUDIT_CARD_KEY) or {}).get("summary")
    promotion = card.get("promotion") or {}
    return {
        "version": version,
        "created_at": card.get("created_at"),
        "artifact_bytes": card.get("artifact_bytes"),
        "labels": card.get("labels", []),
        "image_size": card.get("image_size"),
        "signatures": card.get("signatures", []),
        "recipe": (card.get("recipe") or {}).get("name"),
        "test": headline_metrics(card),
        "diagnosis": {
            "status": diagnosis.get("status"),
            "summary": diagnosis.get("summary"),
            "findings": [f.get("title") or f.get("id") for f in diagnosis.get("findings", [])],
        },
        "audit": _audit_summary(audit),
        "calibration": card.get("calibration"),
        "promotion": {k: promotion.get(k) for k in ("decision", "reasons", "stable_version")}
        if promotion
        else None,
        "report": (version_dir / contract.REPORT_DIR / "report.html").is_file(),
    }


def _audit_summary(audit: dict | None) -> dict | None:
    """The audit's counts (its timings are left out: they are not about the data)."""
    if not audit:
        return None
    return {k: v for k, v in audit.items() if k != "seconds"}


def version_summary(model_dir: Path, name: str, version: int) -> dict:
    card = _card(model_dir, name, version)
    return summary(card, repository.version_path(model_dir, name, version), version)


def model_versions(model_dir: Path, name: str) -> dict:
    """Every published version's summary (newest first), the labels file's aliases and,
    per label, the version a rollback would move it to (None when there is none)."""
    if not repository.model_path(model_dir, name).is_dir():
        raise NotFound(f"model {name!r} is not in the repository")
    versions = []
    for version in sorted(repository.list_versions(model_dir, name), reverse=True):
        try:
            versions.append(version_summary(model_dir, name, version))
        except NotFound as exc:
            versions.append({"version": version, "error": str(exc)})
    try:
        aliases = registry.aliases(model_dir, name)
    except RepositoryError as exc:
        aliases = {}
        versions.append({"error": str(exc)})
    return {
        "name": name,
        "aliases": aliases,
        "rollback": {label: _rollback_target(model_dir, name, label) for label in aliases},
        "versions": versions,
    }


def _rollback_target(model_dir: Path, name: str, label: str) -> int | None:
    """The version a rollback of `label` would move it to (imgclf rollback), if any."""
    try:
        return registry.rollback_target(model_dir, name, label)
    except RepositoryError:
        return None


def report_file(model_dir: Path, name: str, version: int, path: str) -> Path:
    """The file `path` inside the version's report folder; NotFound for anything else.

    safe_join refuses '..', absolute paths and backslashes; resolve() then catches a
    symlink inside the folder that points out of it.
    """
    if version not in repository.list_versions(model_dir, name):
        raise NotFound(f"model {name!r} has no version {version} in the repository")
    folder = (repository.version_path(model_dir, name, version) / contract.REPORT_DIR).resolve()
    joined = safe_join(str(folder), path or "report.html")
    if joined is None:
        raise NotFound(f"no report file {path[:80]!r}")
    target = Path(joined).resolve()
    if folder not in target.parents or not target.is_file():
        raise NotFound(f"no report file {path[:80]!r} for model {name!r} version {version}")
    return target


def _per_class(a: dict, b: dict, classes: list[str]) -> list[dict]:
    rows = []
    for label in classes:
        ra, rb = a.get(label) or {}, b.get(label) or {}
        row = {"label": label}
        for key in ("precision", "recall", "f1"):
            va, vb = ra.get(key), rb.get(key)
            row[key] = {
                "a": va,
                "b": vb,
                "delta": None if va is None or vb is None else round(vb - va, 6),
            }
        rows.append(row)
    return rows


def compare(model_dir: Path, name: str, a: int, b: int) -> dict:
    """Versions `a` (the live one) and `b` (the candidate) side by side, with the
    promotion gate's verdict on b against a (imgclf.trainer.promotion.decide).

    The real gate evaluates stable on the candidate's test split; here each version's
    own recorded test metrics are compared (no model is loaded), which the answer says.
    """
    from imgclf.trainer.promotion import GateRules, decide

    cards = {"a": _card(model_dir, name, a), "b": _card(model_dir, name, b)}
    tests = {k: (c.get("metrics") or {}).get("test") or {} for k, c in cards.items()}
    for key, version in (("a", a), ("b", b)):
        if not tests[key].get("per_class"):
            raise NotFound(f"model {name!r} version {version} has no test metrics to compare")
    classes_a, classes_b = cards["a"].get("labels", []), cards["b"].get("labels", [])
    same = classes_a == classes_b
    recorded = (cards["b"].get("promotion") or {}).get("rules") or {}
    rules = GateRules(
        **{
            k: recorded[k]
            for k in ("tolerance", "max_recall_drop", "min_over_chance", "confidence")
            if k in recorded
        }
    )
    verdict = decide(tests["b"], tests["a"] if same else None, classes_b, rules)
    verdict["compared_on"] = (
        "each version's own test split, as recorded in its model card (the training gate "
        "evaluates stable on the candidate's test split)"
    )
    if not same:
        verdict["note"] = "class sets differ; only the chance rule applied"
    return {
        "name": name,
        "a": {"version": a, "labels": classes_a, **headline_metrics(cards["a"])},
        "b": {"version": b, "labels": classes_b, **headline_metrics(cards["b"])},
        "per_class": _per_class(tests["a"]["per_class"], tests["b"]["per_class"], classes_b)
        if same
        else [],
        "confusion": {
            "a": tests["a"].get("confusion_matrix"),
            "b": tests["b"].get("confusion_matrix"),
        },
        "verdict": verdict,
    }
