"""Process settings, read once from IMGCLF_* environment variables at the entry point.

Build one `Settings()` where the process starts (CLI, worker, server) and pass it
down; nothing else reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMGCLF_", extra="ignore")

    model_dir: Path = Field(
        Path("models"), description="Model repository root (TensorFlow Serving layout)."
    )
    work_dir: Path | None = Field(
        None,
        description="Run folders (checkpoints, splits, TensorBoard logs); default MODEL_DIR/.runs.",
    )
    keras_home: Path | None = Field(
        None, description="Where ImageNet weights are cached (models/ below it); default ~/.keras."
    )
    log_level: str = Field("INFO", description="Python logging level.")
    broker_url: str = Field(
        DEFAULT_REDIS_URL,
        description="Celery broker: redis://... or the embedded sqla+sqlite:///PATH.",
    )
    result_backend: str = Field(
        DEFAULT_REDIS_URL,
        description="Where job records live: redis://... or the embedded db+sqlite:///PATH.",
    )
    data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path(".")],
        description="Folders (comma-separated) that job data paths must lie under.",
    )
    queue: str = Field("imgclf", description="Celery queue the training tasks go to.")
    key_prefix: str = Field(
        "imgclf", description="Prefix of the job-record keys in Redis (to share one Redis)."
    )
    max_job_seconds: int = Field(
        6 * 3600, ge=60, description="Longest a job may run (hard limit ceiling)."
    )
    visibility_timeout: int | None = Field(
        None,
        ge=10,
        description="Redis redelivery timeout for unacked tasks; default max_job_seconds + 1h.",
    )
    lease_seconds: int = Field(
        30, ge=2, description="A running job's lease; a dead worker's job is requeued after it."
    )
    janitor_interval: float = Field(
        10.0, gt=0, description="Seconds between checks for jobs whose worker died."
    )
    keep_versions: int = Field(
        5, ge=1, description="Newest versions kept per model; labelled versions are never deleted."
    )

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def runs_dir(self) -> Path:
        return self.work_dir if self.work_dir is not None else self.model_dir / ".runs"

    def redelivery_timeout(self) -> int:
        return self.visibility_timeout or self.max_job_seconds + 3600


def embedded_urls(state_dir: Path) -> dict[str, str]:
    """Broker and job-store URLs that need no server: SQLite files under `state_dir`."""
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    return {
        "IMGCLF_BROKER_URL": f"sqla+sqlite:///{state_dir / 'broker.sqlite'}",
        "IMGCLF_RESULT_BACKEND": f"db+sqlite:///{state_dir / 'jobs.sqlite'}",
    }


def settings_table() -> str:
    """The markdown table of every IMGCLF_* variable (README embeds it; a test checks)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default_factory() if field.default_factory else field.default
        if isinstance(default, list):
            default = ",".join(str(x) for x in default)
        shown = "-" if default is None else f"`{default}`"
        rows.append(f"| `IMGCLF_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)
