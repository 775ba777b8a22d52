"""Data discovery, checks, stratified reproducible splits, skipped files, class weights."""

import json
from collections import Counter
from pathlib import Path

import pytest

from imgclf.errors import DataError
from imgclf.trainer.data import class_weights, load_dataset
from imgclf.trainer.preprocessing import image_problem, make_preprocess
from tests.images import png, rgb_array

PRE = make_preprocess(32)


def is_image(path: Path):
    return image_problem(PRE, path)


def write_class(root: Path, label: str, count: int, start: int = 0) -> None:
    folder = root / label
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + count):
        (folder / f"{i}.png").write_bytes(png(rgb_array(8, 8, seed=i)))


def load(root, **kw):
    args = {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 7, "is_image": is_image}
    args.update(kw)
    return load_dataset(root, **args)


def test_class_folders_are_split_stratified(tmp_path):
    write_class(tmp_path, "a", 20)
    write_class(tmp_path, "b", 10)
    ds = load(tmp_path)
    assert ds.classes == ["a", "b"]
    counts = ds.counts()
    assert counts["val"] == {"a": 4, "b": 2}
    assert counts["test"] == {"a": 4, "b": 2}
    assert counts["train"] == {"a": 12, "b": 6}
    all_paths = [s.path for split in ds.splits.values() for s in split]
    assert len(all_paths) == len(set(all_paths)) == 30


def test_split_is_reproducible_and_seeded(tmp_path):
    write_class(tmp_path, "a", 20)
    write_class(tmp_path, "b", 20)
    first, again = load(tmp_path).split_manifest(), load(tmp_path).split_manifest()
    assert first == again
    other = load(tmp_path, seed=8).split_manifest()
    assert other["test"] != first["test"]


def test_split_file_is_written(tmp_path):
    write_class(tmp_path / "d", "a", 5)
    write_class(tmp_path / "d", "b", 5)
    ds = load(tmp_path / "d")
    ds.write_splits(tmp_path / "splits.json")
    saved = json.loads((tmp_path / "splits.json").read_text())
    assert saved["classes"] == ["a", "b"]
    assert sorted(saved["train"] + saved["val"] + saved["test"]) == sorted(
        [f"{c}/{i}.png", c] for c in "ab" for i in range(5)
    )


def test_given_splits_are_used_as_given(tmp_path):
    write_class(tmp_path / "train", "a", 6)
    write_class(tmp_path / "train", "b", 6)
    write_class(tmp_path / "val", "a", 2, start=100)
    write_class(tmp_path / "val", "b", 2, start=100)
    ds = load(tmp_path)
    assert ds.source == "split-folders"
    assert ds.counts()["val"] == {"a": 2, "b": 2}
    assert all("/val/" in str(s.path) for s in ds.splits["val"])
    # test/ is missing, so it is carved from train.
    assert ds.counts()["test"] == {"a": 1, "b": 1}
    assert sum(ds.counts()["train"].values()) == 10


def test_given_split_with_unknown_class_is_refused(tmp_path):
    write_class(tmp_path / "train", "a", 6)
    write_class(tmp_path / "train", "b", 6)
    write_class(tmp_path / "val", "c", 2)
    with pytest.raises(DataError, match="val/ has classes that train/ lacks: c"):
        load(tmp_path)


def test_csv_manifest(tmp_path):
    write_class(tmp_path / "imgs", "x", 6)
    write_class(tmp_path / "imgs", "y", 6)
    rows = ["path,label"] + [f"imgs/{c}/{i}.png,{c.upper()}" for c in "xy" for i in range(6)]
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    ds = load(tmp_path / "m.csv")
    assert ds.classes == ["X", "Y"]
    assert ds.source == "csv"
    assert sum(len(s) for s in ds.splits.values()) == 12


def test_csv_with_bad_row(tmp_path):
    (tmp_path / "m.csv").write_text("path,label\nonly-a-path\n")
    with pytest.raises(DataError, match=r"m\.csv:2"):
        load(tmp_path / "m.csv")


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "no images found"),
        (lambda root: write_class(root, "only", 5), "only one class \\('only'\\)"),
        (
            lambda root: (write_class(root, "a", 5), write_class(root, "b", 2)),
            "'b' has 2; each class needs at least 3",
        ),
    ],
)
def test_bad_data_fails_before_training(tmp_path, setup, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=message):
        load(root)


def test_corrupt_and_non_image_files_are_skipped_and_listed(tmp_path):
    write_class(tmp_path, "a", 5)
    write_class(tmp_path, "b", 5)
    (tmp_path / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    (tmp_path / "b" / "notes.txt").write_text("hello")
    (tmp_path / "b" / "empty.png").write_bytes(b"")
    (tmp_path / "b" / ".DS_Store").write_bytes(b"\0\0")
    ds = load(tmp_path)
    skipped = {s.path: s.reason for s in ds.skipped}
    assert set(skipped) == {"a/broken.jpg", "b/notes.txt", "b/empty.png"}
    assert skipped["b/empty.png"] == "empty file"
    assert sum(len(s) for s in ds.splits.values()) == 10
    assert ds.summary()["skipped"] == 3
    assert any("3 file(s) skipped" in w and "b/notes.txt" in w for w in ds.warnings)


def test_all_files_corrupt_is_an_error(tmp_path):
    for label in "ab":
        (tmp_path / label).mkdir()
        (tmp_path / label / "x.jpg").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"class folders .* \(a, b\) hold no usable images") as exc:
        load(tmp_path)
    assert "a/x.jpg (not a decodable" in str(exc.value)


def test_a_class_folder_without_images_is_an_error_unless_allowed(tmp_path):
    write_class(tmp_path, "a", 6)
    write_class(tmp_path, "b", 6)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"without usable images: c .*allow_missing_classes=true"):
        load(tmp_path)
    ds = load(tmp_path, allow_missing_classes=True)
    assert ds.classes == ["a", "b"] and ds.empty_classes == ["c"]
    summary = ds.summary()
    assert summary["empty_classes"] == ["c"]
    assert summary["skipped_files"][0]["path"] == "c/readme.txt"
    assert any("left out: c" in w for w in ds.warnings)
    assert Path(summary["root"]).is_absolute()


def test_the_data_root_is_stored_absolute(tmp_path, monkeypatch):
    write_class(tmp_path / "d", "a", 5)
    write_class(tmp_path / "d", "b", 5)
    monkeypatch.chdir(tmp_path)
    assert load("d").summary()["root"] == str(tmp_path / "d")


def test_fingerprint_changes_with_the_files(tmp_path):
    write_class(tmp_path, "a", 5)
    write_class(tmp_path, "b", 5)
    before = load(tmp_path).fingerprint
    assert before == load(tmp_path).fingerprint
    write_class(tmp_path, "b", 1, start=50)
    assert load(tmp_path).fingerprint != before


def test_imbalance_warns_and_auto_class_weights(tmp_path):
    write_class(tmp_path, "big", 30)
    write_class(tmp_path, "small", 10)
    ds = load(tmp_path)
    assert any("imbalanced" in w for w in ds.warnings)
    weights = class_weights(ds, "auto")
    counts = Counter(s.label for s in ds.splits["train"])
    assert weights[1] / weights[0] == pytest.approx(counts["big"] / counts["small"])
    assert class_weights(ds, "none") is None


def test_balanced_data_gets_no_auto_weights(tmp_path):
    write_class(tmp_path, "a", 10)
    write_class(tmp_path, "b", 10)
    ds = load(tmp_path)
    assert class_weights(ds, "auto") is None
    assert class_weights(ds, "balanced") == {0: 1.0, 1: 1.0}
    assert not ds.warnings
