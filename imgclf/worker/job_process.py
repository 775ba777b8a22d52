"""The child process that trains one job: `python -m imgclf.worker.job_process JOB_ID`.

It rebuilds Settings from the environment its worker passed down, reports progress
into the job record, stops at the next batch when the record asks it to (cancel)
or on SIGTERM (soft time limit), and writes the final status itself.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
import traceback

from imgclf.errors import Cancelled, ImgclfError, Rejected
from imgclf.jobs.spec import parse_job, resolve_data_path
from imgclf.jobs.store import JobStore, open_store
from imgclf.settings import Settings

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
        self.store.update(self.job_id, progress=event)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self._last_poll >= _POLL_S:
            self._last_poll = now
            self._cancel = bool(self.store.get(self.job_id).get("cancel_requested"))
        return self._cancel or self.terminated


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

        store.transition(
            job_id, ["running"], status, **{**finish, **fields, "finished_at": now_iso()}
        )
        log.info("job %s %s", job_id, status)
        return 0

    try:
        spec = parse_job(record["spec"])
        data = resolve_data_path(spec.data, settings.data_roots)
        from imgclf.trainer.promotion import GateRules, PromotionGate
        from imgclf.trainer.run import train_and_export
        from imgclf.trainer.training import Hooks
        from imgclf.worker.runner import job_run_dir

        gate = PromotionGate(
            settings.model_dir,
            spec.name,
            GateRules(tolerance=spec.promotion_tolerance, max_recall_drop=spec.max_recall_drop),
            keep_versions=settings.keep_versions,
        )
        result = train_and_export(
            spec.train_config(),
            data=data,
            name=spec.name,
            model_dir=settings.model_dir,
            run_dir=job_run_dir(settings, job_id),
            hooks=Hooks(on_progress=watch.on_progress, should_stop=watch.should_stop),
            keras_home=settings.keras_home,
            verbose=2,
            gate=gate,
        )
        return done(
            "succeeded",
            version=result.version,
            metrics=result.metrics,
            diagnosis=result.diagnosis,
            promotion=result.card.get("promotion"),
            report=str(result.report),
        )
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
