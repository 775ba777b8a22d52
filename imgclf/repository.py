"""The model repository layout, shared by the trainer and the server.

    MODEL_DIR/<name>/<version>/   version = increasing integer (TensorFlow Serving layout)
    MODEL_DIR/<name>/labels.json  {"stable": 3, ...} (written by the registry)
    MODEL_DIR/<name>/.staging-*   half-written exports; never a number, so never served

Publishing is a rename of a finished folder onto a new version number, so a reader
(our server or TensorFlow Serving) sees either nothing or a complete version. No
heavy imports here: the server and the CLI use this module.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from imgclf import contract
from imgclf.errors import InvalidInput, RepositoryError

MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# ASCII digits only (str.isdigit() accepts full-width and other Unicode digits, which
# int() reads), no leading zero, and within TF Serving's int64 version numbers.
VERSION_PATTERN = re.compile(r"^[1-9][0-9]{0,17}\Z", re.ASCII)
_STAGING_PREFIX = ".staging-"
_LOCK_FILE = ".publish.lock"


def validate_model_name(name: str) -> str:
    """Model names become folder names and URL parts, so only a safe alphabet is allowed."""
    if not isinstance(name, str) or not MODEL_NAME_PATTERN.match(name):
        raise InvalidInput(
            f"invalid model name {name!r}: use 1-64 letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def model_path(model_dir: str | Path, name: str) -> Path:
    return Path(model_dir) / validate_model_name(name)


def list_versions(model_dir: str | Path, name: str) -> list[int]:
    """Published versions, ascending. Staging folders and stray files are ignored."""
    base = model_path(model_dir, name)
    if not base.is_dir():
        return []
    versions = []
    for entry in base.iterdir():
        if VERSION_PATTERN.match(entry.name) and entry.is_dir():
            versions.append(int(entry.name))
    return sorted(versions)


def list_models(model_dir: str | Path) -> list[str]:
    root = Path(model_dir)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and MODEL_NAME_PATTERN.match(p.name))


def version_path(model_dir: str | Path, name: str, version: int) -> Path:
    return model_path(model_dir, name) / str(int(version))


def latest_version(model_dir: str | Path, name: str) -> int:
    versions = list_versions(model_dir, name)
    if not versions:
        raise RepositoryError(f"model {name!r} has no published version under {model_dir}")
    return versions[-1]


def read_labels(version_dir: str | Path) -> list[str]:
    """Class names in index order, from assets/labels.txt."""
    path = Path(version_dir) / contract.LABELS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise RepositoryError(f"{path} is missing: not an imgclf export") from exc
    return [line for line in text.splitlines() if line]


def read_model_card(version_dir: str | Path) -> dict:
    path = Path(version_dir) / contract.MODEL_CARD_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RepositoryError(f"{path} is missing: not an imgclf export") from exc


def new_staging_dir(model_dir: str | Path, name: str) -> Path:
    """A private folder on the same filesystem as the versions, so publishing is a rename."""
    base = model_path(model_dir, name)
    base.mkdir(parents=True, exist_ok=True)
    path = base / f"{_STAGING_PREFIX}{uuid.uuid4().hex}"
    path.mkdir()
    return path


@contextlib.contextmanager
def _publish_lock(base: Path) -> Iterator[None]:
    with open(base / _LOCK_FILE, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def publish(
    staging: str | Path,
    model_dir: str | Path,
    name: str,
    before_rename: Callable[[Path, int], None] | None = None,
) -> int:
    """Move a finished export into the next free version number and return that number.

    `before_rename(staging, version)` runs under the lock once the number is
    chosen, so files that mention the version (the model card) are written before
    anyone can see the folder.

    A file lock serialises publishers on one host; the rename itself refuses an
    existing target, so publishers on other hosts sharing the folder retry with
    the next number instead of overwriting each other.
    """
    staging = Path(staging)
    base = model_path(model_dir, name)
    if staging.parent.resolve() != base.resolve():
        raise ValueError(f"staging folder {staging} is not inside {base}")
    with _publish_lock(base):
        for _ in range(1000):
            version = (max(list_versions(model_dir, name), default=0)) + 1
            target = base / str(version)
            if target.exists():
                continue
            if before_rename is not None:
                before_rename(staging, version)
            try:
                # rename() onto an existing non-empty folder fails, so a publisher on
                # another host that took this number first makes us try the next one.
                os.rename(staging, target)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    continue
                raise
            return version
    raise RepositoryError(f"could not find a free version number under {base}")


def discard_staging(staging: str | Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)
