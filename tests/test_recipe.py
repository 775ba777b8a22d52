"""The recipe follows the starting point; BatchNorm statistics come from the data when
weights are random; hardware choices are detected; a refused run still explains itself."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from imgclf import contract, repository
from imgclf.config import parse_config
from imgclf.errors import ConfigError, Rejected
from imgclf.trainer import hardware
from imgclf.trainer.data import Sample
from imgclf.trainer.diagnosis import explain_refusal
from imgclf.trainer.experiment import mixed_order
from imgclf.trainer.model import (
    FINE_TUNE,
    FROM_SCRATCH,
    augmentation_for,
    batchnorm_layers,
    build_classifier,
    estimate_bn_statistics,
    freeze_base,
    recipe_for,
    unfreeze_all,
    unfreeze_top,
)
from imgclf.trainer.training import Hooks, train_phases


def _tensors(n: int = 16, size: int = 32, seed: int = 0) -> tf.data.Dataset:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    x = rng.normal(0, 20, (n, size, size, 3)) + np.where(labels, 40, -40)[:, None, None, None]
    y = np.eye(2, dtype="float32")[labels]
    return tf.data.Dataset.from_tensor_slices((x.astype("float32"), y)).batch(8)


def test_statistics_batches_mix_the_classes_of_a_class_sorted_split():
    # Splits list samples class by class; statistics estimated from one-class batches
    # described activations inference never sees (validation loss 10-60 on patches).
    split = [Sample(Path(f"{label}/{i}.png"), label) for label in "abc" for i in range(16)]
    mixed = mixed_order(split, seed=42)
    assert sorted(mixed, key=str) == sorted(split, key=str)
    assert mixed == mixed_order(split, seed=42)
    batches = [mixed[i : i + 16] for i in range(0, len(mixed), 16)]
    assert all(len({s.label for s in batch}) == 3 for batch in batches)


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"weights": "none"}, FROM_SCRATCH),
        ({"weights": "imagenet"}, FINE_TUNE),
        ({"weights": "/w/resnet.h5"}, FINE_TUNE),
        ({"weights": "none", "recipe": "fine_tune"}, FINE_TUNE),
        ({"weights": "imagenet", "recipe": "from_scratch"}, FROM_SCRATCH),
    ],
)
def test_recipe_follows_the_starting_point(document, expected):
    assert recipe_for(parse_config(document)) == expected


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"weights": "none"}, "shift"),
        ({"weights": "imagenet"}, "standard"),
        ({"weights": "none", "recipe": "fine_tune"}, "standard"),
        ({"weights": "imagenet", "recipe": "from_scratch"}, "shift"),
        ({"weights": "none", "augmentation": "light"}, "light"),
        ({"weights": "imagenet", "augmentation": "none"}, "none"),
    ],
)
def test_augmentation_follows_the_recipe_unless_named(document, expected):
    assert augmentation_for(parse_config(document)) == expected


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("recipe", "adamw", "'auto', 'fine_tune', 'from_scratch'"),
        ("warmup_epochs", -1, "int >= 0 and <= 100"),
        ("bn_statistics_images", 8, "int >= 16"),
        ("precision", "fp8", "'auto', 'float32', 'mixed_bfloat16', 'mixed_float16'"),
        ("jit_compile", "yes", "'auto', 'on', 'off'"),
        ("devices", 65, "int >= 0 and <= 64"),
    ],
)
def test_recipe_fields_name_field_value_and_range(field, value, allowed):
    with pytest.raises(ConfigError) as info:
        parse_config({field: value})
    message = str(info.value)
    assert f"'{field}'" in message and repr(value) in message and allowed in message


def test_estimated_statistics_are_the_data_statistics():
    clf = build_classifier(
        2, image_size=32, weights="none", dropout=0.0, l2=0.0, recipe=FROM_SCRATCH
    )
    first = clf.base.get_layer("conv1_bn")
    np.testing.assert_array_equal(first.moving_mean.numpy(), 0.0)
    ds = _tensors()
    assert estimate_bn_statistics(clf, ds) == 16
    conv = keras.Model(clf.base.input, clf.base.get_layer("conv1_conv").output)
    batches = [conv(x).numpy() for x, _ in ds]
    expected_mean = np.mean([b.mean(axis=(0, 1, 2)) for b in batches], axis=0)
    expected_var = np.mean([b.var(axis=(0, 1, 2)) for b in batches], axis=0)
    np.testing.assert_allclose(first.moving_mean.numpy(), expected_mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(first.moving_variance.numpy(), expected_var, rtol=1e-3, atol=1e-3)
    # the deepest layer too: its inputs are what the layers below produce in training mode
    last = clf.base.get_layer("conv5_block3_3_bn")
    deep = keras.Model(clf.base.input, clf.base.get_layer("conv5_block3_3_conv").output)
    batches = [deep(x, training=True).numpy() for x, _ in ds]
    expected_mean = np.mean([b.mean(axis=(0, 1, 2)) for b in batches], axis=0)
    np.testing.assert_allclose(last.moving_mean.numpy(), expected_mean, rtol=1e-3, atol=1e-4)
    assert all(layer.momentum == 0.99 for layer in batchnorm_layers(clf.base))


def test_batchnorm_mode_follows_the_recipe():
    """from_scratch: fit-time calls normalise with batch statistics; fine_tune: never."""
    x = next(iter(_tensors()))[0]
    scratch = build_classifier(
        2, image_size=32, weights="none", dropout=0.0, l2=0.0, recipe=FROM_SCRATCH
    )
    unfreeze_all(scratch)
    assert not np.allclose(scratch.model(x, training=True), scratch.model(x, training=False))
    tuned = build_classifier(2, image_size=32, weights="none", dropout=0.0, l2=0.0)
    for phase in (lambda: freeze_base(tuned), lambda: unfreeze_top(tuned, "conv4")):
        phase()
        np.testing.assert_allclose(
            tuned.model(x, training=True), tuned.model(x, training=False), rtol=1e-6
        )


def test_from_scratch_trains_everything_and_ends_with_fresh_statistics(tmp_path):
    config = parse_config(
        {
            "image_size": 32,
            "weights": "none",
            "batch_size": 8,
            "head_epochs": 1,
            "fine_tune_epochs": 1,
            "warmup_epochs": 1,
            "augmentation": "none",
            "early_stopping_patience": 0,
        }
    )
    clf = build_classifier(
        2, image_size=32, weights="none", dropout=0.0, l2=0.0, recipe=FROM_SCRATCH
    )
    conv1 = clf.base.get_layer("conv1_conv").kernel
    gamma = clf.base.get_layer("conv2_block1_1_bn").gamma
    conv1_before, gamma_before = conv1.numpy().copy(), gamma.numpy().copy()
    ds = _tensors()
    events: list[dict] = []
    state = train_phases(
        clf,
        config,
        train_ds=ds,
        val_ds=ds,
        eval_train_ds=ds,
        steps=2,
        checkpoint_dir=tmp_path / "ckpt",
        class_weight=None,
        hooks=Hooks(on_progress=events.append),
    )
    assert [h["phase"] for h in state.history] == [1, 1]
    # every progress event, the epoch's last included, names what trains
    ends = [e for e in events if e["stage"] == "train" and e["batch"] == e["steps"]]
    assert len(ends) >= 2
    assert {e.get("phase_name") for e in events if e["stage"] == "train"} == {"whole network"}
    assert all("val_accuracy" in h for h in state.history)
    assert state.phase == 3
    assert not np.array_equal(conv1.numpy(), conv1_before)  # the stem learns too
    assert not np.array_equal(gamma.numpy(), gamma_before)  # and BatchNorm's scale
    # warmup reaches the peak at the end of the first epoch, then the cosine decays
    assert state.history[0]["learning_rate"] == pytest.approx(config.learning_rate)
    assert state.history[1]["learning_rate"] < config.learning_rate / 10
    layers = batchnorm_layers(clf.base)
    final = [layer.moving_mean.numpy().copy() for layer in layers]
    estimate_bn_statistics(clf, ds)  # the same weights and images: nothing left to change
    for layer, before in zip(layers, final, strict=True):
        np.testing.assert_allclose(layer.moving_mean.numpy(), before, rtol=1e-4, atol=1e-5)


def test_prediction_after_xla_training_runs_the_served_graph():
    """A train step compiled with XLA must not leave evaluation and the parity check on
    XLA's kernels: the export serves the plain graph (1.6e-5 apart, parity allows 1e-5)."""
    from imgclf.trainer.experiment import infer_as_served

    clf = build_classifier(2, image_size=32, weights="none", dropout=0.0, l2=0.0)
    clf.model.compile(optimizer="adam", loss="categorical_crossentropy", jit_compile=True)
    x = next(iter(_tensors()))[0]
    clf.model.predict(x, verbose=0)
    assert clf.model.jit_compile and clf.model.predict_function is not None
    infer_as_served(clf)
    assert not clf.model.jit_compile and clf.model.predict_function is None
    clf.model.predict(x, verbose=0)
    assert not clf.model.jit_compile  # predict rebuilt its function without XLA


def test_a_mixed_precision_model_is_served_in_float32_with_its_trained_weights():
    """Trained in mixed_bfloat16 (precision auto on a CPU with bfloat16 units), the model
    is rebuilt in float32 before evaluation and export: served as trained, it ran batch 1
    at 0.49x float32 on AVX512-BF16 and would be emulated on CPUs without bf16 units."""
    from imgclf.trainer.experiment import build, in_float32

    config = parse_config({"weights": "none", "image_size": 32, "precision": "mixed_bfloat16"})
    run_plan = hardware.plan(config, gpus=0, flags=frozenset())
    mixed = build(config, 2, run_plan)
    layers = [*mixed.base.layers, *mixed.head.layers]
    assert {layer.compute_dtype for layer in layers} >= {"bfloat16"}
    x = next(iter(_tensors()))[0]
    answers = mixed.model.predict(x, verbose=0)

    rebuilt = in_float32(mixed, config, 2, run_plan)
    assert {layer.compute_dtype for layer in [*rebuilt.base.layers, *rebuilt.head.layers]} == {
        "float32"
    }
    assert rebuilt.recipe == mixed.recipe
    for trained, copied in zip(mixed.model.get_weights(), rebuilt.model.get_weights(), strict=True):
        np.testing.assert_array_equal(trained, copied)  # a fresh build has other weights
    served = rebuilt.model.predict(x, verbose=0)
    assert served.dtype == np.float32
    np.testing.assert_allclose(served, answers, atol=0.05)  # bfloat16 rounding, no more


def test_hardware_plan_is_detected_not_assumed(tmp_path):
    config = parse_config({})
    amx = frozenset({"avx2", "amx_bf16", "amx_tile"})
    assert hardware.plan(config, gpus=0, flags=frozenset({"avx2"})).precision == "float32"
    assert hardware.plan(config, gpus=0, flags=amx).precision == "mixed_bfloat16"
    on_gpus = hardware.plan(config, gpus=4, flags=frozenset())
    assert on_gpus.precision == "mixed_float16" and on_gpus.jit_compile
    assert on_gpus.replicas == 4 and on_gpus.global_batch_size == 4 * config.batch_size
    assert on_gpus.learning_rate_scale == 4.0
    assert hardware.plan(parse_config({"devices": 2}), gpus=4).replicas == 2
    with pytest.raises(ConfigError, match=r"'precision'.*needs a GPU"):
        hardware.plan(parse_config({"precision": "mixed_float16"}), gpus=0)
    with pytest.raises(ConfigError, match="'devices': 3 requested but 2 GPU"):
        hardware.plan(parse_config({"devices": 3}), gpus=2)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_bf16\n")
    from imgclf.cpu import cpu_flags, cpu_has_bf16

    assert cpu_has_bf16(cpu_flags(cpuinfo))
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_refusal_is_explained_with_causes_and_remedies():
    history = [{"loss": 1.1, "val_accuracy": v} for v in (0.11, 0.71, 0.2, 0.65, 0.33)]
    data = {"counts": {"train": {"brick": 170, "grass": 34, "gravel": 10}}}
    comparison = {"reasons": ["accuracy 33.3% does not beat chance (33.3%) by 15%"]}
    finding = explain_refusal(comparison, history, data)
    assert finding["code"] == "refused"
    assert "does not beat chance" in finding["detail"]
    assert "imbalanced (170 vs 10 images, fewest in 'gravel')" in finding["detail"]
    assert "swung between 11% and 71%" in finding["detail"]
    assert "did not fall" in finding["detail"]
    assert any("'gravel'" in r for r in finding["remedies"])
    assert any("learning_rate" in r for r in finding["remedies"])


def test_a_refused_run_keeps_its_report_in_the_run_folder(
    tmp_path, trained, shapes_dir, fast_config
):
    from imgclf.trainer.pipeline import load_for_config
    from imgclf.trainer.promotion import GateRules, PromotionGate
    from imgclf.trainer.run import Loaded, publish

    dataset, preprocess = load_for_config(fast_config, shapes_dir)
    model_dir, run_dir = tmp_path / "models", tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints/best.weights.h5").write_bytes(b"weights")
    staging = repository.new_staging_dir(model_dir, "shapes")
    shutil.copytree(trained.version_dir, staging, dirs_exist_ok=True)
    (staging / contract.MODEL_CARD_FILE).unlink()
    card = json.loads(json.dumps(trained.card))
    card["diagnosis"]["findings"] = []
    gate = PromotionGate(model_dir, "shapes", GateRules(min_over_chance=0.99))
    with pytest.raises(Rejected) as info:
        publish(
            staging,
            card,
            model_dir=model_dir,
            name="shapes",
            run_dir=run_dir,
            loaded=Loaded(dataset, preprocess, 0.0),
            gate=gate,
        )
    report_dir = run_dir / contract.REPORT_DIR
    assert str(report_dir) in str(info.value)
    assert info.value.comparison["run_report"] == str(report_dir / "report.html")
    for name in ("report.html", "learning_curves.png", "confusion_matrix.png", "model_card.json"):
        assert (report_dir / name).is_file(), name
    kept = json.loads((report_dir / contract.MODEL_CARD_FILE).read_text())
    assert kept["promotion"]["decision"] == "reject"
    assert kept["diagnosis"]["findings"][-1]["code"] == "refused"
    assert "The promotion gate refused this model" in (report_dir / "report.html").read_text()
    assert repository.list_versions(model_dir, "shapes") == []
    assert not (run_dir / "checkpoints").exists()  # refused is an outcome: nothing to resume


def test_published_card_names_the_recipe_and_the_real_size(trained):
    card = trained.card
    assert card["recipe"]["name"] == FINE_TUNE  # pinned by conftest's FAST config
    assert card["recipe"]["precision"] in ("float32", "mixed_bfloat16")
    files = sum(p.stat().st_size for p in (trained.version_dir / "variables").rglob("*"))
    assert card["artifact_bytes"] >= files > 1_000_000
    page = trained.report.read_text()
    assert "Recipe <b>fine_tune</b>" in page
    assert f"Artifact size {card['artifact_bytes'] / 1e6:.1f} MB" in page
    assert "Artifact size 0.0 MB" not in page
    assert (trained.run_dir / contract.REPORT_DIR / "report.html").is_file()
