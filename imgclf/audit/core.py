"""One audit: hash every image once, group duplicates, run the checks, rank label suspects.

The result is a JSON-ready dict (its keys are documented in docs/audit.md):
  summary            counts and timings
  near_duplicates    groups of exact or near copies, each member {path, split, label}
  label_suspects     [{path, split, given, suggested, score, ...}] most suspicious first
  class_balance, image_checks, unreadable, findings (plain-language lines with actions)
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from imgclf.audit import checks, duplicates
from imgclf.audit.hashing import ImageFacts, read_facts
from imgclf.audit.index import near_pairs
from imgclf.errors import DataError
from imgclf.trainer.data import Dataset, Sample, load_dataset

log = logging.getLogger(__name__)

AUDIT_CARD_KEY = "audit"  # model_card.json key that holds a training run's audit
_READ_THREADS = min(8, (os.cpu_count() or 1) + 2)  # Pillow decodes outside the GIL


def audit_folder(
    data: str | Path,
    *,
    val_fraction: float = 0.15,
    test_fraction: float = 0.15,
    seed: int = 42,
    version_dir: Path | None = None,
    kfold_dir: Path | None = None,
) -> dict:
    """Scan `data` as a training run with these split settings would, then audit it.
    Label suspects come from model version `version_dir` or k-fold run `kfold_dir`."""
    started = time.monotonic()
    facts: dict[Path, ImageFacts] = {}
    read = _read_all(Path(data).expanduser())

    def is_image(path: Path) -> str | None:
        result = read.pop(path, None) or read_facts(path)
        if isinstance(result, str):
            return result
        facts[path] = result
        return None

    dataset = load_dataset(
        data, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed, is_image=is_image
    )
    scan_seconds = time.monotonic() - started
    report = audit_dataset(dataset, facts=facts, version_dir=version_dir, kfold_dir=kfold_dir)
    report["summary"]["seconds"]["scan_and_hash"] = round(scan_seconds, 3)
    report["summary"]["seconds"]["total"] = round(time.monotonic() - started, 3)
    return report


def _read_all(root: Path) -> dict[Path, ImageFacts | str]:
    """Facts of every file under a data folder, read by a thread pool before the scan
    asks for them one by one (a CSV manifest's files are read during the scan)."""
    if not root.is_dir():
        return {}
    files = [
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        return dict(zip(files, pool.map(read_facts, files), strict=True))


def _facts_for(samples: list[Sample], known: dict[Path, ImageFacts]) -> list[ImageFacts | str]:
    todo = [s.path for s in samples if s.path not in known]
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        read = dict(zip(todo, pool.map(read_facts, todo), strict=True))
    return [known.get(s.path) or read[s.path] for s in samples]


def audit_dataset(
    dataset: Dataset,
    *,
    facts: dict[Path, ImageFacts] | None = None,
    version_dir: Path | None = None,
    kfold_dir: Path | None = None,
) -> dict:
    """Audit a scanned, split dataset. `facts` reuses hashes a scan already computed."""
    started = time.monotonic()
    samples = [(split, s) for split in ("train", "val", "test") for s in dataset.splits[split]]
    got = _facts_for([s for _, s in samples], facts or {})
    hash_seconds = time.monotonic() - started
    rows, kept, unreadable = [], [], []
    for (split, sample), fact in zip(samples, got, strict=True):
        path = dataset.relative(sample)
        if isinstance(fact, str):
            unreadable.append({"path": path, "split": split, "reason": fact})
            continue
        rows.append(
            {
                "path": path,
                "split": split,
                "label": sample.label,
                "width": fact.width,
                "height": fact.height,
                "grayscale": fact.grayscale,
            }
        )
        kept.append(fact)
    unreadable += [{"path": s.path, "split": None, "reason": s.reason} for s in dataset.skipped]

    t = time.monotonic()
    if kept:
        phash = np.array([f.phash for f in kept], np.uint64)
        thumbs = np.stack([f.thumb for f in kept])
        pairs, compared = near_pairs(phash, thumbs)
    else:
        pairs, compared = np.empty((0, 2), np.int64), 0
    members = [
        duplicates.Member(r["path"], r["split"], r["label"], f.sha256)
        for r, f in zip(rows, kept, strict=True)
    ]
    groups = [
        duplicates.describe_group([members[i] for i in group])
        for group in duplicates.union_groups(len(kept), pairs, [f.sha256 for f in kept])
    ]
    groups.sort(key=lambda g: (-_priority(g["tags"]), -len(g["members"]), g["members"][0]["path"]))
    index_seconds = time.monotonic() - t

    t = time.monotonic()
    suspects: list[dict] = []
    model_info = None
    if version_dir is not None:
        from imgclf.audit.labels import label_suspects

        suspects, model_info = label_suspects(dataset, Path(version_dir))
    elif kfold_dir is not None:
        from imgclf.audit.labels import kfold_suspects

        suspects, model_info = kfold_suspects(dataset, Path(kfold_dir))
    label_seconds = time.monotonic() - t

    train_counts = Counter(s.label for s in dataset.splits["train"])
    report = {
        "root": str(dataset.root),
        "source": dataset.source,
        "classes": dataset.classes,
        "near_duplicates": groups,
        "label_suspects": suspects,
        "label_model": model_info,
        "leakage": duplicates.leakage(members, pairs),
        "class_balance": checks.class_balance(dict(train_counts)),
        "image_checks": checks.image_checks(rows),
        "unreadable": unreadable,
    }
    report["summary"] = _summary(report, rows, compared, pairs)
    report["summary"]["seconds"] = {
        "hash": round(hash_seconds, 3),
        "index": round(index_seconds, 3),
        "labels": round(label_seconds, 3),
        "total": round(time.monotonic() - started, 3),
    }
    report["findings"] = findings(report)
    return report


_PRIORITY = {"cross_split": 3, "cross_label": 2, "exact": 1}


def _priority(tags: list[str]) -> int:
    return max((_PRIORITY.get(t, 0) for t in tags), default=0)


def _summary(report: dict, rows: list[dict], compared: int, pairs: np.ndarray) -> dict:
    groups = report["near_duplicates"]
    tagged = Counter(t for g in groups for t in g["tags"])
    return {
        "images": len(rows),
        "per_split": dict(Counter(r["split"] for r in rows)),
        "classes": len(report["classes"]),
        "duplicate_groups": len(groups),
        "images_in_duplicate_groups": sum(len(g["members"]) for g in groups),
        "exact_groups": tagged["exact"],
        "within_class_groups": tagged["within_class"],
        "cross_label_groups": tagged["cross_label"],
        "cross_split_groups": tagged["cross_split"],
        "test_with_train_copy": len(report["leakage"]["test_with_train_copy"]),
        "val_with_train_copy": len(report["leakage"]["val_with_train_copy"]),
        "label_suspects": len(report["label_suspects"]),
        "unreadable": len(report["unreadable"]),
        "tiny": report["image_checks"]["tiny"]["count"],
        "extreme_aspect": report["image_checks"]["extreme_aspect"]["count"],
        "grayscale": report["image_checks"]["color_modes"]["grayscale"],
        "imbalance_ratio": report["class_balance"]["ratio"],
        "pairs_compared": int(compared),
        "near_pairs": len(pairs),
    }


def findings(report: dict) -> list[dict]:
    """Plain-language findings, each with what to do about it."""
    s = report["summary"]
    out = []

    def add(key: str, title: str, detail: str, action: str) -> None:
        out.append({"id": key, "title": title, "detail": detail, "action": action})

    if s["test_with_train_copy"] or s["val_with_train_copy"]:
        add(
            "leakage",
            "Held-out images have near-copies in training",
            f"{s['test_with_train_copy']} test and {s['val_with_train_copy']} validation "
            "image(s) have an exact or near copy in the training split: their accuracy is "
            "measured on pictures the model has seen.",
            "Move each group into one split (or delete the copies); training with "
            "`leakage: drop` removes the training copies.",
        )
    if s["cross_label_groups"]:
        add(
            "cross_label",
            "The same picture under different labels",
            f"{s['cross_label_groups']} group(s) hold copies of one picture with different labels.",
            "Keep one copy with the right label.",
        )
    if s["within_class_groups"]:
        add(
            "duplicates",
            "Duplicates within a class",
            f"{s['within_class_groups']} group(s) of copies inside one class and split: "
            "they weigh that picture more and add nothing new.",
            "Delete the extra copies unless the repetition is intended.",
        )
    if s["label_suspects"]:
        add(
            "label_suspects",
            "Possible label errors",
            f"{s['label_suspects']} image(s) look more like another class than their own.",
            "Look at the top of the list first; fix the labels that are wrong.",
        )
    if report["class_balance"]["imbalanced"]:
        add(
            "imbalance",
            "Imbalanced classes",
            f"The largest training class has {s['imbalance_ratio']}x the images of the smallest.",
            "Add images to small classes; training weights classes (class_weight: auto).",
        )
    if s["tiny"] or s["extreme_aspect"]:
        add(
            "shapes",
            "Tiny or extreme-aspect images",
            f"{s['tiny']} image(s) under {checks.TINY_SIDE} px on a side, {s['extreme_aspect']} "
            f"with a side ratio above {checks.EXTREME_ASPECT}: resizing blurs or squashes them.",
            "Check them: thumbnails, icons or banners are often not what the class means.",
        )
    modes = report["image_checks"]["color_modes"]
    if modes["mixed"]:
        add(
            "color_mix",
            "Grayscale and colour images mixed",
            f"{modes['grayscale']} grayscale and {modes['color']} colour images; grayscale "
            f"per class: {modes['grayscale_per_class']}.",
            "If one class is mostly grayscale the model may learn colour, not content.",
        )
    if s["unreadable"]:
        add(
            "unreadable",
            "Unreadable files",
            f"{s['unreadable']} file(s) cannot be decoded; training skips them.",
            "Delete or re-export them as JPEG/PNG.",
        )
    return out


def drop_leaks(dataset: Dataset, report: dict) -> list[str]:
    """`leakage: drop`: remove the training copies of validation/test images from `dataset`.

    The held-out splits stay as they are (they may be the user's own test set); a class
    left with no training image is an error, as with any too-small class.
    """
    drop = set(report["leakage"]["train_copies_of_held_out"])
    if not drop:
        return []
    kept = [s for s in dataset.splits["train"] if dataset.relative(s) not in drop]
    missing = sorted(set(dataset.classes) - {s.label for s in kept})
    if missing:
        raise DataError(
            f"after dropping the training copies of held-out images, class(es) "
            f"{', '.join(missing)} have no training image left; use `leakage: warn` or add images"
        )
    dataset.splits["train"] = kept
    return sorted(drop)
