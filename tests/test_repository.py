"""Repository layout and atomic publishing."""

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from imgclf import repository
from imgclf.errors import RepositoryError


def staged(model_dir: Path, name: str, marker: str) -> Path:
    folder = repository.new_staging_dir(model_dir, name)
    (folder / "saved_model.pb").write_text(marker)
    return folder


def test_versions_ignore_staging_and_junk(tmp_path):
    staged(tmp_path, "m", "x")
    (tmp_path / "m" / "notes").mkdir()
    (tmp_path / "m" / "007").mkdir()
    (tmp_path / "m" / "3").mkdir()
    assert repository.list_versions(tmp_path, "m") == [3]
    assert repository.list_models(tmp_path) == ["m"]
    with pytest.raises(RepositoryError, match="no published version"):
        repository.latest_version(tmp_path, "other")


def test_publish_numbers_increase_and_content_moves(tmp_path):
    first = repository.publish(staged(tmp_path, "m", "one"), tmp_path, "m")
    second = repository.publish(staged(tmp_path, "m", "two"), tmp_path, "m")
    assert (first, second) == (1, 2)
    assert (tmp_path / "m" / "2" / "saved_model.pb").read_text() == "two"
    assert not [p for p in (tmp_path / "m").iterdir() if p.name.startswith(".staging")]


def test_before_rename_sees_the_chosen_version(tmp_path):
    seen = []

    def finalize(folder, version):
        seen.append(version)
        (folder / "card").write_text(str(version))

    version = repository.publish(staged(tmp_path, "m", "x"), tmp_path, "m", finalize)
    assert seen == [version]
    assert (tmp_path / "m" / str(version) / "card").read_text() == str(version)


def test_concurrent_threads_get_distinct_versions(tmp_path):
    folders = [staged(tmp_path, "m", str(i)) for i in range(8)]
    results = []
    threads = [
        threading.Thread(target=lambda f=f: results.append(repository.publish(f, tmp_path, "m")))
        for f in folders
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 9))
    contents = {(tmp_path / "m" / str(v) / "saved_model.pb").read_text() for v in results}
    assert contents == {str(i) for i in range(8)}


def test_concurrent_processes_get_distinct_versions(tmp_path):
    script = (
        "import sys; from pathlib import Path; from imgclf import repository\n"
        "root = Path(sys.argv[1])\n"
        "for i in range(5):\n"
        "    f = repository.new_staging_dir(root, 'm')\n"
        "    (f / 'saved_model.pb').write_text(sys.argv[2] + str(i))\n"
        "    print(repository.publish(f, root, 'm'))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), tag], stdout=subprocess.PIPE, text=True
        )
        for tag in "ab"
    ]
    numbers = [int(n) for p in procs for n in p.communicate(timeout=60)[0].split()]
    assert sorted(numbers) == list(range(1, 11))


def test_publish_refuses_foreign_staging(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(ValueError, match="not inside"):
        repository.publish(outside, tmp_path, "m")


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "with space", ".hidden", "x" * 65, "é"])
def test_model_names_are_validated(bad):
    with pytest.raises(ValueError, match="invalid model name"):
        repository.validate_model_name(bad)


def test_good_model_names():
    for good in ["shapes", "cats-v2", "A_1"]:
        assert repository.validate_model_name(good) == good


def test_only_ascii_digit_folders_are_versions(tmp_path):
    from imgclf import repository

    for folder in ("1", "12", "\uff19", "\u0669", "01", "1a", "9" * 19):
        (tmp_path / "m" / folder).mkdir(parents=True)
    assert repository.list_versions(tmp_path, "m") == [1, 12]


def test_labels_json_with_wrong_types_is_a_repository_error(tmp_path):
    import pytest

    from imgclf import registry
    from imgclf.errors import RepositoryError

    (tmp_path / "m").mkdir()
    for text in (
        '{"labels": {"stable": "one"}}',
        "[]",
        "null",
        '{"labels": []}',
        '{"labels": {"stable": true}}',
    ):
        (tmp_path / "m" / "labels.json").write_text(text)
        with pytest.raises(RepositoryError, match=r"labels\.json"):
            registry.aliases(tmp_path, "m")
