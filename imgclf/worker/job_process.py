"""The child process that runs one job: `python -m imgclf.worker.job_process JOB_ID`.

It rebuilds Settings from the environment its worker passed down, reports progress
into the job record, stops at the next batch when the record asks it to (cancel)
or on SIGTERM (soft time limit), and writes the final status itself. The job's kind
picks the work: `train` (train_and_export), `search` (trainer.search), `kfold`
(trainer.kfold) or `audit` (imgclf.audit); search and kfold write their results into
the record as they go.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from imgclf.config import TrainConfig
from imgclf.errors import Cancelled, ImgclfError, Rejected
from imgclf.jobs.records import ProgressEvent
from imgclf.jobs.spec import JobSpec, parse_job, resolve_data_path
from imgclf.jobs.store import JobStore, open_store
from imgclf.settings import Settings

if TYPE_CHECKING:  # TensorFlow loads only when a job runs
    from imgclf.trainer.training import Hooks

log = logging.getLogger("imgclf.job")
_POLL_S = 1.0


class _Watch:
    """Progress into the store (at most once a second) and the stop conditions."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store = store
        self.job_id = job_id
        self.terminated = False
        self._last_poll = 0.0
        self._cancel = False

    def on_progress(self, event: dict) -> None:
        typed = ProgressEvent.model_validate(event)  # a wrong event fails here, not in a reader
        self.store.update(self.job_id, progress=typed.model_dump(mode="json", exclude_none=True))

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self._last_poll >= _POLL_S:
            self._last_poll = now
            self._cancel = bool(self.store.get(self.job_id).get("cancel_requested"))
        return self._cancel or self.terminated


def _discard_checkpoints(run_dir: Path) -> None:
    """A finished job is never resumed (another job gets another run folder), so the
    checkpoints a cancelled or failed run left, and any a finished one kept, only take
    disk: each holds the whole network (~270 MB), once per search trial and fold. The
    name is trainer.training.CHECKPOINTS_DIR, spelled out so that TensorFlow, which that
    module loads, stays out of a job that failed before training."""
    for folder in list(run_dir.rglob("checkpoints")):
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class _Job:
    """What every kind of job runs with."""

    id: str
    spec: JobSpec
    data: Path
    settings: Settings
    store: JobStore
    watch: _Watch

    @property
    def run_dir(self) -> Path:
        from imgclf.worker.runner import job_run_dir

        return job_run_dir(self.settings, self.id)

    def hooks(self, **extra: object) -> Hooks:
        """Hooks that report into the record, with `extra` added to every progress event."""
        from imgclf.trainer.training import Hooks

        def on_progress(event: dict) -> None:
            self.watch.on_progress({**event, **extra})

        return Hooks(on_progress=on_progress, should_stop=self.watch.should_stop)

    def record_result(self, result: dict) -> None:
        self.store.update(self.id, result=result)


def _train(
    job: _Job, config: TrainConfig, run_dir: Path, *, min_gain: float | None = None, **extra: object
) -> dict:
    """The normal path (report, parity, promotion gate); the record fields it fills."""
    from imgclf.trainer.promotion import GateRules, PromotionGate
    from imgclf.trainer.run import train_and_export

    spec, settings = job.spec, job.settings
    gate = PromotionGate(
        settings.model_dir,
        spec.name,
        GateRules(
            tolerance=spec.promotion_tolerance,
            max_recall_drop=spec.max_recall_drop,
            confidence=spec.promotion_confidence,
            min_gain=min_gain,
        ),
        keep_versions=settings.keep_versions,
    )
    result = train_and_export(
        config,
        data=job.data,
        name=spec.name,
        model_dir=settings.model_dir,
        run_dir=run_dir,
        hooks=job.hooks(**extra),
        keras_home=settings.keras_home,
        verbose=2,
        gate=gate,
    )
    return {
        "version": result.version,
        "metrics": result.metrics,
        "diagnosis": result.diagnosis,
        "promotion": result.card.get("promotion"),
        "report": str(result.report),
    }


def _search(job: _Job) -> dict:
    from imgclf.trainer.search import run_search

    found = run_search(
        job.spec,
        data=job.data,
        run_dir=job.run_dir,
        hooks=job.hooks(),
        on_update=job.record_result,
        keras_home=job.settings.keras_home,
        verbose=2,
    )
    fields: dict = {"result": found.result, "report": str(found.path)}
    if job.spec.then_train:
        fields |= _train(job, found.best_config, job.run_dir / "final", final=True)
    return fields


def _kfold(job: _Job) -> dict:
    from imgclf.trainer.kfold import run_kfold

    spec = job.spec
    done = run_kfold(
        spec.train_config(),
        folds=spec.folds,
        data=job.data,
        run_dir=job.run_dir,
        hooks=job.hooks(),
        on_update=job.record_result,
        keras_home=job.settings.keras_home,
        verbose=2,
    )
    fields: dict = {"result": done.result, "report": str(done.curves)}
    if spec.then_train:
        noise = done.result["std"].get("accuracy") if spec.fold_noise_gate else None
        fields |= _train(
            job, spec.train_config(), job.run_dir / "final", min_gain=noise, final=True
        )
    return fields


def _audit(job: _Job) -> dict:
    from imgclf.audit.jobs import run_audit_job

    spec = job.spec
    job.watch.on_progress({"stage": "audit"})
    return run_audit_job(
        spec.train_config(),
        data=job.data,
        run_dir=job.run_dir,
        model_dir=job.settings.model_dir,
        name=spec.name if spec.audit_labels else None,
        version=spec.audit_version,
    )


def _run(job: _Job) -> dict:
    if job.spec.kind == "audit":
        return _audit(job)
    if job.spec.kind == "search":
        return _search(job)
    if job.spec.kind == "kfold":
        return _kfold(job)
    return _train(job, job.spec.train_config(), job.run_dir)


def main(job_id: str) -> int:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    store = open_store(settings.result_backend, settings.key_prefix)
    watch = _Watch(store, job_id)
    signal.signal(signal.SIGTERM, lambda *_: setattr(watch, "terminated", True))
    record = store.get(job_id)
    finish = {"finished_at": None}

    def done(status: str, **fields: object) -> int:
        from imgclf.jobs.store import now_iso
        from imgclf.worker.runner import job_run_dir

        store.transition(
            job_id, ["running"], status, **{**finish, **fields, "finished_at": now_iso()}
        )
        _discard_checkpoints(job_run_dir(settings, job_id))
        log.info("job %s %s", job_id, status)
        return 0

    try:
        spec = parse_job(record["spec"])
        data = resolve_data_path(spec.data, settings.data_roots)
        job = _Job(id=job_id, spec=spec, data=data, settings=settings, store=store, watch=watch)
        return done("succeeded", **_run(job))
    except Rejected as exc:
        return done("rejected", error=str(exc), promotion=exc.comparison)
    except Cancelled:
        if watch.terminated:
            return done("failed", error="soft time limit exceeded; stopped at a batch boundary")
        return done("cancelled", error="cancelled while running; nothing was published")
    except ImgclfError as exc:
        return done("failed", error=str(exc))
    except Exception as exc:
        traceback.print_exc()
        return done("failed", error=f"internal error: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
