"""The typed shapes of what crosses a process or a wire about a job.

`JobRecord` is the document the job store keeps (JSON); `ProgressEvent` is what a
running job reports into its record's `progress`. The store, the worker, the CLI,
the servers and the client read them through these models instead of string keys,
so a renamed field breaks a test instead of a progress bar. Unknown keys are kept
(`extra="allow"`): a newer worker may add fields an older reader does not know.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ProgressEvent(BaseModel):
    """Where a running job is. `stage` is train, evaluate, export, ... Training events
    carry phase/epoch/batch counts; a search adds its trial, a k-fold run its fold."""

    model_config = ConfigDict(extra="allow")

    stage: str | None = None
    phase: int | None = None
    phase_name: str | None = None  # head, fine-tune, whole network
    epoch: int | None = None
    epochs: int | None = None
    batch: int | None = None
    steps: int | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    eta_seconds: float | None = None
    trial: str | int | None = None
    trials_done: int | None = None
    trials_planned: int | None = None
    fold: int | None = None
    folds: int | None = None
    final: bool | None = None

    def fraction(self) -> float | None:
        """Share of the current training phase done, 0..1, when the event says."""
        if self.stage != "train" or not self.epochs or not self.steps:
            return None
        done = (max(1, self.epoch or 1) - 1) * self.steps + (self.batch or 0)
        return min(1.0, done / (self.epochs * self.steps))


class JobRecord(BaseModel):
    """One job as the store keeps it (see imgclf.jobs.store). Only `id` and `status` are
    required, so a record written by an older version still reads."""

    model_config = ConfigDict(extra="allow")

    id: str
    kind: str = "train"
    status: str
    name: str = ""
    data: str = ""
    idempotency_key: str | None = None
    spec: dict[str, Any] = Field(default_factory=dict)
    created_at: str = ""
    updated_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int = 0
    worker: str | None = None
    progress: ProgressEvent | None = None
    version: int | None = None
    metrics: dict[str, Any] | None = None
    diagnosis: dict[str, Any] | None = None
    promotion: dict[str, Any] | None = None
    report: str | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    cancel_requested: bool = False
    # True once the broker refused the job's task: the same idempotency key may resubmit it.
    unsent: bool = False
    # When its task reached the broker. None on a new record until the submitter has sent
    # it: a submitter that died in between leaves it so, and a worker's janitor sends it.
    sent_at: str | None = None

    def document(self) -> dict[str, Any]:
        """The JSON document the store writes (and --json / REST return)."""
        return self.model_dump(mode="json")
