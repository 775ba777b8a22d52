import json

import pytest
import yaml

from imgclf.config import (
    TrainConfig,
    load_config_file,
    parse_config,
    parse_overrides,
)
from imgclf.errors import ConfigError


def test_every_field_has_a_default():
    config = parse_config()
    assert config.image_size == 224
    assert config.weights == "imagenet"
    assert config.fine_tune_from == "conv5"
    assert config.fine_tune_learning_rate == 1e-5
    assert config.augmentation == "auto"
    assert config.class_weight == "auto"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("learning_rate", 5, ["'learning_rate'", "got 5", "<= 1.0"]),
        ("image_size", 16, ["'image_size'", "got 16", ">= 32", "<= 1024"]),
        ("batch_size", "many", ["'batch_size'", "'many'"]),
        ("augmentation", "wild", ["'augmentation'", "'wild'", "'standard'", "'strong'"]),
        ("dropout", 0.95, ["'dropout'", "0.95", "<= 0.9"]),
        ("weights", "weights.bin", ["'weights'", "weights.bin", ".h5"]),
        ("fine_tune_from", "conv9", ["'fine_tune_from'", "conv9", "'conv5'"]),
    ],
)
def test_wrong_value_names_field_value_and_range(field, value, expected):
    with pytest.raises(ConfigError) as info:
        parse_config({field: value})
    message = str(info.value)
    for part in expected:
        assert part in message


def test_unknown_field_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match="'learning_rat': unknown field") as info:
        parse_config({"learning_rat": 0.1})
    assert "learning_rate" in str(info.value)


def test_fractions_leave_room_for_training():
    with pytest.raises(ConfigError, match="val_fraction \\+ test_fraction"):
        parse_config({"val_fraction": 0.5, "test_fraction": 0.4})


def test_overrides_parse_numbers_and_booleans():
    assert parse_overrides(["learning_rate=1e-4", "cache_features=false", "weights=none"]) == {
        "learning_rate": 1e-4,
        "cache_features": False,
        "weights": "none",
    }
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["learning_rate"])


def test_config_files_json_and_yaml(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"batch_size": 8}))
    (tmp_path / "c.yaml").write_text("batch_size: 4\naugmentation: none\n")
    assert parse_config(load_config_file(tmp_path / "c.json")).batch_size == 8
    assert parse_config(load_config_file(tmp_path / "c.yaml")).augmentation == "none"
    (tmp_path / "bad.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config_file(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "missing.yaml")


def test_config_is_immutable():
    config = TrainConfig()
    with pytest.raises(ValueError):
        config.batch_size = 3


@pytest.mark.parametrize(("raw", "expected"), [("on", "on"), ("off", "off"), ("true", "on")])
def test_switches_read_as_yaml_booleans_keep_their_meaning(raw, expected):
    """YAML 1.1 reads on/off as booleans; `--set jit_compile=on` must still mean 'on'."""
    assert parse_config(parse_overrides([f"jit_compile={raw}"])).jit_compile == expected
    assert parse_config(yaml.safe_load(f"jit_compile: {raw}")).jit_compile == expected
