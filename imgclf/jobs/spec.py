"""The job document: the training config plus what to train, and the promotion rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from imgclf.config import TrainConfig, format_validation_error
from imgclf.errors import ConfigError, InvalidInput
from imgclf.repository import validate_model_name

JobKind = Literal["train"]
STATUSES = ("queued", "running", "succeeded", "failed", "rejected", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "rejected", "cancelled"})


class JobSpec(TrainConfig):
    """A training job: every TrainConfig field, plus these. Unknown keys are refused."""

    name: str = Field(description="Model name the version is published under.")
    data: str = Field(min_length=1, description="Data path, resolved under IMGCLF_DATA_ROOTS.")
    kind: JobKind = Field("train", description="What the job does.")
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
    soft_time_limit: int | None = Field(
        None, ge=10, description="Seconds; the run is stopped at the next batch and fails."
    )
    time_limit: int | None = Field(
        None, ge=10, description="Seconds; the run is killed. Default: IMGCLF_MAX_JOB_SECONDS."
    )

    def train_config(self) -> TrainConfig:
        return TrainConfig(**{k: getattr(self, k) for k in TrainConfig.model_fields})


def parse_job(document: dict[str, Any]) -> JobSpec:
    """Validate a job document; errors name the field, the value and what is allowed."""
    if not isinstance(document, dict):
        raise ConfigError("a job document must be a JSON object of field: value")
    try:
        spec = JobSpec(**document)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where="job")) from None
    validate_model_name(spec.name)
    return spec


def resolve_data_path(data: str, roots: list[Path]) -> Path:
    """The real path of `data`, which must lie under one of `roots`.

    Symlinks and `..` are resolved first, so a link or a relative trick that points
    outside every root is refused like a plain outside path.
    """
    if not roots:
        raise InvalidInput("no data roots are configured (IMGCLF_DATA_ROOTS)")
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
