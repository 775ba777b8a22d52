"""Prometheus: what the server and the worker export, and the Grafana dashboard in
deploy/ that must only query metrics the code exports."""

from __future__ import annotations

import base64
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from imgclf.server.metrics import Metrics
from imgclf.worker.metrics import JobMetrics
from tests.servers import copy_version, start_server

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy/grafana/imgclf-dashboard.json"
_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_series() -> set[str]:
    """Every series name the server's and the worker's registries can expose."""
    names = set()
    for registry in (Metrics().registry, JobMetrics().registry):
        for family in registry.collect():
            names |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
    return names


def dashboard_queries() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if isinstance(variable.get("query"), dict):
            queries.append(variable["query"]["query"])
    return queries


def test_every_dashboard_query_names_exported_metrics():
    exported = exported_series()
    queries = dashboard_queries()
    assert len(queries) >= 12
    used = set()
    for query in queries:
        names = set(re.findall(r"\b(imgclf_[a-z_]+)\b", query))
        assert names, f"query names no imgclf metric: {query}"
        assert names <= exported, f"{query}: {names - exported} not exported"
        used |= names
    # Every area the dashboard is for has a panel.
    for needed in (
        "imgclf_requests_total",
        "imgclf_request_seconds_bucket",
        "imgclf_batch_size_bucket",
        "imgclf_batch_run_seconds_sum",
        "imgclf_queue_depth",
        "imgclf_prediction_confidence_bucket",
        "imgclf_jobs_total",
        "imgclf_job_seconds_bucket",
    ):
        assert needed in used, needed


def test_worker_job_metrics_over_http():
    metrics = JobMetrics()
    port = metrics.serve("127.0.0.1", 0)
    metrics.on_finished(
        {
            "kind": "train",
            "status": "succeeded",
            "started_at": "2026-11-23T04:00:00.000+00:00",
            "finished_at": "2026-11-23T04:02:30.000+00:00",
        }
    )
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    labels = (("kind", "train"), ("status", "succeeded"))
    assert samples[("imgclf_jobs_total", labels)] == 1
    assert samples[("imgclf_job_seconds_sum", labels)] == 150


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("metrics") / "models"
    copy_version(trained.version_dir, model_dir, "shapes", 1)
    srv = start_server(model_dir)
    srv.base = f"http://127.0.0.1:{srv.rest_port}"
    srv.image = (trained.version_dir / "golden/0000.img").read_bytes()
    yield srv
    srv.stop()


def metric(server, name: str, labels: dict[str, str]) -> float:
    response = requests.get(f"{server.base}/metrics", timeout=10)
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    raise AssertionError(f"no {name}{labels}")


def queue_depth(server) -> float:
    return metric(server, "imgclf_queue_depth", {"model": "shapes"})


def test_queue_depth_reads_zero_when_idle_and_content_type_has_one_charset(server):
    response = requests.get(f"{server.base}/metrics", timeout=10)
    content_type = response.headers["Content-Type"]
    assert content_type.startswith("text/plain; version=")
    assert content_type.lower().count("charset") == 1, content_type
    assert queue_depth(server) == 0  # before any request
    body = {"instances": [{"b64": base64.b64encode(server.image).decode()}]}
    for _ in range(3):
        answer = requests.post(f"{server.base}/v1/models/shapes:predict", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
    assert queue_depth(server) == 0  # idle again


def test_each_version_reports_the_batch_size_it_measured_and_batches_stay_within_it(server):
    """The version was timed at batch 1, 2, 4 ... 32 when it loaded; its batches never
    exceed the size it chose, however many requests wait."""
    limit = metric(server, "imgclf_model_batch_limit", {"model": "shapes", "version": "1"})
    assert limit in (1, 2, 4, 8, 16, 32)
    body = {"instances": [{"b64": base64.b64encode(server.image).decode()}]}
    url = f"{server.base}/v1/models/shapes:predict"
    with ThreadPoolExecutor(40) as pool:
        codes = list(
            pool.map(lambda _: requests.post(url, json=body, timeout=60).status_code, range(120))
        )
    assert set(codes) <= {200, 503} and 200 in codes
    # The smallest histogram bound that holds every batch: the largest batch is at most it.
    response = requests.get(f"{server.base}/metrics", timeout=10)
    buckets = {
        float(sample.labels["le"]): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "imgclf_batch_size_bucket" and sample.labels["model"] == "shapes"
    }
    holds_all = min(bound for bound, count in buckets.items() if count == buckets[float("inf")])
    assert holds_all <= limit
    # Every batch also reports how long it stayed open and how long the model call took.
    model = {"model": "shapes"}
    batches = metric(server, "imgclf_batch_size_count", model)
    assert metric(server, "imgclf_batch_run_seconds_count", model) == batches
    assert metric(server, "imgclf_batch_gather_seconds_count", model) == batches
    assert metric(server, "imgclf_batch_run_seconds_sum", model) > 0
