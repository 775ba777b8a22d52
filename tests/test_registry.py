"""Labels, rollback, retention, the gate's decision rule, and the job stores' atomic steps."""

import json

import pytest

from imgclf import registry
from imgclf.errors import InvalidInput, RepositoryError
from imgclf.jobs.store import SqliteJobStore, open_store
from imgclf.trainer.promotion import GateRules, decide


def make_versions(root, name, count):
    for v in range(1, count + 1):
        (root / name / str(v)).mkdir(parents=True)


def test_labels_are_written_atomically_and_validated(tmp_path):
    make_versions(tmp_path, "m", 2)
    assert registry.set_alias(tmp_path, "m", "stable", 1) == {"stable": 1}
    assert registry.set_alias(tmp_path, "m", "canary", 2) == {"stable": 1, "canary": 2}
    data = json.loads((tmp_path / "m/labels.json").read_text())
    assert data["labels"] == {"stable": 1, "canary": 2}
    assert [h["version"] for h in data["history"]] == [1, 2]
    with pytest.raises(RepositoryError, match="no version 7"):
        registry.set_alias(tmp_path, "m", "stable", 7)
    with pytest.raises(InvalidInput, match="invalid label"):
        registry.set_alias(tmp_path, "m", "Bad Label", 1)
    assert not list((tmp_path / "m").glob(".labels.json.*"))


def test_rollback_walks_back_through_stable_history(tmp_path):
    make_versions(tmp_path, "m", 3)
    for v in (1, 2, 3):
        registry.set_alias(tmp_path, "m", "stable", v)
    assert registry.rollback(tmp_path, "m") == 2
    assert registry.rollback(tmp_path, "m") == 1
    with pytest.raises(RepositoryError, match="no earlier version"):
        registry.rollback(tmp_path, "m")
    assert registry.aliases(tmp_path, "m") == {"stable": 1}


def test_retention_keeps_newest_and_labelled(tmp_path):
    make_versions(tmp_path, "m", 6)
    registry.set_alias(tmp_path, "m", "stable", 2)
    deleted = registry.apply_retention(tmp_path, "m", keep=2)
    assert deleted == [1, 3, 4]
    assert sorted(int(p.name) for p in (tmp_path / "m").iterdir() if p.name.isdigit()) == [2, 5, 6]


def test_resolve_prefers_stable_then_latest(tmp_path):
    make_versions(tmp_path, "m", 3)
    assert registry.repository_version(tmp_path, "m") == 3
    registry.set_alias(tmp_path, "m", "stable", 2)
    assert registry.repository_version(tmp_path, "m") == 2
    assert registry.repository_version(tmp_path, "m", version=1) == 1
    with pytest.raises(RepositoryError, match="no label 'canary'"):
        registry.repository_version(tmp_path, "m", alias="canary")


@pytest.mark.parametrize(
    ("policy", "specific", "aliases", "served", "default"),
    [
        ("latest", (), {}, {4}, 4),
        ("latest", (), {"stable": 2, "canary": 3}, {2, 3, 4}, 2),
        ("labelled", (), {}, {4}, 4),
        ("labelled", (), {"stable": 2, "canary": 3}, {2, 3}, 2),
        ("labelled", (), {"canary": 3}, {3}, 3),
        ("specific", (1, 3, 9), {"stable": 2}, {1, 3}, 3),
        ("specific", (1,), {}, {1}, 1),
    ],
)
def test_version_policies_and_resolution(policy, specific, aliases, served, default):
    versions = [1, 2, 3, 4]
    assert registry.policy_versions(versions, aliases, policy, specific) == served
    assert registry.resolve_version("m", served, aliases) == default
    for version in served:
        assert registry.resolve_version("m", served, aliases, version=version) == version
    with pytest.raises(RepositoryError, match=r"no version 9 of model .m. \(versions: "):
        registry.resolve_version("m", served, aliases, version=9)
    if "canary" in aliases:
        assert registry.resolve_version("m", served, aliases, alias="canary") == 3
    with pytest.raises(RepositoryError, match="no label 'x'"):
        registry.resolve_version("m", served, aliases, alias="x")


def test_resolution_quotes_only_a_prefix_of_long_names():
    with pytest.raises(RepositoryError) as info:
        registry.resolve_version("n" * 5000, set(), {})
    assert len(str(info.value)) < 120


def metrics(accuracy, recalls):
    return {
        "accuracy": accuracy,
        "macro_f1": accuracy,
        "per_class": {k: {"recall": v} for k, v in recalls.items()},
    }


def test_gate_rules():
    classes = ["a", "b"]
    rules = GateRules(tolerance=0.005, max_recall_drop=0.1, min_over_chance=0.15)
    first = decide(metrics(0.9, {"a": 0.9, "b": 0.9}), None, classes, rules)
    assert first["decision"] == "promote"
    chance = decide(metrics(0.6, {"a": 0.6, "b": 0.6}), None, classes, rules)
    assert chance["decision"] == "reject" and "chance" in chance["reasons"][0]
    stable = metrics(0.90, {"a": 0.9, "b": 0.9})
    assert (
        decide(metrics(0.897, {"a": 0.9, "b": 0.894}), stable, classes, rules)["decision"]
        == "promote"
    )  # within 0.5 points
    worse = decide(metrics(0.88, {"a": 0.9, "b": 0.86}), stable, classes, rules)
    assert worse["decision"] == "reject" and "below stable" in worse["reasons"][0]
    uneven = decide(metrics(0.92, {"a": 1.0, "b": 0.75}), stable, classes, rules)
    assert uneven["decision"] == "reject" and "'b'" in uneven["reasons"][0]


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_store_transitions_and_leases(kind, tmp_path, redis_url):
    store = (
        SqliteJobStore(tmp_path / "jobs.sqlite")
        if kind == "sqlite"
        else open_store(redis_url, prefix=f"s{tmp_path.name[-8:]}")
    )
    record = {"id": "j1", "status": "queued", "n": 0}
    created, fresh = store.create(record, "key-1")
    assert fresh and created["id"] == "j1"
    again, fresh = store.create({"id": "j2", "status": "queued"}, "key-1")
    assert not fresh and again["id"] == "j1"
    assert store.transition("j1", ["queued"], "running") is not None
    assert store.transition("j1", ["queued"], "cancelled") is None
    assert store.get("j1")["status"] == "running"
    assert store.update("j1", n=5)["n"] == 5
    assert store.acquire_lease("j1", "w1", 30)
    assert not store.acquire_lease("j1", "w2", 30)
    assert store.acquire_lease("j1", "w1", 30)  # renew
    assert store.lease_alive("j1")
    store.release_lease("j1", "w1")
    assert not store.lease_alive("j1")
    assert [r["id"] for r in store.list()] == ["j1"]
