"""Version swap under load: closed-loop gRPC clients while a new version is published.

Part of `python -m bench.serving`. Every answer carries the version that served it
(gRPC's model_spec.version), so the swap is timed from the clients' side: from the
rename that publishes the version to the first answer it gives.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from bench import common
from bench.load import grpc_client, run_load


def publish_copy(model_dir: Path, version_dir: Path) -> int:
    """Publish a copy of `version_dir` as the next version, the way the trainer publishes."""
    from imgclf import repository

    staging = repository.new_staging_dir(model_dir, common.MODEL_NAME)
    shutil.copytree(version_dir, staging, dirs_exist_ok=True)
    return repository.publish(staging, model_dir, common.MODEL_NAME)


def measure_swap(
    model_dir: Path, grpc_port: int, images: list[bytes], seconds: float, clients: int = 16
) -> dict:
    """16 gRPC clients; version 2 is published 2 s in. Times are seconds from publishing."""
    published: dict[str, float] = {}
    source = model_dir / common.MODEL_NAME / "1"

    def publish_later(t0: float) -> None:
        def run() -> None:
            time.sleep(2.0)
            published["t"] = time.perf_counter() - t0
            published["version"] = publish_copy(model_dir, source)

        threading.Thread(target=run, daemon=True).start()

    result = run_load(
        grpc_client(grpc_port, common.MODEL_NAME, images),
        clients,
        max_requests=100_000,
        max_seconds=seconds,
        on_start=publish_later,
    )
    t_pub = published.get("t", float("nan"))
    new = published.get("version", -1)
    first_new = min((t for t, v in result.versions if v == new), default=None)
    last_old = max((t for t, v in result.versions if v != new), default=None)
    during = [
        lat
        for (t, _), lat in zip(result.versions, result.latencies, strict=False)
        if first_new is not None and t_pub <= t <= first_new
    ]
    before = [
        lat for (t, _), lat in zip(result.versions, result.latencies, strict=False) if t < t_pub
    ]
    return {
        "clients": clients,
        "published_version": new,
        "swap_s": round(first_new - t_pub, 2) if first_new is not None else None,
        "last_old_answer_s": round(last_old - t_pub, 2) if last_old is not None else None,
        "requests": result.requests,
        "errors": result.errors,
        "error_samples": result.error_samples[:3],
        "images_per_s": round(result.throughput, 2),
        "p99_before_ms": common.percentiles(before)["p99_ms"],
        "p99_during_swap_ms": common.percentiles(during)["p99_ms"],
        "note": "version 2 is a copy of version 1; the server polls every 0.5 s",
    }
