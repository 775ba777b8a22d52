r"""The model lifecycle, like TensorFlow Serving's manager but safer.

A polling thread scans MODEL_DIR. A version the policy wants is loaded, its golden
inputs are replayed through the real predict path and must match the stored
outputs, its warmup requests run, and only then is it swapped in. A version that
fails any step is refused with the reason and never served.

Each model has *roles*: every label (stable, canary, ...) and the version policy
("latest", or each pinned version). A role is held by an AVAILABLE version. A role
that wants another version keeps its holder until the wanted version is AVAILABLE,
so a version that serves is unloaded only once nothing holds it any more:

    START -> LOADING -> AVAILABLE -> (no role holds it) -> END (unloaded)
                   \-> END with error (refused; retried when its files change)

An unloaded version that a role wants again is loaded again. A refused version is
retried when its files' size/mtime fingerprint changes, with exponential backoff.
A labels.json that cannot be read or names a version that cannot load leaves the
last good mapping in place and is reported per model (problems()). One model's
broken files never stop the scan of the others. In-flight requests keep a
reference to the version they started on; it is released when they finish.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from imgclf import contract, registry, repository
from imgclf.artifact import BF16_TOLERANCE, LoadedVersion, golden_images, replay_golden
from imgclf.cpu import BF16_FLAGS as _BF16_CPU_FLAGS
from imgclf.cpu import cpu_has_bf16
from imgclf.errors import Conflict, NotFound, NotReady, RepositoryError
from imgclf.server import batchsize
from imgclf.server.batching import Batcher
from imgclf.settings import Settings

log = logging.getLogger(__name__)
_WARMUP_RECORDS = 100


class State(enum.IntEnum):
    """TensorFlow Serving's ModelVersionStatus.State values."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(eq=False)
class ServedVersion:
    name: str
    version: int
    path: Path
    state: State = State.START
    error: str = ""
    loaded: LoadedVersion | None = field(default=None, repr=False)
    load_seconds: float = 0.0
    warmup_seconds: float = 0.0
    batch_limit: int = 0  # its batches hold at most this many images (batchsize.py)
    # A refused version: the files' fingerprint when it was refused, how many
    # attempts failed, and the earliest time (monotonic) it may be tried again.
    fingerprint: tuple = field(default=(), repr=False)
    attempts: int = 0
    retry_at: float = 0.0

    @property
    def refused(self) -> bool:
        return self.state == State.END and bool(self.error)

    @property
    def labels(self) -> list[str]:
        assert self.loaded is not None
        return self.loaded.labels


_BF16_OPTION = "auto_mixed_precision_onednn_bfloat16"


def enable_bfloat16() -> None:
    """Turn on oneDNN's bfloat16 auto mixed precision for every graph run from now on.

    Process-wide and one-way: it must be set before versions are loaded, as Grappler
    rewrites a function when it is first run (bench/bf16.py measures the effect).
    """
    import tensorflow as tf

    if not cpu_has_bf16():
        log.warning(
            "IMGCLF_BFLOAT16 is set but this CPU has no %s: the rewrite is skipped or "
            "emulated (slower), not faster",
            "/".join(_BF16_CPU_FLAGS),
        )
    tf.config.optimizer.set_experimental_options({_BF16_OPTION: True})
    log.info("bfloat16 auto mixed precision on (oneDNN); golden tolerance %s", BF16_TOLERANCE)


def run_warmup(loaded: LoadedVersion) -> int:
    """Replay TF Serving's warmup records (assets.extra) through serving_default."""
    path = loaded.path / contract.WARMUP_FILE
    if not path.is_file():
        return 0
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    count = 0
    for raw in tf.data.TFRecordDataset(str(path)).take(_WARMUP_RECORDS):
        entry = prediction_log_pb2.PredictionLog.FromString(raw.numpy())
        tensor = entry.predict_log.request.inputs.get(contract.INPUT_IMAGE_BYTES)
        if tensor is None:
            continue
        images = [bytes(b) for b in tf.make_ndarray(tensor).reshape(-1)]
        loaded.predict_bytes(images)
        count += 1
    return count


LATEST = registry.LATEST_ROLE
_MAX_BACKOFF_S = 60.0


def role_name(role: str) -> str:
    """How a role reads in messages: 'label stable' or 'the version policy (latest)'."""
    if role.startswith("policy:"):
        return f"the version policy ({role.split(':', 1)[1]})"
    return f"label {role!r}"


def fingerprint(path: Path) -> tuple:
    """(relative path, size, mtime_ns) of every file under a version: changes on any write.

    A refused version is retried only when this changes, so a half-written version is
    picked up once it is completed and a broken one is not reloaded on every poll.
    """
    entries = []
    try:
        for entry in sorted(path.rglob("*")):
            try:
                stat = entry.stat()
            except OSError:
                continue
            entries.append((str(entry.relative_to(path)), stat.st_size, stat.st_mtime_ns))
    except OSError:
        return ()
    return tuple(entries)


@dataclass(eq=False)
class ModelState:
    """One model's versions, which version holds each role, and what is wrong with it."""

    versions: dict[int, ServedVersion] = field(default_factory=dict)
    holders: dict[str, int] = field(default_factory=dict)  # role -> AVAILABLE version
    file_labels: dict[str, int] = field(default_factory=dict)  # last good labels.json
    problems: dict[str, str] = field(default_factory=dict)  # topic -> message
    scanned: bool = False
    # Serialises loads, label moves and unloads of this model (not requests).
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)


class ModelManager:
    def __init__(self, settings: Settings, on_batch=None, on_load=None) -> None:
        self.settings = settings
        self.model_dir = Path(settings.model_dir)
        self._lock = threading.RLock()  # guards the dicts below; held only briefly
        self._models: dict[str, ModelState] = {}
        self._batchers: dict[str, Batcher] = {}
        self._on_batch = on_batch
        self._on_load = on_load
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if settings.bfloat16:
            enable_bfloat16()  # before any version is loaded

    # ---- polling -----------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="model-manager", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for batcher in self._batchers.values():
            batcher.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("model repository scan failed")
            self._stop.wait(self.settings.poll_interval)

    def configured_models(self) -> list[str]:
        return list(self.settings.models) or repository.list_models(self.model_dir)

    def poll_once(self) -> None:
        """Scan every model; an error in one model is reported on it and the scan goes on."""
        for name in self.configured_models():
            if self._stop.is_set():
                return
            model = self._model(name)
            try:
                self._poll_model(name, model)
                self._clear(name, model, "scan")
            except Exception as exc:
                log.exception("model %s: repository scan failed", name)
                self._problem(name, model, "scan", f"repository scan failed: {exc}"[:500])
            model.scanned = True

    def _model(self, name: str) -> ModelState:
        with self._lock:
            model = self._models.get(name)
            if model is None:
                model = self._models[name] = ModelState()
                self._batchers[name] = Batcher(
                    name,
                    max_batch_size=self.settings.max_batch_size,
                    batch_timeout_s=self.settings.batch_timeout_ms / 1000.0,
                    max_queue=self.settings.queue_bound(),
                    on_batch=(
                        (lambda *timing, m=name: self._on_batch(m, *timing))
                        if self._on_batch
                        else None
                    ),
                )
            return model

    def _read_labels(self, name: str, model: ModelState) -> dict[str, int]:
        """labels.json, or the last good mapping when it cannot be read."""
        try:
            model.file_labels = registry.aliases(self.model_dir, name)
        except RepositoryError as exc:
            kept = {k: v for k, v in model.holders.items() if k != LATEST}
            self._problem(name, model, "labels.json", f"{exc}; keeping the last good labels {kept}")
            return dict(model.file_labels)
        self._clear(name, model, "labels.json")
        return dict(model.file_labels)

    def _wanted(self, model: ModelState, versions: list[int], labels: dict[str, int]) -> dict:
        """role -> the version it should move to (labels, and the version policy). A
        refused version counts for the policy again only once its files have changed
        and its backoff has passed."""
        return registry.policy_roles(
            versions,
            labels,
            self.settings.version_policy,
            self.settings.serve_versions,
            may_try=lambda version: self._may_try(model, version),
        )

    def _may_try(self, model: ModelState, version: int, *, now: float | None = None) -> bool:
        served = model.versions.get(version)
        if served is None or not served.refused:
            return True
        now = time.monotonic() if now is None else now
        return now >= served.retry_at and fingerprint(served.path) != served.fingerprint

    def _poll_model(self, name: str, model: ModelState) -> None:
        with model.lock:
            versions = repository.list_versions(self.model_dir, name)
            labels = self._read_labels(name, model)
            # A refused load makes the policy want an older version: settle again.
            for _ in range(4):
                wanted = self._wanted(model, versions, labels)
                refused_before = sum(s.refused for s in model.versions.values())
                for version in sorted(set(wanted.values()), reverse=True):
                    if version in versions:
                        self._ensure_loaded(name, model, version)
                if sum(s.refused for s in model.versions.values()) == refused_before:
                    break
            self._assign(name, model, wanted, versions)
            self._unload_unheld(name, model)
            with self._lock:
                for version, served in list(model.versions.items()):
                    if version not in versions and served.state != State.AVAILABLE:
                        del model.versions[version]

    def _assign(
        self, name: str, model: ModelState, wanted: dict[str, int], versions: list[int]
    ) -> None:
        """Move each role to its wanted version if AVAILABLE; else it keeps its holder."""
        with self._lock:
            for role, version in wanted.items():
                served = model.versions.get(version)
                topic = f"role {role}"
                if served is not None and served.state == State.AVAILABLE:
                    if model.holders.get(role) != version:
                        log.info("model %s: %s -> version %s", name, role_name(role), version)
                    model.holders[role] = version
                    self._clear(name, model, topic)
                    continue
                kept = model.holders.get(role)
                if role == LATEST and kept is not None and version < kept:
                    continue  # the policy's newest candidate was refused; nothing to report
                if version not in versions:
                    why = "does not exist"
                elif served is None:
                    why = "is not loaded yet"
                else:
                    why = f"is {served.state.name}" + (f": {served.error}" if served.error else "")
                still = f"version {kept} still serves" if kept else "no version serves it"
                message = f"{role_name(role)} wants version {version}, which {why}; {still}"
                self._problem(name, model, topic, message)
            for role in list(model.holders):
                if role not in wanted:
                    log.info("model %s: %s removed", name, role_name(role))
                    del model.holders[role]
                    self._clear(name, model, f"role {role}")

    def _unload_unheld(self, name: str, model: ModelState) -> None:
        """Unload AVAILABLE versions that no role holds any more (requests keep theirs)."""
        with self._lock:
            held = set(model.holders.values())
            for version, served in model.versions.items():
                if served.state == State.AVAILABLE and version not in held:
                    served.state = State.END
                    served.loaded = None  # in-flight requests hold their own reference
                    log.info("model %s version %s unloaded (nothing points at it)", name, version)

    def _ensure_loaded(
        self, name: str, model: ModelState, version: int, *, explicit: bool = False
    ) -> ServedVersion | None:
        """Load `version` unless it serves already or is refused with unchanged files.

        `explicit` (an operator's label move) skips the backoff but still never
        reloads a refused version whose files are unchanged: its reason stands.
        """
        served = model.versions.get(version)
        if served is not None and served.state == State.AVAILABLE:
            return served
        if served is not None and served.refused:
            now = 0.0 if explicit else None
            if explicit:
                served.retry_at = 0.0
            if not self._may_try(model, version, now=now):
                return served
        path = repository.version_path(self.model_dir, name, version)
        if not path.is_dir():
            return served
        return self._load(name, model, version, attempts=served.attempts if served else 0)

    def _load(self, name: str, model: ModelState, version: int, attempts: int) -> ServedVersion:
        path = repository.version_path(self.model_dir, name, version)
        served = ServedVersion(name, version, path, state=State.LOADING)
        served.fingerprint = fingerprint(path)
        with self._lock:
            model.versions[version] = served
        started = time.monotonic()
        try:
            loaded = LoadedVersion(path)
            served.load_seconds = time.monotonic() - started
            replay_golden(loaded, bfloat16=self.settings.bfloat16)
            started = time.monotonic()
            run_warmup(loaded)
            self._limit_batches(served, loaded)
            served.warmup_seconds = time.monotonic() - started
        except Exception as exc:
            served.attempts = attempts + 1
            backoff = min(_MAX_BACKOFF_S, self.settings.poll_interval * 2**served.attempts)
            served.retry_at = time.monotonic() + backoff
            served.error = f"{type(exc).__name__}: {exc}"[:500]
            served.state = State.END
            log.error(
                "model %s version %s refused (attempt %d; retried when its files change, "
                "not before %.1fs): %s",
                name,
                version,
                served.attempts,
                backoff,
                served.error,
            )
            return served
        served.loaded = loaded
        served.state = State.AVAILABLE
        log.info(
            "model %s version %s available (load %.1fs, warmup %.1fs)",
            name,
            version,
            served.load_seconds,
            served.warmup_seconds,
        )
        if self._on_load:
            self._on_load(served)
        return served

    def _limit_batches(self, served: ServedVersion, loaded: LoadedVersion) -> None:
        """Cap the version's batches at its most efficient size (IMGCLF_TUNE_BATCH_SIZE),
        timed on its golden images through serving_default, as requests run."""
        most = served.batch_limit = self.settings.max_batch_size
        images = golden_images(loaded) if self.settings.tune_batch_size and most > 1 else []
        if not images:
            return
        started = time.monotonic()
        rates = batchsize.measure_rates(
            lambda n: loaded.predict_bytes([images[i % len(images)] for i in range(n)]), most
        )
        served.batch_limit = batchsize.choose_limit(rates)
        log.info(
            "model %s version %s: batches of at most %d (images/s by batch size: %s; "
            "measured in %.1fs)",
            served.name,
            served.version,
            served.batch_limit,
            batchsize.describe(rates),
            time.monotonic() - started,
        )

    def _problem(self, name: str, model: ModelState, topic: str, message: str) -> None:
        if model.problems.get(topic) != message:
            log.error("model %s: %s", name, message)
        model.problems[topic] = message

    def _clear(self, name: str, model: ModelState, topic: str) -> None:
        if model.problems.pop(topic, None) is not None:
            log.info("model %s: %s resolved", name, topic)

    # ---- label moves (REST, gRPC, CLI through labels.json) -------------------------
    def set_label(self, name: str, label: str, version: int, by: str) -> dict[str, int]:
        """Point `label` at `version` only once that version serves; else Conflict (409).

        The version is loaded, replayed and warmed up first; labels.json is written only
        if that worked, and the label moves at once, so the answer's version serves.
        """
        registry.validate_alias(label)
        model = self._known_model(name)
        with model.lock:
            if version not in repository.list_versions(self.model_dir, name):
                raise NotFound(f"model {name!r} has no version {version}")
            if self.settings.version_policy == "specific" and (
                version not in self.settings.serve_versions
            ):
                raise Conflict(
                    f"model {name!r} version {version} is not in IMGCLF_SERVE_VERSIONS "
                    f"{list(self.settings.serve_versions)}; label {label!r} unchanged"
                )
            served = self._ensure_loaded(name, model, version, explicit=True)
            if served is None or served.state != State.AVAILABLE:
                reason = served.error if served is not None else "its folder is missing"
                current = model.holders.get(label)
                raise Conflict(
                    f"model {name!r} version {version} cannot serve ({reason}); label "
                    f"{label!r} unchanged"
                    + (f" (still version {current})" if current is not None else "")
                )
            labels = registry.set_alias(self.model_dir, name, label, version, by=by)
            model.file_labels = labels
            with self._lock:
                model.holders[label] = version
                self._clear(name, model, f"role {label}")
            log.info("model %s: label %r -> version %s (%s)", name, label, version, by)
            self._unload_unheld(name, model)
            return labels

    def rollback(self, name: str, label: str = registry.STABLE) -> int:
        """Move `label` to the version it held before (see registry.rollback), safely."""
        target = registry.rollback_target(self.model_dir, name, label)
        self.set_label(name, label, target, by="rollback")
        return target

    # ---- queries -------------------------------------------------------------------
    def _known_model(self, name: str) -> ModelState:
        with self._lock:
            model = self._models.get(name)
        if model is None:
            raise NotFound(f"model {name[:64]!r} is not served (no such model in the repository)")
        return model

    def batcher(self, name: str) -> Batcher:
        return self._batchers[name]

    def models(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    def is_known(self, name: str, version: int | None = None) -> bool:
        """Whether a model (and version) exists here: metric labels take only these values."""
        with self._lock:
            model = self._models.get(name)
            return model is not None and (version is None or version in model.versions)

    def labels(self, name: str) -> dict[str, int]:
        """The labels as they serve (a label moves only once its version is AVAILABLE)."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                return {}
            return {k: v for k, v in model.holders.items() if not k.startswith("policy:")}

    def problems(self, name: str) -> list[str]:
        """What is wrong with this model now (unreadable labels.json, refused targets...)."""
        with self._lock:
            model = self._models.get(name)
            return sorted(model.problems.values()) if model else []

    def statuses(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[ServedVersion]:
        with self._lock:
            model = self._models.get(name)
            if not model or not model.versions:
                raise NotFound(
                    f"model {name[:64]!r} is not served (no such model under the repository)"
                )
            if label is not None:
                version = self._label_version(name, model, label)
            if version is not None:
                if version not in model.versions:
                    raise NotFound(f"model {name!r} has no version {version} being served")
                return [model.versions[version]]
            return sorted(model.versions.values(), key=lambda s: s.version, reverse=True)

    def _label_version(self, name: str, model: ModelState, label: str) -> int:
        if label.startswith("policy:") or label not in model.holders:
            raise NotFound(f"model {name!r} has no label {label[:64]!r}")
        return model.holders[label]

    def _default(self, model: ModelState) -> ServedVersion | None:
        """stable, else the version policy's holder, else the newest AVAILABLE version."""
        for role in (registry.STABLE, LATEST):
            served = model.versions.get(model.holders.get(role, -1))
            if served is not None and served.state == State.AVAILABLE:
                return served
        available = [s for s in model.versions.values() if s.state == State.AVAILABLE]
        return max(available, key=lambda s: s.version) if available else None

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> ServedVersion:
        """The version a request goes to: pinned version, label, else stable, else newest."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                raise NotFound(f"model {name[:64]!r} not found")
            if label is not None:
                version = self._label_version(name, model, label)
            if version is not None:
                served = model.versions.get(version)
                if served is None:
                    raise NotFound(f"model {name!r} version {version} is not served")
                if served.state != State.AVAILABLE or served.loaded is None:
                    raise NotReady(
                        f"model {name!r} version {version} is {served.state.name}"
                        + (f": {served.error}" if served.error else "")
                    )
                return served
            served = self._default(model)
            if served is None:
                raise NotReady(f"model {name!r} has no version loaded yet")
            return served

    def readiness(self) -> dict[str, dict]:
        """Per model: the version that answers by default, whether readiness waits on it, why.

        A model blocks readiness while it has a version that may still load (being
        loaded, or not tried yet) and none serving, or when it is named in IMGCLF_MODELS
        and serves nothing. A model whose every version was refused is reported, not fatal.
        """
        explicit = set(self.settings.models)
        out = {}
        for name in self.configured_models():
            with self._lock:
                model = self._models.get(name)
                # Ready only after a whole scan: labels are assigned once every version
                # they want was tried, so `/labels/stable` answers from the start.
                served = self._default(model) if model and model.scanned else None
                if served is not None:
                    out[name] = {"ready": True, "version": served.version, "reason": ""}
                    continue
                if model is None or not model.scanned:
                    blocking, reason = True, "not scanned yet"
                else:
                    pending = [
                        s
                        for s in model.versions.values()
                        if s.state in (State.START, State.LOADING)
                    ]
                    refused = [s for s in model.versions.values() if s.refused]
                    if pending:
                        blocking, reason = True, f"loading version {pending[0].version}"
                    elif refused:
                        blocking = name in explicit
                        reason = "every version was refused: " + "; ".join(
                            f"{s.version}: {s.error}" for s in refused
                        )
                    else:
                        blocking, reason = name in explicit, "no version published"
            out[name] = {"ready": False, "version": None, "reason": reason, "blocking": blocking}
        return out

    def ready(self, states: dict[str, dict] | None = None) -> bool:
        """Ready when no model blocks (see readiness) and there is at least one model."""
        states = self.readiness() if states is None else states
        return bool(states) and not any(s.get("blocking") for s in states.values())
