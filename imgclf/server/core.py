"""The serving core (data plane) shared by REST and gRPC: both protocol layers only
translate to and from these calls, so they give the same answers from the same
batcher and the same model copy."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from imgclf.artifact import LoadedVersion
from imgclf.errors import BadImageError, InvalidInput, PayloadTooLarge
from imgclf.server.imageinfo import sniff
from imgclf.server.manager import ModelManager, ServedVersion
from imgclf.server.metrics import Metrics
from imgclf.settings import Settings

_RESULT_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Target:
    """Which model and version a request asks for (version and label are exclusive)."""

    name: str
    version: int | None = None
    label: str | None = None


@dataclass
class Prediction:
    served: ServedVersion
    probabilities: np.ndarray  # float32 [n, classes]
    class_names: list[str]

    @property
    def version(self) -> int:
        return self.served.version

    def classes(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1).astype(np.int64)

    def labels(self) -> list[str]:
        names = self.class_names
        return [names[i] for i in self.classes()]

    def top_k(self, k: int) -> list[list[tuple[str, float]]]:
        k = max(1, min(int(k), len(self.class_names)))
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [
            [(self.class_names[i], float(row[i])) for i in idx]
            for row, idx in zip(self.probabilities, order, strict=True)
        ]


class DataPlane:
    def __init__(self, manager: ModelManager, settings: Settings, metrics: Metrics) -> None:
        self.manager = manager
        self.settings = settings
        self.metrics = metrics

    def check_images(self, images: Sequence[bytes]) -> None:
        """Limits first, before any decoding: count, and pixel count from the header."""
        if not images:
            raise InvalidInput("no images in the request")
        if len(images) > self.settings.max_images_per_request:
            raise PayloadTooLarge(
                f"{len(images)} images in one request; the limit is "
                f"{self.settings.max_images_per_request}"
            )
        for i, image in enumerate(images):
            if not isinstance(image, bytes | bytearray) or not image:
                raise BadImageError(f"image {i}: empty or not bytes")
            info = sniff(bytes(image))
            if info is None:
                raise BadImageError(f"image {i}: not a JPEG, PNG, GIF, BMP or WebP image")
            if info.pixels > self.settings.max_image_pixels:
                raise PayloadTooLarge(
                    f"image {i}: {info.width}x{info.height} pixels is over the limit of "
                    f"{self.settings.max_image_pixels} pixels"
                )

    def _run(
        self, served: ServedVersion, loaded: LoadedVersion, prepare: Callable[[], np.ndarray]
    ) -> Prediction:
        batcher = self.manager.batcher(served.name)
        with batcher.admission():
            future = batcher.submit(prepare(), loaded, loaded.predict_images)
        self.metrics.queue_depth.labels(served.name).set(batcher.depth())
        probabilities = future.result(timeout=_RESULT_TIMEOUT_S)
        prediction = Prediction(served, probabilities, loaded.labels)
        version = str(served.version)
        for label, row in zip(prediction.labels(), probabilities, strict=True):
            self.metrics.predictions.labels(served.name, version, label).inc()
            self.metrics.confidence.labels(served.name, version).observe(float(row.max()))
        return prediction

    def predict_bytes(self, target: Target, images: Sequence[bytes]) -> Prediction:
        """serving_default semantics: encoded images in, probabilities out."""
        self.check_images(images)
        served = self.manager.resolve(target.name, target.version, target.label)
        loaded = served.loaded  # held for the whole request, even if a swap happens meanwhile

        def prepare() -> np.ndarray:
            arrays = []
            for i, image in enumerate(images):
                try:
                    arrays.append(loaded.preprocess(bytes(image)))
                except BadImageError as exc:
                    raise BadImageError(f"image {i}: {exc}") from None
            return np.stack(arrays)

        return self._run(served, loaded, prepare)

    def predict_images(self, target: Target, images: np.ndarray) -> Prediction:
        """predict_images semantics: already-preprocessed float32 [n, H, W, 3]."""
        served = self.manager.resolve(target.name, target.version, target.label)
        loaded = served.loaded
        expected = loaded.image_shape
        try:
            images = np.asarray(images, dtype=np.float32)
        except (TypeError, ValueError):
            raise InvalidInput("images must be numbers, shaped [batch, H, W, 3]") from None
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(expected):
            raise InvalidInput(
                f"images must have shape [batch, {', '.join(map(str, expected))}], "
                f"got {list(images.shape)}"
            )
        if len(images) == 0:
            raise InvalidInput("no images in the request")
        if len(images) > self.settings.max_images_per_request:
            raise PayloadTooLarge(
                f"{len(images)} images in one request; the limit is "
                f"{self.settings.max_images_per_request}"
            )
        if not np.isfinite(images).all():
            raise InvalidInput("images contain NaN or infinite values")
        return self._run(served, loaded, lambda: images)

    def record(
        self, target: Target, protocol: str, code: int, version: int | None, started: float
    ) -> None:
        self.metrics.requests.labels(target.name, str(version or ""), protocol, str(code)).inc()
        self.metrics.latency.labels(target.name, protocol).observe(time.monotonic() - started)
