"""The training configuration: one validated document, every field with a default and a range.

It lives outside the trainer package (and imports no TensorFlow) because the CLI,
the queue and the server validate jobs at submission, before anything runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, get_args

import annotated_types
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from imgclf.errors import ConfigError

AugmentationPreset = Literal["auto", "none", "shift", "light", "standard", "strong"]
ClassWeightMode = Literal["auto", "balanced", "none"]
LeakageMode = Literal["warn", "drop"]
OptimizerName = Literal["adam", "sgd"]
Stage = Literal["conv2", "conv3", "conv4", "conv5"]
RecipeName = Literal["auto", "fine_tune", "from_scratch"]
PrecisionName = Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"]
Switch = Literal["auto", "on", "off"]
CalibrationName = Literal["temperature", "none"]

# "auto" class weights switch on above this largest/smallest class ratio.
IMBALANCE_RATIO = 1.5


class TrainConfig(BaseModel):
    """Every knob of a training run. Unknown keys are refused so a typo is never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    image_size: int = Field(224, ge=32, le=1024, description="Square input size in pixels.")
    weights: str = Field(
        "imagenet",
        min_length=1,
        description="'imagenet', 'none' (random init) or a path to a ResNet-50 no-top .h5 file.",
    )
    recipe: RecipeName = Field(
        "auto",
        description="'auto' = fine_tune with pretrained weights, from_scratch with weights=none. "
        "fine_tune: two phases, BatchNorm frozen. from_scratch: BatchNorm statistics estimated "
        "from the data, then the whole network trains head_epochs + fine_tune_epochs epochs "
        "(BatchNorm in training mode, warmup + cosine from learning_rate), statistics estimated "
        "again at the end.",
    )
    warmup_epochs: int = Field(
        1, ge=0, le=100, description="from_scratch: epochs of linear learning-rate warmup."
    )
    bn_statistics_images: int = Field(
        512,
        ge=16,
        le=1_000_000,
        description="from_scratch: training images (unaugmented) that set BatchNorm's "
        "statistics before each validation pass; the first and the final estimate use all.",
    )
    batch_size: int = Field(
        32, ge=1, le=1024, description="Images per training step (per device when distributed)."
    )
    head_epochs: int = Field(10, ge=0, le=1000, description="Phase 1: base frozen.")
    fine_tune_epochs: int = Field(10, ge=0, le=1000, description="Phase 2: top stages unfrozen.")
    fine_tune_from: Stage = Field(
        "conv5", description="First ResNet stage unfrozen in phase 2 (conv5 = the top stage)."
    )
    optimizer: OptimizerName = Field("adam", description="Optimizer of both phases.")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    learning_rate: float = Field(1e-3, gt=0.0, le=1.0, description="Phase 1 learning rate.")
    fine_tune_learning_rate: float = Field(
        1e-5, gt=0.0, le=1.0, description="Phase 2 peak learning rate (cosine decay)."
    )
    dropout: float = Field(
        0.2, ge=0.0, le=0.9, description="Dropout before the head's Dense layer(s)."
    )
    l2: float = Field(1e-4, ge=0.0, le=1.0, description="L2 penalty on the head's kernels.")
    hidden_units: int = Field(0, ge=0, le=4096, description="0 = no hidden layer in the head.")
    label_smoothing: float = Field(
        0.1, ge=0.0, le=0.5, description="Cross-entropy label smoothing."
    )
    augmentation: AugmentationPreset = Field(
        "auto",
        description="Training-branch augmentation preset (flip, rotate, zoom, ...; 'shift' "
        "only moves and scales, for classes that flipping would change). 'auto' = "
        "standard for fine_tune, shift for from_scratch (a network learning its features from "
        "a few hundred images underfits a strongly augmented task: docs/BENCHMARKS.md).",
    )
    class_weight: ClassWeightMode = Field(
        "auto", description=f"'auto' = balanced when largest/smallest class > {IMBALANCE_RATIO}."
    )
    val_fraction: float = Field(
        0.15, ge=0.05, le=0.5, description="Validation share when no val/ split is given."
    )
    test_fraction: float = Field(
        0.15, ge=0.05, le=0.5, description="Test share when no test/ split is given."
    )
    seed: int = Field(42, ge=0, le=2**31 - 1, description="Seeds the split, shuffling and init.")
    allow_missing_classes: bool = Field(
        False,
        description="Train even when a class folder holds no usable image (it is left out "
        "and named in the model card); by default that is an error.",
    )
    early_stopping_patience: int = Field(
        3, ge=0, le=1000, description="Epochs without val-loss improvement; 0 disables."
    )
    top_k: int = Field(5, ge=1, le=100, description="k of the top-k accuracy metric.")
    cache_features: bool = Field(
        True, description="Phase 1 trains on cached base features when augmentation is 'none'."
    )
    cache_images_mb: int = Field(
        1024, ge=0, le=262144, description="Keep preprocessed images in memory up to this size."
    )
    precision: PrecisionName = Field(
        "auto",
        description="Training arithmetic. 'auto' = mixed_float16 on a GPU, mixed_bfloat16 on a "
        "CPU with AMX or AVX512-BF16, else float32. The exported model computes in float32.",
    )
    jit_compile: Switch = Field(
        "auto", description="XLA-compile the train step. 'auto' = on with a GPU, off on CPUs."
    )
    devices: int = Field(
        0,
        ge=0,
        le=64,
        description="GPUs one job trains on (MirroredStrategy); 0 = every visible GPU. "
        "Batch size and learning rate scale with the device count.",
    )
    parity_samples: int = Field(8, ge=1, le=256, description="Held-out images for parity.")
    leakage: LeakageMode = Field(
        "warn",
        description="Training copies of val/test images (audit): 'warn', or 'drop' them.",
    )
    calibration: CalibrationName = Field(
        "temperature",
        description="'temperature' = after training, fit one temperature on the validation "
        "split and build it into the exported model (served probabilities are calibrated); "
        "'none' = serve the raw softmax.",
    )
    min_score: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="The model card's default threshold: an image whose top calibrated score "
        "is below it is answered 'unknown' (a request's own min_score overrides it). "
        "0 = always answer; pick a value from the report's coverage vs accuracy table.",
    )

    @field_validator("jit_compile", mode="before")
    @classmethod
    def _switch_from_yaml(cls, value: Any) -> Any:
        """YAML reads `on` and `off` (a config file, `--set jit_compile=on`) as booleans."""
        if isinstance(value, bool):
            return "on" if value else "off"
        return value

    @field_validator("weights")
    @classmethod
    def _weights_form(cls, value: str) -> str:
        if value in ("imagenet", "none"):
            return value
        if not value.endswith(".h5"):
            raise ValueError("must be 'imagenet', 'none' or a path to a .h5 weights file")
        return value

    def model_post_init(self, __context: Any) -> None:
        if self.val_fraction + self.test_fraction >= 0.8:
            raise ValueError(
                "val_fraction + test_fraction must stay below 0.8 so training keeps most images "
                f"(got {self.val_fraction} + {self.test_fraction})"
            )


def _allowed(field_name: str) -> str:
    """Describe a field's allowed values from its declared constraints."""
    field = TrainConfig.model_fields.get(field_name)
    if field is None:
        return f"known fields: {', '.join(sorted(TrainConfig.model_fields))}"
    choices = get_args(field.annotation)
    if choices and all(isinstance(c, str) for c in choices):
        return "allowed: " + ", ".join(repr(c) for c in choices)
    low = high = None
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge | annotated_types.Gt):
            low = f"{'>=' if isinstance(item, annotated_types.Ge) else '>'} {_num(item)}"
        if isinstance(item, annotated_types.Le | annotated_types.Lt):
            high = f"{'<=' if isinstance(item, annotated_types.Le) else '<'} {_num(item)}"
    parts = [p for p in (low, high) if p]
    kind = getattr(field.annotation, "__name__", "value")
    return f"allowed: {kind} {' and '.join(parts)}" if parts else f"expected {kind}"


def _num(item: Any) -> Any:
    for attr in ("ge", "gt", "le", "lt"):
        if hasattr(item, attr):
            return getattr(item, attr)
    return item


def format_validation_error(exc: ValidationError, where: str = "config") -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(document)"
        field_name = str(err["loc"][0]) if err["loc"] else ""
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        got = f"; got {err['input']!r}" if "input" in err and err["type"] != "missing" else ""
        allowed = f" ({_allowed(field_name)})" if field_name else ""
        lines.append(f"{where} field '{loc}': {message}{got}{allowed}")
    return "\n".join(lines)


def parse_config(document: dict[str, Any] | None = None, **overrides: Any) -> TrainConfig:
    """Build a TrainConfig, turning pydantic's errors into one readable ConfigError."""
    data = dict(document or {})
    data.update(overrides)
    try:
        return TrainConfig(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML config document (YAML is a superset, but JSON errors read better)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} is not valid JSON/YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of field: value")
    return data


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values are read as YAML scalars so numbers and booleans work."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        try:
            out[key.strip()] = json.loads(raw)  # numbers like 1e-4 (YAML 1.1 reads a string)
        except json.JSONDecodeError:
            try:
                out[key.strip()] = yaml.safe_load(raw) if raw.strip() else raw
            except yaml.YAMLError:
                out[key.strip()] = raw
    return out


def config_table() -> str:
    """The markdown table of every TrainConfig field (docs/configuration.md embeds it)."""
    rows = ["| field | default | allowed | meaning |", "|---|---|---|---|"]
    for name, field in TrainConfig.model_fields.items():
        allowed = _allowed(name).removeprefix("allowed: ").removeprefix("expected ")
        rows.append(f"| `{name}` | `{field.default!r}` | {allowed} | {field.description or ''} |")
    return "\n".join(rows)
