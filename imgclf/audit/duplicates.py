"""Exact and near-duplicate groups, and what each group means for training.

A group is a set of images joined by near pairs (transitively) or equal bytes. Its
tags say why it matters:
  exact          every member has the same bytes
  within_class   one label, one split: a copy inflates that class's weight
  cross_label    the same picture under two or more labels: at least one label is wrong
  cross_split    members in different splits: a held-out image has a copy the model saw
                 (leakage), so held-out accuracy is optimistic
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Member:
    path: str  # relative to the data root
    split: str
    label: str
    sha256: str


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def union_groups(count: int, pairs: np.ndarray, shas: Sequence[str]) -> list[list[int]]:
    """Connected components (of size 2+) of the near pairs plus equal-content links."""
    parent = list(range(count))

    def join(a: int, b: int) -> None:
        ra, rb = _find(parent, a), _find(parent, b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    first: dict[str, int] = {}
    for index, sha in enumerate(shas):
        join(first.setdefault(sha, index), index)
    for a, b in pairs.tolist():
        join(a, b)
    groups: dict[int, list[int]] = {}
    for index in range(count):
        groups.setdefault(_find(parent, index), []).append(index)
    return [g for g in groups.values() if len(g) > 1]


def describe_group(members: list[Member]) -> dict:
    """The JSON form of one group, with its tags."""
    labels = sorted({m.label for m in members})
    splits = sorted({m.split for m in members})
    tags = []
    if len({m.sha256 for m in members}) == 1:
        tags.append("exact")
    if len(labels) > 1:
        tags.append("cross_label")
    if len(splits) > 1:
        tags.append("cross_split")
    if len(labels) == 1 and len(splits) == 1:
        tags.append("within_class")
    order = {"train": 0, "val": 1, "test": 2}
    return {
        "tags": tags,
        "labels": labels,
        "splits": splits,
        "members": [
            {"path": m.path, "split": m.split, "label": m.label}
            for m in sorted(members, key=lambda m: (order.get(m.split, 3), m.path))
        ],
    }


def leakage(members: Sequence[Member], pairs: np.ndarray) -> dict[str, list[str]]:
    """Held-out images with a *direct* copy in training (a near pair or equal bytes), and
    those training copies. Direct, not via the group: groups join transitively (A near
    B near C), and a chain of look-alikes is not a copy of its far end."""
    held_out: dict[str, set[str]] = {"test": set(), "val": set()}
    train_copies: set[str] = set()
    by_sha: dict[str, list[Member]] = {}
    for member in members:
        by_sha.setdefault(member.sha256, []).append(member)
    for same in by_sha.values():  # equal bytes: every member is a direct copy of the others
        train = [m for m in same if m.split == "train"]
        held = [m for m in same if m.split in held_out]
        if train and held:
            for m in held:
                held_out[m.split].add(m.path)
            train_copies.update(m.path for m in train)
    for a, b in pairs.tolist():
        for x, y in ((members[a], members[b]), (members[b], members[a])):
            if x.split in held_out and y.split == "train":
                held_out[x.split].add(x.path)
                train_copies.add(y.path)
    return {
        "test_with_train_copy": sorted(held_out["test"]),
        "val_with_train_copy": sorted(held_out["val"]),
        "train_copies_of_held_out": sorted(train_copies),
    }
