"""The serving core (data plane) shared by REST and gRPC.

Every question a client can ask the model side goes through one method here:
predict, classify, explain, metadata, status, ready. Each method resolves the version
that serves, applies its own limits and records its own metrics; the protocol layers
only parse, call and encode, so REST and gRPC give the same answers from the same
batcher and model copy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from imgclf import contract, registry
from imgclf.artifact import LoadedVersion
from imgclf.errors import (
    BadImageError,
    Conflict,
    ImgclfError,
    InvalidInput,
    NotFound,
    NotReady,
    PayloadTooLarge,
    quote,
)
from imgclf.explanation import Explanations, heatmap_png, overlay_png
from imgclf.prediction import Prediction, card_min_score
from imgclf.server.batching import BatchFn, Inputs
from imgclf.server.imageinfo import DecodeBudget, sniff
from imgclf.server.manager import ModelManager, ServedVersion, State
from imgclf.server.metrics import Metrics
from imgclf.settings import Settings

_RESULT_TIMEOUT_S = 60.0
_MAX_VERSION = 2**63 - 1  # TF Serving's versions are int64


@dataclass(frozen=True)
class Target:
    """Which model and version a request asks for (version and alias are exclusive)."""

    name: str
    version: int | None = None
    alias: str | None = None  # a version alias (stable, canary), not a class name


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; the codecs use them to refuse before decoding."""

    max_images: int
    max_pixels: int
    max_request_bytes: int
    max_decode_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            settings.max_images_per_request,
            settings.max_image_pixels,
            settings.max_request_bytes,
            settings.max_decode_bytes,
        )


@dataclass
class _Call:
    version: int | None = None


def decode_and_predict(
    loaded: LoadedVersion, images: list[bytes]
) -> tuple[np.ndarray, dict[int, Exception]]:
    """One batch of encoded images through `serving_default` (decode + model in one call).

    Only when that call fails is each image decoded alone, to find the bad ones: they
    are reported by index, the others are predicted from their decoded tensors.
    """
    try:
        return loaded.predict_bytes(images), {}
    except BadImageError:
        pass
    decoded, good, errors = [], [], {}
    for i, image in enumerate(images):
        try:
            decoded.append(loaded.preprocess(image))
            good.append(i)
        except BadImageError as exc:
            errors[i] = exc
    probabilities = np.zeros((len(images), len(loaded.labels)), np.float32)
    if decoded:
        probabilities[good] = loaded.predict_images(np.stack(decoded))
    return probabilities, errors


def decode_and_explain(
    loaded: LoadedVersion, images: list[bytes]
) -> tuple[tuple[np.ndarray, np.ndarray], dict[int, Exception]]:
    """One batch through `explain`: ((heatmaps [n, H, W], probabilities [n, C]), errors).

    As decode_and_predict: only when the batch call fails is each image decoded alone;
    the decodable ones are explained again without the bad ones."""
    try:
        return loaded.explain_bytes(images), {}
    except BadImageError:
        pass
    good, errors = [], {}
    for i, image in enumerate(images):
        try:
            loaded.preprocess(image)
            good.append(i)
        except BadImageError as exc:
            errors[i] = exc
    size = loaded.image_shape[:2]
    heatmaps = np.zeros((len(images), *size), np.float32)
    probabilities = np.zeros((len(images), len(loaded.labels)), np.float32)
    if good:
        heatmaps[good], probabilities[good] = loaded.explain_bytes([images[i] for i in good])
    return (heatmaps, probabilities), errors


def _predict_images(
    loaded: LoadedVersion, images: np.ndarray
) -> tuple[np.ndarray, dict[int, Exception]]:
    return loaded.predict_images(images), {}


class DataPlane:
    def __init__(self, manager: ModelManager, settings: Settings, metrics: Metrics) -> None:
        self.manager = manager
        self.settings = settings
        self.metrics = metrics
        self.limits = Limits.from_settings(settings)

    # ---- the questions ---------------------------------------------------------------
    def predict(
        self, target: Target, inputs: Sequence[bytes] | np.ndarray, protocol: str
    ) -> Prediction:
        """Encoded images (serving_default) or preprocessed float32 [n, H, W, 3]
        (predict_images) in, probabilities out."""
        with self._call(target, protocol) as call:
            served, loaded = self.resolve(target)
            call.version = served.version
            if isinstance(inputs, np.ndarray):
                return self._run(served, loaded, self._check_tensors(loaded, inputs))
            return self._run(served, loaded, list(inputs))

    def classify(
        self,
        target: Target,
        images: Sequence[bytes],
        protocol: str,
        min_score: float | None = None,
    ) -> Prediction:
        """Encoded images in; the caller reads `top_k()` and `labels()` of the answer.

        `min_score` (already checked by prediction.parse_min_score) overrides the serving
        version's model-card default; below it an image's label is "unknown"."""
        with self._call(target, protocol) as call:
            served, loaded = self.resolve(target)
            call.version = served.version
            prediction = self._run(served, loaded, list(images))
            threshold = card_min_score(loaded.card) if min_score is None else min_score
            return dataclasses.replace(prediction, min_score=threshold)

    def explain(
        self,
        target: Target,
        images: Sequence[bytes],
        protocol: str,
        min_score: float | None = None,
    ) -> Explanations:
        """Encoded images in; prediction, Grad-CAM heatmaps and their PNGs out.

        The version's `explain` signature runs through the model's batcher (same queue,
        limits and metrics as predict, in batches of its own). A version exported
        before explanations existed answers Conflict (409 / FAILED_PRECONDITION).
        """
        with self._call(target, protocol) as call:
            served, loaded = self.resolve(target)
            call.version = served.version
            if not loaded.has_explain:
                raise Conflict(
                    f"model {quote(target.name)} version {served.version} was exported "
                    f"before explanations existed (it has no '{contract.EXPLAIN}' "
                    "signature); retrain it to get explanations (the new version's export "
                    "includes them), or use :predict / :classify with this one"
                )
            heatmaps, prediction = self._run_explain(served, loaded, list(images))
            # PNGs on the request thread, not the batch thread: the batch stays the model's.
            views = [loaded.preprocess(bytes(image)) for image in images]
            threshold = card_min_score(loaded.card) if min_score is None else min_score
            return Explanations(
                dataclasses.replace(prediction, min_score=threshold),
                heatmaps,
                [heatmap_png(h) for h in heatmaps],
                [overlay_png(v, h) for v, h in zip(views, heatmaps, strict=True)],
            )

    def metadata(self, target: Target, protocol: str) -> tuple[ServedVersion, object]:
        """(the version that serves, its SignatureDefMap proto as TF Serving returns it)."""
        with self._call(target, protocol) as call:
            served, loaded = self.resolve(target)
            call.version = served.version
            return served, loaded.signature_def_map

    def status(self, target: Target, protocol: str) -> list[ServedVersion]:
        """Every version the server knows of this model (or the one asked for), newest first."""
        with self._call(target, protocol):
            self._known(target.name)
            return self.manager.statuses(target.name, target.version, target.alias)

    def ready(self) -> tuple[bool, dict[str, dict]]:
        """(ready, per model {ready, version, reason, ...}): ready when no model that has a
        loadable version is without one that serves (see ModelManager.readiness)."""
        states = self.manager.readiness()
        return self.manager.ready(states), states

    # ---- resolution and limits ---------------------------------------------------------
    def _known(self, name: str) -> None:
        if name not in self.manager.models():
            raise NotFound(f"model {quote(name)} not found")

    def resolve(self, target: Target) -> tuple[ServedVersion, LoadedVersion]:
        """The version that serves `target` (registry.resolve_version over loaded versions),
        and its loaded model, held for the whole request even if a swap happens meanwhile."""
        self._known(target.name)
        if target.version is not None and not 0 <= target.version <= _MAX_VERSION:
            raise InvalidInput(f"version {quote(target.version)} is out of range")
        try:
            known = {s.version: s for s in self.manager.statuses(target.name)}
        except NotFound:  # the model's folder is there, no version yet
            known = {}
        available = {v for v, s in known.items() if s.state == State.AVAILABLE}
        pinned = known.get(target.version) if target.version is not None else None
        if pinned is not None and target.version not in available:
            raise NotReady(
                f"model {quote(target.name)} version {target.version} is {pinned.state.name}"
                + (f": {pinned.error}" if pinned.error else "")
            )
        if not available and target.version is None and target.alias is None:
            raise NotReady(f"model {quote(target.name)} has no version loaded yet")
        version = registry.resolve_version(
            target.name,
            available,
            self.manager.labels(target.name),
            version=target.version,
            alias=target.alias,
        )
        served = known[version]
        loaded = served.loaded
        if loaded is None:  # unloaded between the two looks
            raise NotReady(f"model {quote(target.name)} version {version} is being unloaded")
        return served, loaded

    def check_images(self, images: Sequence[bytes]) -> None:
        """Limits first, before any decoding: count, and pixel count from the header."""
        self._check_count(len(images))
        budget = DecodeBudget(self.limits.max_pixels, self.limits.max_decode_bytes)
        for i, image in enumerate(images):
            if not isinstance(image, bytes | bytearray) or not image:
                raise BadImageError(f"image {i}: empty or not bytes")
            info = sniff(bytes(image))
            if info is None:
                raise BadImageError(f"image {i}: not a JPEG, PNG, GIF, BMP or WebP image")
            budget.add(i, info)

    def _check_count(self, count: int) -> None:
        if count == 0:
            raise InvalidInput("no images in the request")
        if count > self.limits.max_images:
            raise PayloadTooLarge(
                f"{count} images in one request; the limit is {self.limits.max_images}"
            )

    def _check_tensors(self, loaded: LoadedVersion, images: np.ndarray) -> np.ndarray:
        expected = loaded.image_shape
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(expected):
            raise InvalidInput(
                f"images must have shape [batch, {', '.join(map(str, expected))}], "
                f"got {list(images.shape)}"
            )
        self._check_count(len(images))
        images = images.astype(np.float32, copy=False)
        if not np.isfinite(images).all():
            raise InvalidInput("images contain NaN or infinite values")
        return images

    # ---- the batcher and the metrics ------------------------------------------------------
    def _run(
        self, served: ServedVersion, loaded: LoadedVersion, inputs: list[bytes] | np.ndarray
    ) -> Prediction:
        if isinstance(inputs, np.ndarray):
            probabilities = self._batched(
                served, inputs, (loaded, "tensors"), lambda x: _predict_images(loaded, x)
            )
        else:
            probabilities = self._batched(
                served, inputs, (loaded, "bytes"), lambda x: decode_and_predict(loaded, x)
            )
        prediction = Prediction(served.name, served.version, probabilities, loaded.labels)
        self._record(served, prediction)
        return prediction

    def _run_explain(
        self, served: ServedVersion, loaded: LoadedVersion, images: list[bytes]
    ) -> tuple[np.ndarray, Prediction]:
        """(heatmaps [n, H, W], prediction) through the batcher, in batches of their own."""
        heatmaps, probabilities = self._batched(
            served, images, (loaded, contract.EXPLAIN), lambda x: decode_and_explain(loaded, x)
        )
        prediction = Prediction(served.name, served.version, probabilities, loaded.labels)
        self._record(served, prediction)
        return heatmaps, prediction

    def _batched(self, served: ServedVersion, inputs: Inputs, key: tuple, run: BatchFn):
        """One request's inputs through the model's batcher (encoded images are checked
        against the limits first); returns its rows of the batch's outputs."""
        batcher = self.manager.batcher(served.name)
        with batcher.admission():
            if not isinstance(inputs, np.ndarray):
                self.check_images(inputs)
                inputs = [bytes(image) for image in inputs]
            future = batcher.submit(inputs, key, run, served.batch_limit or None)
        self.metrics.queue_depth.labels(served.name).set(batcher.depth())
        try:
            return future.result(timeout=_RESULT_TIMEOUT_S)
        finally:  # so an idle model reads 0, not the depth its last request saw
            self.metrics.queue_depth.labels(served.name).set(batcher.depth())

    def _record(self, served: ServedVersion, prediction: Prediction) -> None:
        version = str(served.version)
        for name, row in zip(prediction.predicted_names(), prediction.probabilities, strict=True):
            self.metrics.predictions.labels(served.name, version, name).inc()
            self.metrics.confidence.labels(served.name, version).observe(float(row.max()))

    @contextlib.contextmanager
    def _call(self, target: Target, protocol: str) -> Iterator[_Call]:
        """Count the call and its latency under (model, version, protocol, code).

        Only models the server knows get series: label values never come from a client.
        """
        started = time.monotonic()
        call, code = _Call(), 200
        try:
            yield call
        except ImgclfError as exc:
            code = exc.status
            raise
        except Exception:
            code = 500
            raise
        finally:
            # Metrics bounds the label values itself: unknown models/versions -> "_unknown".
            self.metrics.request(
                target.name, call.version, protocol, code, time.monotonic() - started
            )
