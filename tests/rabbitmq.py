"""A throwaway rabbitmq-server (Debian's package) for the tests: own node name, ports,
data and log folders, so it never touches a system RabbitMQ."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import free_port


@dataclass
class RabbitServer:
    url: str
    proc: subprocess.Popen
    env: dict[str, str]

    def stop(self) -> None:
        subprocess.run(
            [_tool("rabbitmqctl") or "rabbitmqctl", "stop"],
            env=self.env,
            capture_output=True,
            timeout=60,
        )
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _tool(name: str) -> str | None:
    """Debian's /usr/sbin wrappers switch to the rabbitmq user when run as root, which
    cannot write our folders: prefer the scripts behind them."""
    behind = Path("/usr/lib/rabbitmq/bin") / name
    return str(behind) if behind.is_file() else shutil.which(name)


def start_rabbitmq(folder: Path, timeout: float = 90) -> RabbitServer | None:
    """Start one on loopback; None when the binary is missing or it does not come up."""
    from tests.conftest import _amqp_reachable

    binary = _tool("rabbitmq-server")
    if binary is None:
        return None
    port, dist = free_port(), free_port()
    node = f"imgclftest{port}@localhost"
    (folder / "rabbitmq.conf").write_text(
        f"listeners.tcp.local = 127.0.0.1:{port}\nloopback_users.guest = true\n"
    )
    (folder / "enabled_plugins").write_text("[].\n")
    env = {
        **os.environ,
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist),
        "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
        "RABBITMQ_LOG_BASE": str(folder / "log"),
        "RABBITMQ_PID_FILE": str(folder / "rabbit.pid"),
        "RABBITMQ_FEATURE_FLAGS_FILE": str(folder / "feature_flags"),
        "RABBITMQ_PLUGINS_EXPAND_DIR": str(folder / "plugins-expand"),
        "ERL_CRASH_DUMP": str(folder / "erl_crash.dump"),
        "HOME": str(folder),  # its own Erlang cookie
    }
    log = open(folder / "server.log", "ab")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([binary], env=env, stdout=log, stderr=subprocess.STDOUT)
    server = RabbitServer(f"amqp://guest:guest@127.0.0.1:{port}//", proc, env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if _amqp_reachable(server.url):
            return server
        time.sleep(0.5)
    server.stop()
    return None
