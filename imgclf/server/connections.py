"""The REST listener (waitress): connection limits, idle timeouts, IPv6, JSON errors.

waitress serves at most `connection_limit` sockets and an idle one keeps its slot
until `channel_timeout`; its defaults (100 sockets, 120 s) let 100 idle clients
block every REST call, /healthz included. Sockets cost no thread while they wait
(waitress reads requests asynchronously and hands only complete ones to its
threads), so the limit here is far above the thread count and idle or slow
clients are dropped after a few seconds. Errors waitress answers itself (a body
over the limit, a malformed request) get the same JSON body as the Flask app's.
"""

from __future__ import annotations

import ipaddress
import json
import resource

from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import ErrorTask

from imgclf.settings import Settings

# Each connection is a file descriptor; gRPC, the model files and logs need some too.
_SPARE_FDS = 256


class JSONErrorTask(ErrorTask):
    """waitress' own error responses (413, 400...) as {"error": "..."}."""

    def execute(self) -> None:
        error = self.request.error
        if error.code == 413:
            limit = self.channel.adj.max_request_body_size
            message = f"request body over the limit of {limit} bytes (IMGCLF_MAX_REQUEST_BYTES)"
        else:
            message = f"{error.reason}: {error.body}"
        body = json.dumps({"error": message}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.append(("Content-Type", "application/json"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JSONErrorChannel(HTTPChannel):
    error_task_class = JSONErrorTask


def raise_fd_limit(wanted: int) -> int:
    """Lift this process's open-file soft limit towards `wanted` (never above the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def grpc_address(host: str, port: int) -> str:
    """host:port for gRPC, with an IPv6 literal in brackets ([::1]:8500)."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def build_rest_server(app, settings: Settings):
    """A waitress server for `app`, sized so idle and slow clients cannot starve others."""
    raise_fd_limit(settings.rest_connection_limit + _SPARE_FDS)
    server = create_server(
        app,
        host=settings.host,
        port=settings.rest_port,
        threads=settings.server_threads,
        connection_limit=settings.rest_connection_limit,
        channel_timeout=settings.rest_idle_timeout,
        cleanup_interval=max(1, int(settings.rest_idle_timeout / 2)),
        max_request_body_size=settings.max_request_bytes,
        asyncore_use_poll=True,  # select() stops at 1024 descriptors
        ident="imgclf",
    )
    server.channel_class = JSONErrorChannel
    return server
