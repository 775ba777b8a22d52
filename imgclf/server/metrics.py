"""Prometheus metrics, in a registry per server so tests can run several side by side.

Label values come only from a bounded set: a model (and version) label is a name the
model manager knows, anything else is UNKNOWN. Each new label value is a series held
forever, so a client must never be able to choose one. Requests refused for a missing
or bad token are counted without any model label at all.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_BATCH_SECONDS_BUCKETS = (0.001, 0.0025, *_LATENCY_BUCKETS)  # a batch window is ms long


UNKNOWN = "_unknown"
_UNAUTHENTICATED = (401, 403)


class Metrics:
    def __init__(self, known: Callable[[str, int | None], bool] | None = None) -> None:
        # known(model, version): whether it exists; set by the server once the manager is up.
        self.known = known or (lambda _model, _version=None: False)
        self.registry = CollectorRegistry()
        r = self.registry
        self.unauthenticated = Counter(
            "imgclf_unauthenticated_total",
            "Requests refused for a missing, invalid or insufficient token",
            ["protocol"],
            registry=r,
        )
        self.requests = Counter(
            "imgclf_requests_total",
            "Requests by model, version, protocol and status code",
            ["model", "version", "protocol", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "imgclf_request_seconds",
            "Request latency",
            ["model", "protocol"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "imgclf_batch_size",
            "Images per model call",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        # Where a batch's time goes: gathering requests (the batch window) or the model call.
        # rate(imgclf_batch_run_seconds_sum) is the share of time a server's model is busy:
        # near 1 it is saturated; well below 1 under load, batches wait for requests.
        self.batch_gather = Histogram(
            "imgclf_batch_gather_seconds",
            "Time a batch stayed open for requests to join, from when the batcher took its "
            "first request off the queue to the model call",
            ["model"],
            buckets=_BATCH_SECONDS_BUCKETS,
            registry=r,
        )
        self.batch_run = Histogram(
            "imgclf_batch_run_seconds",
            "Time of one model call for a whole batch (joining its inputs included; failed "
            "calls too)",
            ["model"],
            buckets=_BATCH_SECONDS_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "imgclf_queue_depth", "Requests waiting for a batch", ["model"], registry=r
        )
        self.load_seconds = Gauge(
            "imgclf_model_load_seconds", "Time to load a version", ["model", "version"], registry=r
        )
        self.warmup_seconds = Gauge(
            "imgclf_model_warmup_seconds",
            "Time to warm up a version",
            ["model", "version"],
            registry=r,
        )
        self.batch_limit = Gauge(
            "imgclf_model_batch_limit",
            "Most images in one model call for a version (its most efficient batch size, "
            "measured at load, or max_batch_size)",
            ["model", "version"],
            registry=r,
        )
        self.predictions = Counter(
            "imgclf_predictions_total",
            "Predicted class counts",
            ["model", "version", "label"],
            registry=r,
        )
        self.confidence = Histogram(
            "imgclf_prediction_confidence",
            "Top-1 probability",
            ["model", "version"],
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
            registry=r,
        )

    def model_label(self, model: str) -> str:
        return model if self.known(model, None) else UNKNOWN

    def version_label(self, model: str, version: int | None) -> str:
        if version is None:
            return ""
        return str(version) if self.known(model, version) else UNKNOWN

    def request(
        self, model: str, version: int | None, protocol: str, code: int, seconds: float
    ) -> None:
        """One finished model request, with bounded label values."""
        if code in _UNAUTHENTICATED:
            self.unauthenticated.labels(protocol).inc()
            return
        name = self.model_label(model)
        self.requests.labels(name, self.version_label(model, version), protocol, str(code)).inc()
        self.latency.labels(name, protocol).observe(seconds)

    def on_batch(self, model: str, size: int, gathered_s: float, ran_s: float) -> None:
        self.batch_size.labels(model).observe(size)
        self.batch_gather.labels(model).observe(gathered_s)
        self.batch_run.labels(model).observe(ran_s)

    def on_load(self, served) -> None:
        # The series exists (at 0) from the first load, not only after a request.
        self.queue_depth.labels(served.name).inc(0)
        self.load_seconds.labels(served.name, str(served.version)).set(served.load_seconds)
        self.warmup_seconds.labels(served.name, str(served.version)).set(served.warmup_seconds)
        self.batch_limit.labels(served.name, str(served.version)).set(served.batch_limit)
