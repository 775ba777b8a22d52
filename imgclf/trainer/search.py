"""Hyperparameter search: Keras Tuner proposes configs, the normal training loop scores them.

Each trial is one ordinary two-phase run (`experiment.fit`: the one preprocess
function, `train_phases`, per-epoch checkpoints) on the job's own train/validation
split, scored on the validation split only; the test split is never looked at. Keras
Tuner's oracle (Hyperband, random search or Bayesian optimisation) proposes the values
and keeps its state under RUN_DIR/tuner/, written after every trial. A search that was
interrupted (worker killed, job requeued) reloads that state: finished trials are kept
as they are, the trial that was running is retried (resuming from its last finished
epoch), and the search goes on to the same planned number of trials.

Layout of RUN_DIR/tuner/:
    identity.json                     the settings and data the state belongs to
    clock.json                        seconds spent, for max_search_seconds across resumes
    search.json                       the ranked table and the best config (also in the job)
    search/oracle.json, tuner0.json   Keras Tuner's own state
    search/trial_<id>/trial.json      Keras Tuner's trial record
    search/trial_<id>/result.json     our scores, history and config of the finished trial
    search/trial_<id>/run/            that trial's checkpoints (removed once it has a result)

Hyperband promotes good trials to longer budgets. A finished two-phase run cannot be
extended (phase 2 has already started), so a promoted trial trains again from the
start with its larger budget rather than from its predecessor's weights.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras_tuner as kt
from keras_tuner.engine import base_tuner
from keras_tuner.engine.trial import Trial, TrialStatus

from imgclf.config import TrainConfig
from imgclf.errors import Cancelled, ConfigError, ImgclfError
from imgclf.jobs.spec import FloatRange, JobSpec, SearchSpace
from imgclf.trainer import experiment
from imgclf.trainer.pipeline import load_for_config
from imgclf.trainer.training import CHECKPOINTS_DIR, Hooks, discard_checkpoints

log = logging.getLogger(__name__)

TUNER_DIR = "tuner"
PROJECT = "search"
RESULT_FILE = "search.json"
CLOCK_FILE = "clock.json"
TRIAL_RESULT = "result.json"
DEFAULT_MAX_TRIALS = 10
_TUNER_KEY = "tuner/"  # Hyperband's own values (epochs, bracket, round) in a trial
_MAX_CONSECUTIVE_FAILURES = 3

# A trial: its proposed values and budget in, objective metrics out.
RunTrial = Callable[[str, TrainConfig, Path], dict[str, Any]]
Clock = Callable[[], float]


class SearchFailed(ImgclfError):
    """No trial finished, or too many failed one after another; the message says why."""


@dataclass
class SearchResult:
    result: dict  # what goes into the job record: ranked trials, best, best_config
    best_config: TrainConfig
    path: Path  # RUN_DIR/tuner/search.json
    trials: list[dict] = field(default_factory=list)


def hyperparameters(space: SearchSpace) -> kt.HyperParameters:
    """Keras Tuner's space from ours: ranges become Float, lists become Choice."""
    hp = kt.HyperParameters()
    for name in space.searched():
        value = getattr(space, name)
        if isinstance(value, FloatRange):
            if value.min == value.max:
                hp.Fixed(name, value.min)
            else:
                sampling = "log" if value.log else "linear"
                hp.Float(name, value.min, value.max, sampling=sampling)
        elif len(value) == 1:
            hp.Fixed(name, value[0])
        else:
            hp.Choice(name, list(value))
    return hp


def split_epochs(total: int, config: TrainConfig) -> tuple[int, int]:
    """Share `total` epochs between the phases like the job's head_epochs : fine_tune_epochs."""
    head, fine = config.head_epochs, config.fine_tune_epochs
    if fine == 0:
        return total, 0
    if head == 0:
        return 0, total
    first = min(total, max(1, round(total * head / (head + fine))))
    return first, total - first


def trial_epochs(spec: JobSpec) -> int:
    return spec.trial_epochs or spec.head_epochs + spec.fine_tune_epochs


def chosen(values: dict[str, Any]) -> dict[str, Any]:
    """The config values of a trial, without Hyperband's bookkeeping entries."""
    return {k: v for k, v in values.items() if not k.startswith(_TUNER_KEY)}


def trial_config(base: TrainConfig, values: dict[str, Any], epochs: int) -> TrainConfig:
    head, fine = split_epochs(epochs, base)
    update = {**chosen(values), "head_epochs": head, "fine_tune_epochs": fine}
    return TrainConfig(**{**base.model_dump(), **update})


def best_config(base: TrainConfig, values: dict[str, Any]) -> TrainConfig:
    """The job's config with the best trial's values; the job's own epochs (the search
    budget per trial is an economy, the final run trains the full recipe)."""
    return TrainConfig(**{**base.model_dump(), **chosen(values)})


def hyperband_trials(max_epochs: int, factor: int) -> int:
    """Trials in one Hyperband iteration (the formula of Keras Tuner's HyperbandOracle)."""
    brackets, epochs = 0, float(max_epochs)
    while epochs >= 1:
        epochs /= factor
        brackets += 1
    end0 = math.ceil(1 + math.log(max_epochs, factor))
    total = 0
    for bracket in range(brackets):
        end = end0 / (bracket + 1)
        total += sum(math.ceil(end * factor ** (bracket - r)) for r in range(bracket + 1))
    return total


def planned_trials(spec: JobSpec) -> int:
    if spec.max_trials is not None:
        return spec.max_trials
    if spec.tuner == "hyperband":
        return hyperband_trials(trial_epochs(spec), spec.hyperband_factor)
    return DEFAULT_MAX_TRIALS


def direction(objective: str) -> str:
    return "min" if objective == "val_loss" else "max"


def make_oracle(spec: JobSpec) -> kt.Oracle:
    """The oracle the job asked for, over the job's space. Seeded from the job's seed."""
    common: dict[str, Any] = {
        "objective": kt.Objective(spec.objective, direction(spec.objective)),
        "hyperparameters": hyperparameters(spec.search_space),
        "seed": spec.seed + 1,  # Keras Tuner reads a seed of 0 as "pick one at random"
        "max_consecutive_failed_trials": _MAX_CONSECUTIVE_FAILURES,
    }
    if spec.tuner == "hyperband":
        oracle = kt.oracles.HyperbandOracle(
            max_epochs=trial_epochs(spec),
            factor=spec.hyperband_factor,
            # With a trial budget, brackets repeat until it is spent; without, one sweep.
            hyperband_iterations=1 if spec.max_trials is None else None,
            **common,
        )
        oracle.max_trials = spec.max_trials
        return oracle
    max_trials = spec.max_trials or DEFAULT_MAX_TRIALS
    if spec.tuner == "random":
        return kt.oracles.RandomSearchOracle(max_trials=max_trials, **common)
    try:
        return kt.oracles.BayesianOptimizationOracle(max_trials=max_trials, **common)
    except ImportError:
        raise ConfigError(
            "tuner 'bayesian' needs scipy and scikit-learn on the worker "
            "(pip install 'keras-tuner[bayesian]'); use 'hyperband' or 'random' otherwise"
        ) from None


class _Tuner(base_tuner.BaseTuner):
    """Keras Tuner's bookkeeping (oracle, trial files, reload) around our own trials."""

    def __init__(self, oracle: kt.Oracle, directory: Path, run_trial: Callable) -> None:
        self._run_trial = run_trial
        super().__init__(
            oracle=oracle, directory=str(directory), project_name=PROJECT, overwrite=False
        )

    def run_trial(self, trial: Trial, *args: Any, **kwargs: Any) -> dict[str, float]:
        return self._run_trial(trial)


class _SpentClock:
    """Seconds the search has spent, kept across resumes in clock.json."""

    def __init__(self, path: Path, clock: Clock) -> None:
        self.path = path
        self.clock = clock
        self.before = float((experiment.read_json(path) or {}).get("seconds", 0.0))
        self.started = clock()

    def seconds(self) -> float:
        return self.before + self.clock() - self.started

    def save(self) -> None:
        experiment.write_json(self.path, {"seconds": round(self.seconds(), 3)})


def _row(trial: Trial, trial_dir: Path, total_epochs: int) -> dict[str, Any]:
    values = trial.hyperparameters.values
    outcome = experiment.read_json(trial_dir / TRIAL_RESULT) or {}
    message = (trial.message or "").strip().splitlines()
    return {
        "trial_id": trial.trial_id,
        "status": str(trial.status).lower(),
        "hyperparameters": chosen(values),
        "epochs": values.get(f"{_TUNER_KEY}epochs", total_epochs),
        "objective": None if trial.score is None else float(trial.score),
        "val_loss": outcome.get("metrics", {}).get("loss"),
        "val_accuracy": outcome.get("metrics", {}).get("accuracy"),
        "seconds": outcome.get("seconds"),
        "error": message[-1] if message and trial.status != TrialStatus.COMPLETED else None,
    }


def ranked(rows: list[dict], objective: str) -> list[dict]:
    """Completed trials best first (ties by trial id), then the others; `rank` numbers them."""
    sign = 1.0 if direction(objective) == "min" else -1.0
    done = sorted(
        (r for r in rows if r["status"] == "completed" and r["objective"] is not None),
        key=lambda r: (sign * r["objective"], r["trial_id"]),
    )
    ranks = {r["trial_id"]: i + 1 for i, r in enumerate(done)}
    rest = sorted((r for r in rows if r["trial_id"] not in ranks), key=lambda r: r["trial_id"])
    return [{"rank": ranks.get(r["trial_id"]), **r} for r in done + rest]


def _quiet_keras_tuner(fn: Callable[..., SearchResult]) -> Callable[..., SearchResult]:
    """Keras Tuner 1.4 calls threading.currentThread().getName() on every oracle call."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> SearchResult:
        with warnings.catch_warnings():
            for old in (r"currentThread\(\)", r"getName\(\)"):
                warnings.filterwarnings("ignore", old + " is deprecated", DeprecationWarning)
            return fn(*args, **kwargs)

    return wrapper


@_quiet_keras_tuner
def search_loop(
    spec: JobSpec,
    directory: Path,
    run_trial: RunTrial,
    *,
    hooks: Hooks | None = None,
    on_update: Callable[[dict], None] | None = None,
    clock: Clock = time.monotonic,
    verbose: int = 0,
) -> SearchResult:
    """Run (or resume) the Keras Tuner loop; `run_trial(trial_id, config, trial_dir)` scores
    one config and returns {"val_loss": ..., "val_accuracy": ...}.

    Stops when the oracle has no more trials (the budget is spent, or Hyperband's
    brackets are done) or when `max_search_seconds` have passed: no trial starts after
    that, the running one finishes. Raises Cancelled when the hooks ask to stop (the
    state on disk lets a later call resume), SearchFailed when no trial finished.
    """
    hooks = hooks or Hooks()
    base = spec.train_config()
    directory.mkdir(parents=True, exist_ok=True)
    oracle = make_oracle(spec)
    oracle.verbose = verbose
    planned = planned_trials(spec)
    total_epochs = trial_epochs(spec)

    def table() -> list[dict]:
        rows = [
            _row(t, Path(tuner.get_trial_dir(t.trial_id)), total_epochs)
            for t in oracle.trials.values()
        ]
        return ranked(rows, spec.objective)

    def report(stopped: str | None) -> dict:
        rows = table()
        best = rows[0] if rows and rows[0]["rank"] == 1 else None
        result = {
            "tuner": spec.tuner,
            "objective": spec.objective,
            "direction": direction(spec.objective),
            "searched": spec.search_space.searched(),
            "planned_trials": planned,
            "completed": sum(r["status"] == "completed" for r in rows),
            "failed": sum(r["status"] == "failed" for r in rows),
            "seconds": round(spent.seconds(), 1),
            "stopped": stopped,
            "trials": rows,
            "best": best,
            "best_config": None
            if best is None
            else best_config(base, best["hyperparameters"]).model_dump(),
        }
        experiment.write_json(directory / RESULT_FILE, result)
        if on_update:
            on_update(result)
        return result

    def score(trial: Trial) -> dict[str, float]:
        values = trial.hyperparameters.values
        config = trial_config(base, values, values.get(f"{_TUNER_KEY}epochs", total_epochs))
        return run_trial(trial.trial_id, config, Path(tuner.get_trial_dir(trial.trial_id)))

    tuner = _Tuner(oracle, directory, score)
    spent = _SpentClock(directory / CLOCK_FILE, clock)
    stopped = "finished"
    report(None)
    try:
        while True:
            if hooks.should_stop and hooks.should_stop():
                raise Cancelled("search cancelled")
            if spec.max_search_seconds and spent.seconds() >= spec.max_search_seconds:
                stopped = "max_search_seconds"
                log.info("search: %ss spent, no new trial starts", spec.max_search_seconds)
                break
            trial = oracle.create_trial(tuner.tuner_id)
            if trial.status != TrialStatus.RUNNING:  # STOPPED; IDLE cannot happen serially
                break
            try:
                metrics = tuner.run_trial(trial)
                oracle.update_trial(trial.trial_id, metrics)
                trial.status = TrialStatus.COMPLETED
            except ImgclfError:  # cancelled, or data/weights: every trial would fail alike
                raise
            except Exception as exc:  # this config failed (NaN, out of memory, ...)
                log.exception("trial %s failed", trial.trial_id)
                trial.status = TrialStatus.FAILED
                trial.message = f"{type(exc).__name__}: {exc}"
            spent.save()
            try:
                tuner.on_trial_end(trial)  # the oracle scores it and saves its state
            except RuntimeError as exc:  # Keras Tuner: too many consecutive failures
                report("failed")
                raise SearchFailed(f"search stopped: {exc}") from None
            report(None)
    finally:
        spent.save()
    result = report(stopped)
    if result["best"] is None:
        errors = [r["error"] for r in result["trials"] if r["error"]]
        raise SearchFailed("no trial finished" + (f"; last error: {errors[-1]}" if errors else ""))
    return SearchResult(
        result=result,
        best_config=TrainConfig(**result["best_config"]),
        path=directory / RESULT_FILE,
        trials=result["trials"],
    )


def run_search(
    spec: JobSpec,
    *,
    data: str | Path,
    run_dir: str | Path,
    hooks: Hooks | None = None,
    on_update: Callable[[dict], None] | None = None,
    keras_home: str | Path | None = None,
    verbose: int = 0,
) -> SearchResult:
    """Search `spec.search_space` on `data`; state and results live in RUN_DIR/tuner/.

    Progress events are the training loop's, with `trial`, `trials_done` and
    `trials_planned` added.
    """
    hooks = hooks or Hooks()
    base = spec.train_config()
    dataset, preprocess = load_for_config(base, data)
    directory = Path(run_dir) / TUNER_DIR
    identity = {
        "job": spec.model_dump(
            mode="json", exclude={"name", "idempotency_key", "then_train", "fold_noise_gate"}
        ),
        "fingerprint": dataset.fingerprint,
    }
    experiment.reset_if_changed(directory, identity)
    done = {"trials": 0}
    planned = planned_trials(spec)

    def on_update_counting(result: dict) -> None:
        done["trials"] = result["completed"] + result["failed"]
        if on_update:
            on_update(result)

    def run_trial(trial_id: str, config: TrainConfig, trial_dir: Path) -> dict[str, float]:
        def progress(event: dict) -> None:
            if hooks.on_progress:
                extra = {"trials_done": done["trials"], "trials_planned": planned}
                hooks.on_progress({**event, "trial": trial_id, **extra})

        run = trial_dir / "run"
        checkpoints = run / CHECKPOINTS_DIR
        experiment.reset_if_changed(
            run, {"config": config.model_dump(), "fingerprint": dataset.fingerprint}
        )
        classifier, state = experiment.fit(
            config,
            classes=dataset.classes,
            train=dataset.splits["train"],
            val=dataset.splits["val"],
            preprocess=preprocess,
            checkpoint_dir=checkpoints,
            hooks=Hooks(on_progress=progress, should_stop=hooks.should_stop),
            keras_home=keras_home,
            verbose=verbose,
        )
        metrics = experiment.score(
            classifier, dataset.splits["val"], dataset.classes, preprocess, config
        )
        experiment.write_json(
            trial_dir / TRIAL_RESULT,
            {
                "trial_id": trial_id,
                "config": config.model_dump(),
                "metrics": experiment.headline(metrics),
                "seconds": round(sum(state.phase_seconds.values()), 3),
                "history": state.history,
            },
        )
        discard_checkpoints(checkpoints)
        return {"val_loss": metrics["loss"], "val_accuracy": metrics["accuracy"]}

    return search_loop(
        spec, directory, run_trial, hooks=hooks, on_update=on_update_counting, verbose=verbose
    )
