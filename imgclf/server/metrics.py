"""Prometheus metrics, in a registry per server so tests can run several side by side."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
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

    def on_batch(self, model: str, size: int) -> None:
        self.batch_size.labels(model).observe(size)

    def on_load(self, served) -> None:
        # The series exists (at 0) from the first load, not only after a request.
        self.queue_depth.labels(served.name).inc(0)
        self.load_seconds.labels(served.name, str(served.version)).set(served.load_seconds)
        self.warmup_seconds.labels(served.name, str(served.version)).set(served.warmup_seconds)
