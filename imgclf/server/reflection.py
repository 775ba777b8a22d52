"""gRPC server reflection for every service we expose, so grpcurl and other
reflection clients can list, describe and call them.

Reflection answers from the default descriptor pool, which only the `*_pb2` modules
fill: importing the `*_pb2_grpc` stubs alone leaves TF Serving's services listed but
"Symbol not found" when described. So this imports each service's `*_pb2` module and
refuses to start when a listed service is still missing from the pool.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health, health_pb2  # noqa: F401 - fills the pool
from grpc_reflection.v1alpha import reflection
from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2  # noqa: F401

from imgclf.v1 import imgclf_pb2  # noqa: F401 - fills the pool


def enable_reflection(service_names: Iterable[str], server: grpc.Server) -> tuple[str, ...]:
    """Serve reflection for `service_names`, health and reflection itself; returns them."""
    names = (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME)
    pool = descriptor_pool.Default()
    for name in names:
        pool.FindServiceByName(name)  # KeyError: its *_pb2 module is not imported
    reflection.enable_server_reflection(names, server)
    return names
