"""The one progress renderer: a job's state as the line a person reads.

The CLI (`--follow`, `jobs`), the demo and the Python client's `wait` all print these
lines, so a job reads the same wherever it is watched from. No I/O here.
"""

from __future__ import annotations

from imgclf.jobs.records import JobRecord, ProgressEvent

_SHOWN_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


def duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def describe_progress(progress: ProgressEvent) -> str:
    """Where a running job is: trial/fold, phase, epoch, percent, metrics, ETA."""
    parts = []
    if progress.trial is not None:
        parts.append(
            f"trial {progress.trial} ({progress.trials_done}/{progress.trials_planned} done)"
        )
    if progress.fold is not None:
        parts.append(f"fold {progress.fold}/{progress.folds}")
    if progress.final:
        parts.append("training the chosen config")
    if progress.stage == "train":
        phase = progress.phase_name or ("head" if progress.phase == 1 else "fine-tune")
        line = (
            f"phase {progress.phase} ({phase}) epoch {progress.epoch}/{progress.epochs} "
            f"batch {progress.batch}/{progress.steps}"
        )
        fraction = progress.fraction()
        if fraction is not None:
            line += f" {fraction:.0%}"
        shown = [f"{k} {progress.metrics[k]:.3f}" for k in _SHOWN_METRICS if k in progress.metrics]
        if shown:
            line += " " + " ".join(shown)
        if progress.eta_seconds is not None:
            line += f" ETA {duration(progress.eta_seconds)}"
        parts.append(line)
    elif progress.stage:
        parts.append(progress.stage)
    return ", ".join(parts)


def status_line(
    job_id: str, status: str, what: str = "", progress: ProgressEvent | None = None
) -> str:
    """`job ID STATUS (WHAT)`, with the progress while running."""
    line = f"job {job_id} {status}" + (f" ({what})" if what else "")
    if status == "running" and progress is not None:
        described = describe_progress(progress)
        if described:
            line += ": " + described
    return line


def describe(record: JobRecord) -> str:
    """One line: id, status, kind and model, and the progress when running."""
    what = f"{record.kind} {record.name}".strip()
    line = status_line(record.id, record.status, what, record.progress)
    best = (record.result or {}).get("best")
    if best and record.status == "running":
        line += f", best {record.result['objective']} {best['objective']:.4f}"
    return line
