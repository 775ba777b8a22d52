"""Closed-loop load over loopback: N client threads, each with its own connection, each
sending one JPEG per request and waiting for the answer before the next.

Every loop is bounded twice, by a request count and by wall time, so a slow or
stuck server cannot make a benchmark run on. Request bodies are built before the
clock starts, so the clients spend as little CPU as they can (they share the 2
cores with the server they measure).
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.common import LOOPBACK, percentiles

# A client call: sends request number i, returns the served version (or 0 if unknown),
# raises on any failure.
Call = Callable[[int], int]


@dataclass
class LoadResult:
    clients: int
    requests: int
    errors: int
    seconds: float
    latencies: list[float] = field(repr=False, default_factory=list)
    # (seconds since start, served version) of every answered request, for swap timing.
    versions: list[tuple[float, int]] = field(repr=False, default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        """Answered images per second (one image per request)."""
        return self.requests / self.seconds if self.seconds else 0.0

    def summary(self) -> dict:
        return {
            "clients": self.clients,
            "requests": self.requests,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
            "images_per_s": round(self.throughput, 2),
            **percentiles(self.latencies),
            "error_samples": self.error_samples[:3],
        }


def run_load(
    make_call: Callable[[], Call],
    clients: int,
    *,
    max_requests: int,
    max_seconds: float,
    warmup: int = 2,
    on_start: Callable[[float], None] | None = None,
) -> LoadResult:
    """Run `clients` threads until `max_requests` answers in total or `max_seconds` pass.

    Each thread builds its own client with `make_call()` and sends `warmup` untimed
    requests first; the clock starts when all are warm. `on_start(t0)` runs once
    the clock has started (the swap benchmark publishes a version from it).
    """
    per_client = max(1, max_requests // clients)
    barrier = threading.Barrier(clients + 1)
    go = threading.Event()
    lock = threading.Lock()
    result = LoadResult(clients=clients, requests=0, errors=0, seconds=0.0)
    start = {"t0": 0.0, "deadline": 0.0}

    def worker() -> None:
        call = None
        try:
            call = make_call()
            for i in range(warmup):
                call(i)
        except Exception as exc:
            with lock:
                result.error_samples.append(f"warmup: {type(exc).__name__}: {exc}"[:200])
        barrier.wait()
        go.wait()
        if call is None:
            return
        latencies, versions, errors = [], [], 0
        for i in range(per_client):
            now = time.perf_counter()
            if now >= start["deadline"]:
                break
            try:
                version = call(i)
            except Exception as exc:
                errors += 1
                if len(result.error_samples) < 10:
                    with lock:
                        result.error_samples.append(f"{type(exc).__name__}: {exc}"[:200])
                continue
            done = time.perf_counter()
            latencies.append(done - now)
            versions.append((done - start["t0"], version))
        with lock:
            result.latencies += latencies
            result.versions += versions
            result.errors += errors

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start["t0"] = time.perf_counter()
    start["deadline"] = start["t0"] + max_seconds
    go.set()
    if on_start is not None:
        on_start(start["t0"])
    for thread in threads:
        thread.join(max_seconds + 60)
    result.seconds = time.perf_counter() - start["t0"]
    result.requests = len(result.latencies)
    return result


# ---- clients -----------------------------------------------------------------


class _HttpJson:
    """One keep-alive HTTP/1.1 connection posting prebuilt JSON bodies."""

    def __init__(self, port: int, path: str, bodies: Sequence[bytes]) -> None:
        self.port, self.path, self.bodies = port, path, bodies
        self.conn = http.client.HTTPConnection(LOOPBACK, port, timeout=60)

    def __call__(self, i: int) -> int:
        try:
            self.conn.request(
                "POST",
                self.path,
                body=self.bodies[i % len(self.bodies)],
                headers={"Content-Type": "application/json"},
            )
            response = self.conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            self.conn.close()
            self.conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=60)
            raise
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload[:120]!r}")
        return 0


def rest_client(port: int, model: str, images: Sequence[bytes]) -> Callable[[], Call]:
    """imgclf REST, TensorFlow Serving's format: {"instances": [{"b64": ...}]}."""
    bodies = [
        json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]}).encode()
        for image in images
    ]
    return lambda: _HttpJson(port, f"/v1/models/{model}:predict", bodies)


def peer_client(port: int, images: Sequence[bytes]) -> Callable[[], Call]:
    """The peer's JSON API: {"b64": ...} posted to /predict."""
    bodies = [json.dumps({"b64": base64.b64encode(image).decode()}).encode() for image in images]
    return lambda: _HttpJson(port, "/predict", bodies)


def grpc_client(port: int, model: str, images: Sequence[bytes]) -> Callable[[], Call]:
    """TensorFlow Serving's PredictionService.Predict with a DT_STRING `image_bytes` tensor.

    Each client has its own channel (its own TCP connection), like separate processes.
    Returns the version that answered, which the swap benchmark follows.
    """
    import grpc
    from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from imgclf import contract

    requests = []
    for image in images:
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model
        request.model_spec.signature_name = contract.SERVING_DEFAULT
        request.inputs[contract.INPUT_IMAGE_BYTES].CopyFrom(
            tensor_pb2.TensorProto(
                dtype=types_pb2.DT_STRING,
                tensor_shape=tensor_shape_pb2.TensorShapeProto(
                    dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]
                ),
                string_val=[image],
            )
        )
        requests.append(request)

    def make() -> Call:
        channel = grpc.insecure_channel(f"{LOOPBACK}:{port}")
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

        def call(i: int) -> int:
            response = stub.Predict(requests[i % len(requests)], timeout=60)
            return int(response.model_spec.version.value)

        return call

    return make
