"""The job document: the training config plus what to do with it, and the promotion rules.

Four kinds of job share one document:
  train    one training run through the normal path (report, parity, promotion gate)
  search   a Keras Tuner search over `search_space`, optionally training the best config
  kfold    stratified K-fold cross-validation of the config, optionally training it after
  audit    a data audit (imgclf.audit) of `data` split as the config says; with
           `audit_labels`, model `name` ranks label-error suspects

Everything is validated at submission, so a wrong space or budget is refused with a
message naming the field before a worker ever sees it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from imgclf.config import (
    AugmentationPreset,
    Stage,
    TrainConfig,
    format_validation_error,
)
from imgclf.errors import ConfigError, InvalidInput
from imgclf.repository import validate_model_name

JobKind = Literal["train", "search", "kfold", "audit"]
TunerName = Literal["hyperband", "random", "bayesian"]
ObjectiveName = Literal["val_loss", "val_accuracy"]
STATUSES = ("queued", "running", "succeeded", "failed", "rejected", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "rejected", "cancelled"})

_SEARCHED_FLOATS = ("learning_rate", "fine_tune_learning_rate", "dropout", "l2", "label_smoothing")


class FloatRange(BaseModel):
    """A searched float: uniform between `min` and `max`, or log-uniform with `log: true`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min: float
    max: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatRange:
        if self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        if self.log and self.min <= 0:
            raise ValueError(f"log sampling needs min > 0, got min {self.min}")
        return self


def _check_value(field: str, value: object, what: str) -> None:
    """Refuse a space endpoint or choice that the training config itself would refuse."""
    try:
        TrainConfig.model_validate({field: value})
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ValueError(f"{what} {value!r} is not a valid {field}: {reason}") from None


class SearchSpace(BaseModel):
    """What a search varies. A field left out (or null) is not searched: every trial uses
    the job's own value. A job without `search_space` searches DEFAULT_SPACE.

    Ranges and choices must lie inside the training config's own limits, so every
    trial the tuner can propose is a valid TrainConfig.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    learning_rate: FloatRange | None = Field(None, description="Phase 1 learning rate.")
    fine_tune_learning_rate: FloatRange | None = Field(
        None, description="Phase 2 peak learning rate."
    )
    dropout: FloatRange | None = Field(None, description="Head dropout.")
    l2: FloatRange | None = Field(None, description="L2 penalty on the head's kernels.")
    label_smoothing: FloatRange | None = Field(None, description="Label smoothing.")
    augmentation: list[AugmentationPreset] | None = Field(
        None, description="Augmentation presets to try."
    )
    fine_tune_from: list[Stage] | None = Field(
        None, description="Unfreeze depth: the first stage trained in phase 2."
    )
    batch_size: list[Annotated[int, Field(ge=1, le=1024)]] | None = Field(
        None, description="Batch sizes to try."
    )

    @field_validator(*_SEARCHED_FLOATS)
    @classmethod
    def _range_inside_limits(cls, bounds: FloatRange | None, info: ValidationInfo):
        if bounds is not None:
            _check_value(info.field_name, bounds.min, "min")
            _check_value(info.field_name, bounds.max, "max")
        return bounds

    @field_validator("augmentation", "fine_tune_from", "batch_size")
    @classmethod
    def _choices_usable(cls, choices: list | None, info: ValidationInfo):
        if choices is None:
            return None
        if not choices:
            raise ValueError("an empty choice list; use null to not search this field")
        if len(set(choices)) != len(choices):
            raise ValueError("choices repeat")
        for choice in choices:
            _check_value(info.field_name, choice, "choice")
        return choices

    def searched(self) -> list[str]:
        """Names of the fields this space varies."""
        return [name for name in type(self).model_fields if getattr(self, name) is not None]


# What a search job without `search_space` varies: ranges that suit fine-tuning
# ResNet-50 on small data.
DEFAULT_SPACE = SearchSpace(
    learning_rate=FloatRange(min=1e-4, max=1e-2, log=True),
    fine_tune_learning_rate=FloatRange(min=1e-6, max=1e-4, log=True),
    dropout=FloatRange(min=0.0, max=0.5),
    l2=FloatRange(min=1e-6, max=1e-2, log=True),
    label_smoothing=FloatRange(min=0.0, max=0.2),
    augmentation=["none", "light", "standard"],
    fine_tune_from=["conv5", "conv4"],
    batch_size=[16, 32],
)

# Fields that only some kinds use; a non-default value on another kind is refused.
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "tuner": ("search",),
    "objective": ("search",),
    "max_trials": ("search",),
    "trial_epochs": ("search",),
    "max_search_seconds": ("search",),
    "hyperband_factor": ("search",),
    "search_space": ("search",),
    "folds": ("kfold",),
    "fold_noise_gate": ("kfold",),
    "then_train": ("search", "kfold"),
    "audit_labels": ("audit",),
    "audit_version": ("audit",),
}


class JobSpec(TrainConfig):
    """A job: every TrainConfig field, plus these. Unknown keys are refused."""

    name: str = Field(description="Model name the version is published under.")
    data: str = Field(min_length=1, description="Data path, resolved under IMGCLF_DATA_ROOTS.")
    kind: JobKind = Field("train", description="What the job does: train, search, kfold or audit.")
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=200, description="Same key -> same job, never a 2nd run."
    )
    promotion_tolerance: float = Field(
        0.005,
        ge=0.0,
        le=1.0,
        description="Candidate accuracy may trail stable's by at most this (0.005 = 0.5 points).",
    )
    max_recall_drop: float = Field(
        0.10, ge=0.0, le=1.0, description="No class's recall may drop by more than this."
    )
    promotion_confidence: float = Field(
        0.95,
        ge=0.0,
        le=0.999,
        description="The low end of this confidence interval of the test accuracy must beat "
        "chance (0 turns the rule off).",
    )
    soft_time_limit: int | None = Field(
        None, ge=10, description="Seconds; the run is stopped at the next batch and fails."
    )
    time_limit: int | None = Field(
        None, ge=10, description="Seconds; the run is killed. Default: IMGCLF_MAX_JOB_SECONDS."
    )
    # kind "search"
    tuner: TunerName = Field(
        "hyperband", description="Search algorithm ('bayesian' needs keras-tuner[bayesian])."
    )
    objective: ObjectiveName = Field(
        "val_loss", description="What ranks trials, on the validation split only."
    )
    max_trials: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Trials at most. Default: 10 (random, bayesian); one Hyperband iteration.",
    )
    trial_epochs: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="Epochs per trial, both phases (Hyperband: the most a trial gets). "
        "Default: head_epochs + fine_tune_epochs.",
    )
    max_search_seconds: int | None = Field(
        None, ge=10, description="No new trial starts after this; the search ends with those done."
    )
    hyperband_factor: int = Field(3, ge=2, le=10, description="Hyperband's reduction factor.")
    search_space: SearchSpace = Field(
        DEFAULT_SPACE, description="Ranges and choices the search varies (see DEFAULT_SPACE)."
    )
    # kind "kfold"
    folds: int = Field(5, ge=2, le=20, description="K of stratified K-fold cross-validation.")
    fold_noise_gate: bool = Field(
        False,
        description="With then_train: the candidate must beat stable by more than the "
        "fold-to-fold standard deviation of accuracy.",
    )
    # kinds "search" and "kfold"
    then_train: bool = Field(
        False, description="Afterwards, train (best) config through the normal path and publish."
    )

    # kind "audit"
    audit_labels: bool = Field(
        False, description="Rank label-error suspects with a version of model `name`."
    )
    audit_version: int | None = Field(
        None, ge=1, description="That version (default: the newest); needs audit_labels."
    )

    @model_validator(mode="after")
    def _fits_kind(self) -> JobSpec:
        for field, kinds in KIND_FIELDS.items():
            if self.kind not in kinds and getattr(self, field) != _default(field):
                only = " or ".join(repr(k) for k in kinds)
                raise ValueError(
                    f"'{field}' applies only to jobs of kind {only}, this job is {self.kind!r}"
                )
        if self.kind in ("search", "kfold") and self.head_epochs + self.fine_tune_epochs == 0:
            raise ValueError(
                f"a {self.kind} job needs head_epochs + fine_tune_epochs > 0 (both are 0)"
            )
        if self.kind == "search" and not self.search_space.searched():
            raise ValueError("search_space searches nothing: give at least one range or choices")
        phase2 = {"fine_tune_learning_rate", "fine_tune_from"} & set(self.search_space.searched())
        if self.kind == "search" and phase2 and self.fine_tune_epochs == 0:
            raise ValueError(
                f"search_space varies {', '.join(sorted(phase2))} but phase 2 never runs "
                "(fine_tune_epochs is 0): declare a search_space without them (the default "
                "space has them)"
            )
        if self.audit_version is not None and not self.audit_labels:
            raise ValueError("audit_version needs audit_labels: true")
        if self.fold_noise_gate and not self.then_train:
            raise ValueError("fold_noise_gate needs then_train: true (it gates that version)")
        return self

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{k: getattr(self, k) for k in TrainConfig.model_fields})


def _default(field: str) -> Any:
    info = JobSpec.model_fields[field]
    return info.default_factory() if info.default_factory else info.default


def _known_fields(loc: tuple) -> list[str] | None:
    """The field names of the (nested) model that holds `loc`'s last part."""
    model: Any = JobSpec
    for part in loc[:-1]:
        fields = getattr(model, "model_fields", None)
        if fields is None or part not in fields:
            return None
        model = next(
            (
                a
                for a in (fields[part].annotation, *get_args(fields[part].annotation))
                if isinstance(a, type) and issubclass(a, BaseModel)
            ),
            None,
        )
    return sorted(model.model_fields) if model is not None else None


def _job_line(err: dict) -> str:
    """One error about a job-only or nested field; TrainConfig's range hints do not apply."""
    loc = ".".join(str(p) for p in err["loc"])
    message = err["msg"].removeprefix("Value error, ")
    hint = ""
    if err["type"] == "extra_forbidden":
        message = "unknown field"
        known = _known_fields(tuple(err["loc"]))
        hint = f" (known fields: {', '.join(known)})" if known else ""
    got = ""
    if "input" in err and err["type"] != "missing" and not isinstance(err["input"], dict):
        shown = repr(err["input"])
        got = f"; got {shown if len(shown) <= 80 else shown[:77] + '...'}"
    return f"job field '{loc}': {message}{got}{hint}"


def describe_errors(exc: ValidationError) -> str:
    """Readable lines: TrainConfig fields as `parse_config` words them, job fields our way."""
    text = format_validation_error(exc, where="job")
    lines = text.split("\n")
    errors = exc.errors()
    if len(lines) != len(errors):
        return text
    job_only = set(JobSpec.model_fields) - set(TrainConfig.model_fields)
    out = []
    for err, line in zip(errors, lines, strict=True):
        if not err["loc"]:  # a rule across fields: the message says it all
            out.append("job: " + err["msg"].removeprefix("Value error, "))
        elif str(err["loc"][0]) in job_only or err["type"] == "extra_forbidden":
            out.append(_job_line(err))
        else:
            out.append(line)
    return "\n".join(out)


def parse_job(document: dict[str, Any]) -> JobSpec:
    """Validate a job document; errors name the field, the value and what is allowed."""
    if not isinstance(document, dict):
        raise ConfigError("a job document must be a JSON object of field: value")
    try:
        spec = JobSpec(**document)
    except ValidationError as exc:
        raise ConfigError(describe_errors(exc)) from None
    validate_model_name(spec.name)
    return spec


def resolve_data_path(data: str, roots: list[Path]) -> Path:
    """The real path of `data`, which must lie under one of `roots`.

    Symlinks and `..` are resolved first, so a link or a relative trick that points
    outside every root is refused like a plain outside path.
    """
    if not roots:
        raise InvalidInput("no data roots are configured (IMGCLF_DATA_ROOTS)")
    if "\0" in data:  # the OS refuses such a path with ValueError, not OSError
        raise InvalidInput(f"data path {data[:64]!r} contains a NUL byte")
    candidate = Path(data).expanduser()
    resolved_roots = [Path(r).expanduser().resolve() for r in roots]
    attempts = [candidate] if candidate.is_absolute() else [r / candidate for r in resolved_roots]
    for path in attempts:
        real = path.resolve()
        for root in resolved_roots:
            if real == root or root in real.parents:
                if not real.exists():
                    raise InvalidInput(f"data path {data!r} does not exist under {root}")
                return real
    allowed = ", ".join(str(r) for r in resolved_roots)
    raise InvalidInput(
        f"data path {data!r} is outside the allowed data roots ({allowed}); "
        "set IMGCLF_DATA_ROOTS to allow another folder"
    )
