"""Finding the labelled images, checking them, and splitting them reproducibly.

Three input forms:
  DIR/<class>/<image>                        split here (stratified, seeded)
  DIR/train/<class>/... [val/, test/]        used as given; a missing split is carved from train
  manifest.csv with rows `path,label`        paths relative to the CSV's folder

No TensorFlow here: decoding happens in `preprocessing`, which `scan_images` calls,
so the one function that training uses is also the one that decides which files
are usable.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from imgclf.config import IMBALANCE_RATIO
from imgclf.errors import DataError

SPLITS = ("train", "val", "test")
# The reason a file is skipped when its bytes do not decode (training's scan, the audit).
NOT_DECODABLE = "not a decodable JPEG/PNG/GIF/BMP image"


def read_image_file(path: Path) -> bytes | str:
    """The file's bytes, or why there are none to decode (a short reason): the prelude
    of every check that decides whether a file is a usable image."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    return data if data else "empty file"


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str


@dataclass
class Skipped:
    path: str
    reason: str


@dataclass
class Dataset:
    """The usable images of a run, split, with what was skipped and why."""

    root: Path
    classes: list[str]
    splits: dict[str, list[Sample]]
    skipped: list[Skipped] = field(default_factory=list)
    fingerprint: str = ""
    source: str = "folders"
    warnings: list[str] = field(default_factory=list)
    empty_classes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            split: dict(sorted(Counter(s.label for s in samples).items()))
            for split, samples in self.splits.items()
        }

    def summary(self) -> dict:
        return {
            "root": str(self.root),
            "source": self.source,
            "classes": self.classes,
            "counts": self.counts(),
            "total": sum(len(s) for s in self.splits.values()),
            "skipped": len(self.skipped),
            "skipped_files": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "empty_classes": self.empty_classes,
            "fingerprint": self.fingerprint,
            "warnings": self.warnings,
        }

    def relative(self, sample: Sample) -> str:
        try:
            return sample.path.relative_to(self.root).as_posix()
        except ValueError:
            return str(sample.path)

    def split_manifest(self) -> dict[str, list[list[str]]]:
        """The file list of each split, saved with the run so it can be reproduced."""
        return {
            split: [[self.relative(s), s.label] for s in samples]
            for split, samples in self.splits.items()
        }

    def write_splits(self, path: Path) -> None:
        payload = {"root": str(self.root), "classes": self.classes, **self.split_manifest()}
        path.write_text(json.dumps(payload, indent=1), encoding="utf-8")


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files_under(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def _collect_folders(folder: Path) -> list[Sample]:
    samples = []
    for class_dir in _class_dirs(folder):
        samples.extend(Sample(path, class_dir.name) for path in _files_under(class_dir))
    return samples


def _collect_csv(manifest: Path) -> list[Sample]:
    base = manifest.parent
    samples = []
    with manifest.open(newline="", encoding="utf-8") as handle:
        for lineno, row in enumerate(csv.reader(handle), start=1):
            if not row or all(not cell.strip() for cell in row):
                continue
            if lineno == 1 and [c.strip().lower() for c in row[:2]] == ["path", "label"]:
                continue
            if len(row) < 2 or not row[0].strip() or not row[1].strip():
                raise DataError(f"{manifest}:{lineno}: expected 'path,label', got {row!r}")
            path = Path(row[0].strip())
            samples.append(Sample(path if path.is_absolute() else base / path, row[1].strip()))
    return samples


def fingerprint(paths: Iterable[Path], root: Path) -> str:
    """A hash of relative paths and sizes: cheap, and changes when files are added or replaced."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            rel = str(path)
        size = path.stat().st_size if path.exists() else -1
        digest.update(f"{rel}\t{size}\n".encode())
    return digest.hexdigest()


def stratified_split(
    samples: list[Sample], fractions: dict[str, float], seed: int
) -> dict[str, list[Sample]]:
    """Split each class separately so every split keeps the class proportions.

    Every split with a positive fraction gets at least one image of every class,
    and `train` keeps the rest; `check_class_sizes` guarantees there are enough.
    """
    rng = random.Random(seed)
    by_class: dict[str, list[Sample]] = {}
    for sample in sorted(samples, key=lambda s: (s.label, str(s.path))):
        by_class.setdefault(sample.label, []).append(sample)
    out: dict[str, list[Sample]] = {"train": [], **{name: [] for name in fractions}}
    for label in sorted(by_class):
        items = by_class[label][:]
        rng.shuffle(items)
        start = 0
        for name, fraction in fractions.items():
            count = max(1, round(len(items) * fraction)) if fraction > 0 else 0
            out[name].extend(items[start : start + count])
            start += count
        out["train"].extend(items[start:])
    return out


def require_per_class(
    samples: Sequence[Sample], need: int, *, purpose: str, images: str, remedy: str
) -> None:
    """DataError naming every class with fewer than `need` samples, before any training."""
    counts = Counter(s.label for s in samples)
    small = {label: n for label, n in counts.items() if n < need}
    if small:
        listing = ", ".join(f"{label!r} has {n}" for label, n in sorted(small.items()))
        raise DataError(
            f"too few images {purpose}: {listing}; each class needs at least {need} "
            f"{images}. {remedy}"
        )


def check_class_sizes(samples: list[Sample], held_out: int) -> None:
    require_per_class(
        samples,
        held_out + 1,
        purpose="to split",
        images="usable images (one per split)",
        remedy="Add images or remove the class.",
    )


def check_data_path(data: str | Path) -> Path:
    """The cheap checks, done before TensorFlow's start-up: the path exists and has a form
    we read (a folder, or a .csv manifest)."""
    root = Path(data).expanduser()
    if not root.exists():
        raise DataError(
            f"data path {root} does not exist: pass a folder with one sub-folder of images "
            "per class, a folder with train/ (val/, test/), or a .csv manifest"
        )
    if root.is_file() and root.suffix.lower() != ".csv":
        raise DataError(f"data path {root} is a file but not a .csv manifest")
    return root


def _skipped_listing(skipped: Sequence[Skipped], shown: int = 5) -> str:
    names = ", ".join(f"{s.path} ({s.reason})" for s in skipped[:shown])
    more = len(skipped) - shown
    return names + (f" and {more} more" if more > 0 else "")


def _check_classes(
    classes: list[str], where: str, declared: list[str], skipped: Sequence[Skipped]
) -> None:
    if not classes and declared:
        raise DataError(
            f"the class folders of {where} ({', '.join(declared)}) hold no usable images"
            + (f"; skipped: {_skipped_listing(skipped)}" if skipped else "")
            + ". Put JPEG/PNG/GIF/BMP images in each class folder"
        )
    if not classes:
        raise DataError(f"no images found in {where}: expected one sub-folder of images per class")
    if len(classes) < 2:
        raise DataError(
            f"only one class ({classes[0]!r}) found in {where}: a classifier needs at least 2"
        )


def load_dataset(
    data: str | Path,
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    is_image: Callable[[Path], str | None],
    allow_missing_classes: bool = False,
) -> Dataset:
    """Discover, check and split the data before any training starts.

    `is_image(path)` returns None for a usable image or the reason it is not; it is
    the trainer's own decoder, so a file accepted here cannot fail later. A class
    folder without usable images is an error (a model with one class fewer than the
    person expects is worse than no model) unless `allow_missing_classes`.
    """
    root = check_data_path(data).resolve()
    declared: list[str] = []
    if root.is_file():
        given = {"train": _collect_csv(root)}
        declared = sorted({s.label for s in given["train"]})
        source, base = "csv", root.parent
    else:
        split_dirs = {name: root / name for name in SPLITS if (root / name).is_dir()}
        train_dir = split_dirs.get("train", root)
        declared = [p.name for p in _class_dirs(train_dir)]
        if "train" in split_dirs:
            given = {name: _collect_folders(path) for name, path in split_dirs.items()}
            source = "split-folders"
        else:
            given = {"train": _collect_folders(root)}
            source = "folders"
        base = root

    all_paths = [s.path for samples in given.values() for s in samples]
    usable: dict[str, list[Sample]] = {}
    skipped: list[Skipped] = []
    for split, samples in given.items():
        usable[split] = []
        for sample in samples:
            reason = "file not found" if not sample.path.is_file() else is_image(sample.path)
            if reason is None:
                usable[split].append(sample)
            else:
                try:
                    rel = sample.path.relative_to(base).as_posix()
                except ValueError:
                    rel = str(sample.path)
                skipped.append(Skipped(rel, reason))

    classes = sorted({s.label for s in usable["train"]})
    _check_classes(classes, str(root), declared, skipped)
    empty = sorted(set(declared) - set(classes))
    if empty and not allow_missing_classes:
        raise DataError(
            f"class folder(s) without usable images: {', '.join(empty)} (in {root}"
            + (f"; skipped: {_skipped_listing(skipped)}" if skipped else "")
            + "): add images, remove the folder, or set allow_missing_classes=true to train "
            "without them"
        )
    for split in ("val", "test"):
        extra = sorted({s.label for s in usable.get(split, [])} - set(classes))
        if extra:
            raise DataError(f"{split}/ has classes that train/ lacks: {', '.join(extra)}")

    fractions = {
        name: fraction
        for name, fraction in (("val", val_fraction), ("test", test_fraction))
        if name not in usable
    }
    check_class_sizes(usable["train"], held_out=len(fractions))
    carved = stratified_split(usable["train"], fractions, seed)
    splits = {name: usable.get(name) or carved.get(name, []) for name in SPLITS}
    splits["train"] = carved["train"]
    dataset = Dataset(
        root=base,
        classes=classes,
        splits=splits,
        skipped=skipped,
        fingerprint=fingerprint(all_paths, base),
        source=source,
        empty_classes=empty,
    )
    if empty:
        dataset.warnings.append(
            f"class folder(s) without usable images left out: {', '.join(empty)}"
        )
    counts = Counter(s.label for s in splits["train"])
    ratio = max(counts.values()) / max(1, min(counts.values()))
    if ratio > IMBALANCE_RATIO:
        dataset.warnings.append(
            f"classes are imbalanced: the largest training class has {ratio:.1f}x the images "
            f"of the smallest ({dict(sorted(counts.items()))})"
        )
    if skipped:
        dataset.warnings.append(
            f"{len(skipped)} file(s) skipped as unreadable or not images: "
            + _skipped_listing(skipped)
        )
    return dataset


def class_weights(dataset: Dataset, mode: str) -> dict[int, float] | None:
    """'balanced' weights n_samples / (n_classes * n_class); 'auto' only past IMBALANCE_RATIO."""
    counts = Counter(s.label for s in dataset.splits["train"])
    if mode == "none":
        return None
    ratio = max(counts.values()) / max(1, min(counts.values()))
    if mode == "auto" and ratio <= IMBALANCE_RATIO:
        return None
    total = sum(counts.values())
    k = len(dataset.classes)
    return {i: total / (k * counts[label]) for i, label in enumerate(dataset.classes)}
