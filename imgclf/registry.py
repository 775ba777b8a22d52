"""Labels (stable, canary, ...) over a model's versions, and retention.

MODEL_DIR/<name>/labels.json:
    {"labels": {"stable": 3, "canary": 4},
     "history": [{"label": "stable", "version": 3, "at": "...", "by": "promotion gate"}, ...]}

Written atomically (temporary file + rename); servers re-read it when it changes.
No heavy imports: the CLI and the server use this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from imgclf import contract, repository
from imgclf.errors import InvalidInput, RepositoryError

LABEL_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
STABLE = "stable"


def _path(model_dir: str | Path, name: str) -> Path:
    return repository.model_path(model_dir, name) / contract.MODEL_LABELS_FILE


def read(model_dir: str | Path, name: str) -> dict:
    path = _path(model_dir, name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"labels": {}, "history": []}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RepositoryError(f"{path} is not valid JSON: {exc}") from None
    except OSError as exc:
        raise RepositoryError(f"{path} cannot be read: {exc}") from None
    return _checked(path, data)


def _checked(path: Path, data: object) -> dict:
    """The document's shape, checked: a hand edit must fail here, not deep in a server."""
    if not isinstance(data, dict):
        raise RepositoryError(f"{path} must hold a JSON object, not {json.dumps(data)[:40]}")
    data.setdefault("labels", {})
    data.setdefault("history", [])
    if not isinstance(data["labels"], dict):
        raise RepositoryError(f'{path}: "labels" must be an object of label -> version')
    for label, version in data["labels"].items():
        if not LABEL_PATTERN.match(label):
            raise RepositoryError(f"{path}: {label[:40]!r} is not a valid label name")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise RepositoryError(
                f"{path}: label {label!r} must name a version number (an integer >= 1), "
                f"not {json.dumps(version)[:40]}"
            )
    if not isinstance(data["history"], list) or not all(
        isinstance(e, dict)
        and isinstance(e.get("label"), str)
        and isinstance(e.get("version"), int)
        and not isinstance(e.get("version"), bool)
        for e in data["history"]
    ):
        raise RepositoryError(f'{path}: "history" must be a list of {{"label", "version"}} entries')
    return data


def labels(model_dir: str | Path, name: str) -> dict[str, int]:
    return dict(read(model_dir, name)["labels"])


@contextlib.contextmanager
def lock(model_dir: str | Path, name: str) -> Iterator[None]:
    """Serialises label changes and promotion decisions for one model on this host."""
    base = repository.model_path(model_dir, name)
    base.mkdir(parents=True, exist_ok=True)
    with open(base / ".registry.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write(model_dir: str | Path, name: str, data: dict) -> None:
    path = _path(model_dir, name)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def validate_label(label: str) -> str:
    if not isinstance(label, str) or not LABEL_PATTERN.match(label):
        raise InvalidInput(
            f"invalid label {label!r}: use 1-32 lowercase letters, digits, '-' or '_', "
            "starting with a letter"
        )
    return label


def set_label(
    model_dir: str | Path,
    name: str,
    label: str,
    version: int,
    *,
    by: str = "user",
    locked: bool = False,
) -> dict[str, int]:
    """Point `label` at an existing version; returns the new label map."""
    validate_label(label)
    if int(version) not in repository.list_versions(model_dir, name):
        raise RepositoryError(f"model {name!r} has no version {version}")
    context = contextlib.nullcontext() if locked else lock(model_dir, name)
    with context:
        data = read(model_dir, name)
        data["labels"][label] = int(version)
        data["history"].append(
            {
                "label": label,
                "version": int(version),
                "by": by,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        data["history"] = data["history"][-200:]
        _write(model_dir, name, data)
        return {k: int(v) for k, v in data["labels"].items()}


def rollback(model_dir: str | Path, name: str, label: str = STABLE) -> int:
    """Point `label` at the newest earlier version that held it before and still exists.

    Versions only grow, so repeated rollbacks walk further back (3 -> 2 -> 1).
    """
    with lock(model_dir, name):
        target = rollback_target(model_dir, name, label)
        set_label(model_dir, name, label, target, by="rollback", locked=True)
        return target


def rollback_target(model_dir: str | Path, name: str, label: str = STABLE) -> int:
    """The newest earlier version that held `label` and still exists (nothing changes)."""
    data = read(model_dir, name)
    current = data["labels"].get(label)
    if current is None:
        raise RepositoryError(f"model {name!r} has no {label!r} label to roll back")
    existing = set(repository.list_versions(model_dir, name))
    earlier = {
        e["version"]
        for e in data["history"]
        if e["label"] == label and e["version"] < current and e["version"] in existing
    }
    if not earlier:
        raise RepositoryError(f"no earlier version of {name!r} to roll {label!r} back to")
    return max(earlier)


def apply_retention(model_dir: str | Path, name: str, keep: int) -> list[int]:
    """Delete all but the newest `keep` versions, never a labelled one; returns deleted."""
    protected = set(labels(model_dir, name).values())
    versions = repository.list_versions(model_dir, name)
    newest = set(versions[-keep:]) if keep > 0 else set()
    deleted = []
    for version in versions:
        if version in newest or version in protected:
            continue
        shutil.rmtree(repository.version_path(model_dir, name, version), ignore_errors=True)
        deleted.append(version)
    return deleted


def resolve(
    model_dir: str | Path, name: str, *, version: int | None = None, label: str | None = None
) -> int:
    """A version number from an explicit version, a label, or stable-else-latest."""
    if version is not None:
        if int(version) not in repository.list_versions(model_dir, name):
            raise RepositoryError(f"model {name!r} has no version {version}")
        return int(version)
    current = labels(model_dir, name)
    if label is not None:
        if label not in current:
            raise RepositoryError(f"model {name!r} has no label {label!r}")
        return current[label]
    if STABLE in current and current[STABLE] in repository.list_versions(model_dir, name):
        return current[STABLE]
    return repository.latest_version(model_dir, name)
