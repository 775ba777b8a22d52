"""Version aliases (stable, canary, ...) over a model's versions, one version
resolution rule, and retention.

Two different things are both called "labels" in the wider world: the class names a
model predicts (assets/labels.txt) and the names that point at versions. In the code
the first are *class names* and the second *aliases*; only the file names and JSON
keys keep TF Serving's word "labels" (labels.json, {"labels": ...}, /labels/<alias>).

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
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

from imgclf import contract, repository
from imgclf.errors import InvalidInput, RepositoryError, quote

ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
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
        if not ALIAS_PATTERN.match(label):
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


def aliases(model_dir: str | Path, name: str) -> dict[str, int]:
    """{alias: version} as labels.json holds it now."""
    return {k: int(v) for k, v in read(model_dir, name)["labels"].items()}


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


def validate_alias(alias: str) -> str:
    if not isinstance(alias, str) or not ALIAS_PATTERN.match(alias):
        raise InvalidInput(
            f"invalid label {quote(alias)}: use 1-32 lowercase letters, digits, '-' or '_', "
            "starting with a letter"
        )
    return alias


def set_alias(
    model_dir: str | Path,
    name: str,
    alias: str,
    version: int,
    *,
    by: str = "user",
    locked: bool = False,
) -> dict[str, int]:
    """Point `alias` at an existing version; returns the new {alias: version} map."""
    validate_alias(alias)
    if int(version) not in repository.list_versions(model_dir, name):
        raise RepositoryError(f"model {name!r} has no version {version}")
    context = contextlib.nullcontext() if locked else lock(model_dir, name)
    with context:
        data = read(model_dir, name)
        data["labels"][alias] = int(version)
        data["history"].append(
            {
                "label": alias,
                "version": int(version),
                "by": by,
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        data["history"] = data["history"][-200:]
        _write(model_dir, name, data)
        return {k: int(v) for k, v in data["labels"].items()}


def rollback(model_dir: str | Path, name: str, alias: str = STABLE) -> int:
    """Point `alias` at the newest earlier version that held it before and still exists.

    Versions only grow, so repeated rollbacks walk further back (3 -> 2 -> 1).
    """
    with lock(model_dir, name):
        target = rollback_target(model_dir, name, alias)
        set_alias(model_dir, name, alias, target, by="rollback", locked=True)
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
    """Delete all but the newest `keep` versions, never an aliased one; returns deleted."""
    protected = set(aliases(model_dir, name).values())
    versions = repository.list_versions(model_dir, name)
    newest = set(versions[-keep:]) if keep > 0 else set()
    deleted = []
    for version in versions:
        if version in newest or version in protected:
            continue
        shutil.rmtree(repository.version_path(model_dir, name, version), ignore_errors=True)
        deleted.append(version)
    return deleted


# The roles a version policy adds next to the labels (labels cannot contain ':').
LATEST_ROLE = "policy:latest"


def policy_roles(
    versions: Collection[int],
    aliases: Mapping[str, int],
    policy: str = "latest",
    specific: Collection[int] = (),
    may_try: Callable[[int], bool] = lambda version: True,
) -> dict[str, int]:
    """role -> the version it wants under `policy` (settings.version_policy): every label,
    and the policy's own roles. The one place the version policies' rules live.

    latest: the labels plus the newest version; labelled: the labels (plus the newest
    when no label names an existing version); specific: each listed version
    (`policy:version N`) and the labels that name a listed version. Labels are kept even
    when they name a missing version, so the server can say so. `may_try` says which
    versions are worth trying: the server's skips a refused version until its files
    change, so the newest is the newest worth trying.
    """
    existing = set(versions)
    if policy == "specific":
        listed = set(specific)
        roles = {label: v for label, v in aliases.items() if v in listed}
        roles.update({f"policy:version {v}": v for v in sorted(listed)})
        return roles
    roles = dict(aliases)
    if policy == "labelled" and any(v in existing for v in aliases.values()):
        return roles
    candidates = [v for v in existing if may_try(v)]
    if candidates:
        roles[LATEST_ROLE] = max(candidates)
    return roles


def policy_versions(
    versions: Collection[int],
    aliases: Mapping[str, int],
    policy: str = "latest",
    specific: Collection[int] = (),
) -> set[int]:
    """The existing versions a server keeps loaded under `policy` (see `policy_roles`)."""
    existing = set(versions)
    return {v for v in policy_roles(versions, aliases, policy, specific).values() if v in existing}


def resolve_version(
    name: str,
    served: Collection[int],
    aliases: Mapping[str, int],
    *,
    version: int | None = None,
    alias: str | None = None,
) -> int:
    """The version that answers a request: the one place this rule lives.

    An explicit `version` or `alias` names it; otherwise the `stable` alias when it
    points at a served version, else the newest served version. The server passes
    the versions that are loaded, `imgclf predict` the ones its policy would load,
    so both answer with the same version.
    """
    if alias is not None:
        if alias not in aliases:
            raise RepositoryError(f"model {quote(name)} has no label {quote(alias)}")
        version = aliases[alias]
    if version is not None:
        if int(version) not in served:
            known = ", ".join(map(str, sorted(served))) or "none"
            raise RepositoryError(
                f"no version {version} of model {quote(name)} (versions: {known})"
            )
        return int(version)
    stable = aliases.get(STABLE)
    if stable is not None and stable in served:
        return stable
    if not served:
        raise RepositoryError(f"model {quote(name)} has no version to serve")
    return max(served)


def repository_version(
    model_dir: str | Path,
    name: str,
    *,
    policy: str = "latest",
    specific: Collection[int] = (),
    version: int | None = None,
    alias: str | None = None,
) -> int:
    """The version a server started on `model_dir` would answer with, from the files alone.

    Used by `imgclf predict` and `imgclf models`, which load no server. An explicit
    `version` may be any version on disk (a local tool can try a version no server loads).
    """
    versions = repository.list_versions(model_dir, name)
    if not versions:
        raise RepositoryError(f"model {quote(name)} has no published version in {model_dir}")
    current = aliases(model_dir, name)
    served = (
        versions if version is not None else policy_versions(versions, current, policy, specific)
    )
    return resolve_version(name, served, current, version=version, alias=alias)


def delete(
    model_dir: str | Path, name: str, version: int | None = None, *, force: bool = False
) -> list[int]:
    """Delete one version, or the whole model when `version` is None; returns what went.

    A labelled version is what some client is being served: it is refused unless
    `force`, which also drops the labels that pointed at it.
    """
    versions = repository.list_versions(model_dir, name)
    if not versions and not repository.model_path(model_dir, name).is_dir():
        raise RepositoryError(f"no model {name!r} in {model_dir}")
    if version is not None and version not in versions:
        raise RepositoryError(
            f"no version {version} of model {name!r} "
            f"(versions: {', '.join(map(str, versions)) or 'none'})"
        )
    doomed = versions if version is None else [version]
    with lock(model_dir, name):
        data = read(model_dir, name)
        held = {lab: v for lab, v in data["labels"].items() if int(v) in doomed}
        if held and not force:
            shown = ", ".join(f"{lab} -> {v}" for lab, v in sorted(held.items()))
            raise InvalidInput(
                f"refusing to delete labelled version(s) of {name!r} ({shown}): move the "
                "label first ('imgclf promote' / 'imgclf rollback') or pass --force"
            )
        for v in doomed:
            shutil.rmtree(repository.version_path(model_dir, name, v), ignore_errors=True)
        if held and version is not None:
            data["labels"] = {k: v for k, v in data["labels"].items() if k not in held}
            _write(model_dir, name, data)
    if version is None:
        shutil.rmtree(repository.model_path(model_dir, name), ignore_errors=True)
    return doomed
