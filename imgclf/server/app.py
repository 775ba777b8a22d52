"""One place wires everything: settings -> model manager -> data/control planes -> servers.

REST (waitress, threaded, same process) and gRPC share one model copy and one
batcher per model. `ImgclfServer` runs both in background threads; `serve()` is
the `imgclf serve` entry point and blocks until SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import signal
import threading

from grpc_health.v1 import health_pb2

from imgclf.server import crosssite
from imgclf.server.auth import Auth, check_startup
from imgclf.server.connections import build_rest_server, grpc_address
from imgclf.server.control import ControlPlane
from imgclf.server.core import DataPlane
from imgclf.server.grpc_service import SERVICE_NAMES, build_grpc_server
from imgclf.server.logqueue import queued_logging
from imgclf.server.manager import ModelManager
from imgclf.server.metrics import Metrics
from imgclf.server.rest import create_app
from imgclf.settings import Settings

log = logging.getLogger(__name__)


RETRY_AFTER_S = 1  # what a 503 (overloaded, not ready yet) tells a client to wait


def _retry_after(response):
    """Every 503 says when to come back (REST header; gRPC sends trailing metadata)."""
    if response.status_code == 503:
        response.headers.setdefault("Retry-After", str(RETRY_AFTER_S))
    return response


class ImgclfServer:
    def __init__(self, settings: Settings) -> None:
        check_startup(settings)
        self.settings = settings
        self.metrics = Metrics()
        self.manager = ModelManager(
            settings, on_batch=self.metrics.on_batch, on_load=self.metrics.on_load
        )
        self.metrics.known = self.manager.is_known
        self.data = DataPlane(self.manager, settings, self.metrics)
        self.control = ControlPlane(settings, self.manager)
        self.auth = Auth(settings)
        self.app = create_app(self.data, self.control, self.auth)
        crosssite.install(self.app, settings)
        self.app.after_request(_retry_after)
        self.grpc, self.grpc_port, self._health = build_grpc_server(
            self.data,
            self.control,
            self.auth,
            grpc_address(settings.host, settings.grpc_port),
            settings.server_threads,
        )
        self.rest = build_rest_server(self.app, settings)
        self.rest_port = self.rest.effective_port
        self._rest_thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> ImgclfServer:
        self.manager.start()
        self.grpc.start()
        self._rest_thread = threading.Thread(target=self.rest.run, name="rest", daemon=True)
        self._rest_thread.start()
        threading.Thread(target=self._watch_health, name="health", daemon=True).start()
        log.info(
            "imgclf serving %s: REST %s:%s, gRPC %s:%s",
            self.settings.model_dir,
            self.settings.host,
            self.rest_port,
            self.settings.host,
            self.grpc_port,
        )
        return self

    def _watch_health(self) -> None:
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        while not self._stop.wait(0.5):
            states = self.manager.readiness()  # one reading for the server and each model
            status = serving if self.manager.ready(states) else not_serving
            for name in ("", *SERVICE_NAMES):
                self._health.set(name, status)
            # Per model: service "model/<name>" is SERVING while the model answers.
            for name, state in states.items():
                self._health.set(f"model/{name}", serving if state["ready"] else not_serving)

    def wait_ready(self, timeout: float = 120) -> bool:
        deadline = threading.Event()
        for _ in range(int(timeout * 10)):
            if self.manager.ready():
                return True
            deadline.wait(0.1)
        return False

    def stop(self, grace: float = 5.0) -> None:
        self._stop.set()
        self.grpc.stop(grace).wait(grace + 1)
        self.rest.close()
        self.manager.stop()


def serve(settings: Settings) -> None:
    with queued_logging():  # access-log lines are written off the request threads
        _serve_until_signal(settings)


def _serve_until_signal(settings: Settings) -> None:
    server = ImgclfServer(settings).start()
    done = threading.Event()

    def shutdown(signum, _frame) -> None:
        log.info("signal %s: shutting down", signum)
        done.set()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    print(
        f"imgclf serving {settings.model_dir}: REST "
        f"http://{grpc_address(settings.host, server.rest_port)}"
        f"  gRPC {grpc_address(settings.host, server.grpc_port)}",
        flush=True,
    )
    done.wait()
    server.stop()
