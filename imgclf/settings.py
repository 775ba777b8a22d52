"""Process settings, read once from IMGCLF_* environment variables at the entry point.

Build one `Settings()` where the process starts (CLI, worker, server) and pass it
down; nothing else reads the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
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
    worker_metrics_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Port of the worker's Prometheus /metrics (job counts and durations, on "
        "IMGCLF_HOST); unset = off, 0 = a free port.",
    )
    keep_versions: int = Field(
        5, ge=1, description="Newest versions kept per model; labelled versions are never deleted."
    )

    host: str = Field("127.0.0.1", description="Address the REST and gRPC servers bind to.")
    rest_port: int = Field(8501, ge=0, le=65535, description="REST port (TF Serving's default).")
    grpc_port: int = Field(8500, ge=0, le=65535, description="gRPC port (TF Serving's default).")
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Models to serve (comma-separated); empty = all found."
    )
    version_policy: Literal["latest", "labelled", "specific"] = Field(
        "latest",
        description="latest: newest version plus labelled ones; labelled: labelled only "
        "(the newest while no label names an existing version); specific: "
        "IMGCLF_SERVE_VERSIONS.",
    )
    serve_versions: Annotated[list[int], NoDecode] = Field(
        default_factory=list, description="Versions served under version_policy=specific."
    )
    poll_interval: float = Field(2.0, gt=0, description="Seconds between model-repository scans.")
    max_batch_size: int = Field(
        32,
        ge=1,
        le=1024,
        description="Most images per model call (a version may use fewer: IMGCLF_TUNE_BATCH_SIZE).",
    )
    tune_batch_size: bool = Field(
        True,
        description="Time each version at batch 1, 2, 4 ... max_batch_size when it loads and "
        "where the largest size is clearly slower per image (under 0.9 of the best images/s), "
        "cap its batches at the smallest size within 5% of the best (past a size that "
        "depends on the CPU and the image size, bigger batches are slower per image). "
        "Adds a few calls of each size to the warmup.",
    )
    batch_timeout_ms: float = Field(
        10.0,
        ge=0,
        description="Longest a batch waits for requests still decoding, or for the clients "
        "of the last batch to come back (it closes at once when neither is expected: a lone "
        "client waits for nothing). While the last batch's clients fit in one batch, the "
        "wait restarts at each request that joins, up to three times this or a quarter of "
        "the last batch's model time, whichever is longer.",
    )
    max_queue: int = Field(
        0,
        ge=0,
        description="Queued requests per model before 503 / RESOURCE_EXHAUSTED; 0 = "
        "server_threads - max_batch_size - 1 (server_threads when that is under 1): at the "
        "defaults a whole batch of clients can queue, and the queue fills before every "
        "thread is taken, so overload answers 503 instead of waiting unseen in the listener.",
    )
    max_request_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Largest request body.")
    max_images_per_request: int = Field(64, ge=1, description="Images in one request.")
    max_image_pixels: int = Field(
        40_000_000, ge=1024, description="Largest decoded image (width x height, all frames)."
    )
    max_decode_bytes: int = Field(
        512 * 1024 * 1024,
        ge=1024 * 1024,
        description="Memory that decoding one request's images may take (all frames, decoder "
        "buffers and the float32 copy, estimated from headers before decoding).",
    )
    admin_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Bearer tokens (comma-separated) for jobs and model management; required "
        "when the server listens beyond loopback.",
    )
    predict_tokens: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="If set, predictions need one of these tokens (or an admin token).",
    )
    rest_connection_limit: int = Field(
        1000,
        ge=1,
        description="Open REST connections at most (idle ones cost a socket, not a thread).",
    )
    rest_idle_timeout: float = Field(
        10.0,
        gt=0,
        description="Seconds a REST connection may stay idle or send a request slowly "
        "before it is closed.",
    )
    server_threads: int = Field(
        72,
        ge=1,
        description="REST and gRPC worker threads each (twice max_batch_size and 8 more, so "
        "a batch fills, a whole batch of clients can queue behind it, and the queue "
        "refuses before threads run out).",
    )
    bfloat16: bool = Field(
        False,
        description="Serve in bfloat16 (oneDNN auto mixed precision, process-wide; needs "
        "AVX512-BF16 or AMX): faster at batch 8+, can be slower at batch 1 on small "
        "images; golden replay then allows 0.05. See docs/BENCHMARKS.md.",
    )

    @field_validator("models", "serve_versions", "admin_tokens", "predict_tokens", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def listens_beyond_loopback(self) -> bool:
        import ipaddress

        if self.host in ("localhost", ""):
            return self.host == ""
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return True

    def queue_bound(self) -> int:
        """max_queue, or the default tied to the batch size and the thread count."""
        if self.max_queue:
            return self.max_queue
        spare = self.server_threads - self.max_batch_size - 1
        # With fewer threads than a batch and one, the threads themselves are the bound.
        return spare if spare >= 1 else self.server_threads

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
            default = ",".join(str(x) for x in default) or None
        shown = "-" if default is None else f"`{default}`"
        rows.append(f"| `IMGCLF_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


SECRET_FIELDS = frozenset({"admin_tokens", "predict_tokens"})


def to_env(settings: Settings) -> dict[str, str]:
    """IMGCLF_* variables that rebuild `settings` in a child process (secrets left out)."""
    env = {}
    for key, value in settings.model_dump(mode="json").items():
        if key in SECRET_FIELDS or value is None:
            continue
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        env[f"IMGCLF_{key.upper()}"] = str(value)
    return env
