"""Process settings, read once from IMGCLF_* environment variables at the entry point.

Build one `Settings()` where the process starts (CLI, worker, server) and pass it
down; nothing else reads the environment.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


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

    def runs_dir(self) -> Path:
        return self.work_dir if self.work_dir is not None else self.model_dir / ".runs"
