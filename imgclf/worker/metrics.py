"""The worker's Prometheus metrics: how many jobs ended in which status, and how long
they ran. Served on IMGCLF_WORKER_METRICS_PORT (off when 0) by the worker process, which
sees every job it runs end; the server's /metrics covers serving."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

# A training job runs for minutes to hours.
_JOB_BUCKETS = (10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)


class JobMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.jobs = Counter(
            "imgclf_jobs_total",
            "Jobs that reached a final status, by kind and status",
            ["kind", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "imgclf_job_seconds",
            "Wall time from start to final status, by kind and status",
            ["kind", "status"],
            buckets=_JOB_BUCKETS,
            registry=self.registry,
        )

    def on_finished(self, record: dict[str, Any]) -> None:
        kind, status = record.get("kind") or "train", record.get("status") or "unknown"
        self.jobs.labels(kind, status).inc()
        started, finished = record.get("started_at"), record.get("finished_at")
        if started and finished:
            seconds = (
                datetime.fromisoformat(finished) - datetime.fromisoformat(started)
            ).total_seconds()
            self.duration.labels(kind, status).observe(max(0.0, seconds))

    def serve(self, host: str, port: int) -> int:
        """Serve /metrics on host:port (0: a free port); returns the port."""
        server, _ = start_http_server(port, addr=host, registry=self.registry)
        return server.server_address[1]
