"""The model lifecycle, like TensorFlow Serving's manager but safer.

A polling thread scans MODEL_DIR. A version the policy wants is loaded, its golden
inputs are replayed through the real predict path and must match the stored
outputs, its warmup requests run, and only then is it swapped in. A version that
fails any step is reported with the reason and never served. Labels move only to
versions that are loaded, so a label change never sends traffic to a version that
is still loading. In-flight requests keep a reference to the version they started
on; it is released when they finish.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from imgclf import contract, registry, repository
from imgclf.artifact import BF16_TOLERANCE, LoadedVersion, replay_golden
from imgclf.cpu import BF16_FLAGS as _BF16_CPU_FLAGS
from imgclf.cpu import cpu_has_bf16
from imgclf.errors import NotFound, NotReady, RepositoryError
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


class ModelManager:
    def __init__(self, settings: Settings, on_batch=None, on_load=None) -> None:
        self.settings = settings
        self.model_dir = Path(settings.model_dir)
        self._lock = threading.RLock()
        self._versions: dict[str, dict[int, ServedVersion]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._batchers: dict[str, Batcher] = {}
        self._on_batch = on_batch
        self._on_load = on_load
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if settings.bfloat16:
            enable_bfloat16()  # before any version is loaded

    # ---- lifecycle -------------------------------------------------------------
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

    def _desired(self, versions: list[int], labels: dict[str, int]) -> set[int]:
        existing = set(versions)
        labelled = {v for v in labels.values() if v in existing}
        policy = self.settings.version_policy
        if policy == "specific":
            return set(self.settings.serve_versions) & existing
        if policy == "labelled":
            return labelled or ({max(versions)} if versions else set())
        return labelled | ({max(versions)} if versions else set())

    def poll_once(self) -> None:
        for name in self.configured_models():
            if self._stop.is_set():
                return
            versions = repository.list_versions(self.model_dir, name)
            try:
                labels = registry.labels(self.model_dir, name)
            except RepositoryError as exc:
                log.error("model %s: %s; keeping the previous labels", name, exc)
                labels = dict(self._labels.get(name, {}))
            desired = self._desired(versions, labels)
            with self._lock:
                known = self._versions.setdefault(name, {})
                if name not in self._batchers:
                    self._batchers[name] = Batcher(
                        name,
                        max_batch_size=self.settings.max_batch_size,
                        batch_timeout_s=self.settings.batch_timeout_ms / 1000.0,
                        max_queue=self.settings.max_queue,
                        on_batch=(lambda n, m=name: self._on_batch(m, n))
                        if self._on_batch
                        else None,
                    )
            for version in sorted(desired - set(known)):
                self._load(name, version)
            with self._lock:
                for version, served in list(known.items()):
                    if version not in desired and served.state == State.AVAILABLE:
                        served.state = State.END
                        served.loaded = None  # in-flight requests hold their own reference
                        log.info("model %s version %s unloaded", name, version)
                    if version not in versions and served.state != State.AVAILABLE:
                        del known[version]
                self._labels[name] = self._effective_labels(name, labels)

    def _effective_labels(self, name: str, wanted: dict[str, int]) -> dict[str, int]:
        """Labels follow labels.json only once their version is loaded."""
        available = {
            v for v, s in self._versions.get(name, {}).items() if s.state == State.AVAILABLE
        }
        current = self._labels.get(name, {})
        out = {}
        for label, version in wanted.items():
            if version in available:
                out[label] = version
            elif current.get(label) in available:
                out[label] = current[label]
        return out

    def _load(self, name: str, version: int) -> None:
        path = repository.version_path(self.model_dir, name, version)
        served = ServedVersion(name, version, path, state=State.LOADING)
        with self._lock:
            self._versions[name][version] = served
        started = time.monotonic()
        try:
            loaded = LoadedVersion(path)
            served.load_seconds = time.monotonic() - started
            replay_golden(loaded, bfloat16=self.settings.bfloat16)
            started = time.monotonic()
            run_warmup(loaded)
            served.warmup_seconds = time.monotonic() - started
        except Exception as exc:
            served.state = State.END
            served.error = f"{type(exc).__name__}: {exc}"[:500]
            log.error("model %s version %s refused: %s", name, version, served.error)
            return
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

    # ---- queries ---------------------------------------------------------------
    def batcher(self, name: str) -> Batcher:
        return self._batchers[name]

    def models(self) -> list[str]:
        with self._lock:
            return sorted(self._versions)

    def labels(self, name: str) -> dict[str, int]:
        return dict(self._labels.get(name, {}))

    def statuses(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[ServedVersion]:
        with self._lock:
            known = self._versions.get(name)
            if not known:
                raise NotFound(f"model {name!r} is not served (no such model under the repository)")
            if label is not None:
                if label not in self._labels.get(name, {}):
                    raise NotFound(f"model {name!r} has no label {label!r}")
                version = self._labels[name][label]
            if version is not None:
                if version not in known:
                    raise NotFound(f"model {name!r} has no version {version} being served")
                return [known[version]]
            return sorted(known.values(), key=lambda s: s.version, reverse=True)

    def resolve(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> ServedVersion:
        """The version a request goes to: pinned version, label, else stable, else newest."""
        with self._lock:
            known = self._versions.get(name)
            if known is None:
                raise NotFound(f"model {name!r} not found")
            if label is not None:
                if label not in self._labels.get(name, {}):
                    raise NotFound(f"model {name!r} has no label {label!r}")
                version = self._labels[name][label]
            if version is not None:
                served = known.get(version)
                if served is None:
                    raise NotFound(f"model {name!r} version {version} is not served")
                if served.state != State.AVAILABLE or served.loaded is None:
                    raise NotReady(
                        f"model {name!r} version {version} is {served.state.name}"
                        + (f": {served.error}" if served.error else "")
                    )
                return served
            stable = self._labels.get(name, {}).get(registry.STABLE)
            if stable is not None and known.get(stable) and known[stable].state == State.AVAILABLE:
                return known[stable]
            available = [s for s in known.values() if s.state == State.AVAILABLE]
            if not available:
                raise NotReady(f"model {name!r} has no version loaded yet")
            return max(available, key=lambda s: s.version)

    def ready(self) -> bool:
        names = self.configured_models()
        with self._lock:
            return bool(names) and all(
                any(s.state == State.AVAILABLE for s in self._versions.get(n, {}).values())
                for n in names
            )
