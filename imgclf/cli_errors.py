"""Expected failures of the command line, turned into one line that says what to do.

A person running `imgclf` should never see a Python traceback for something that
is not a bug: a store or broker that is down, a port already taken, a wrong
environment variable. `explain(exc, settings)` returns that one line, or None for a
genuine bug (the caller then says how to get the traceback: `--debug`).
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys

from pydantic import ValidationError

from imgclf.errors import ImgclfError


class CommandParser(argparse.ArgumentParser):
    """argparse, but a wrong flag is one line (with where to look), not a usage dump."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def port(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free port) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port must be a number, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535 (0 = any free port), got {value}")
    return value


def unit_interval(text: str) -> float:
    """An argparse type: a number between 0 and 1 (a score threshold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1, got {text}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def environment_error(exc: ValidationError) -> str:
    """A bad IMGCLF_* value: name the variable, the value and the rule, in one line."""
    parts = []
    for err in exc.errors():
        field = str(err["loc"][0]) if err["loc"] else "?"
        reason = err["msg"].removeprefix("Value error, ")
        parts.append(f"IMGCLF_{field.upper()}={err.get('input')!r}: {reason}")
    return "bad environment: " + "; ".join(parts) + " (fix or unset the variable)"


def check_port_free(host: str, number: int, flag: str, variable: str) -> None:
    """Refuse a taken port before starting anything, naming the flag that changes it."""
    if number == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, number))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ImgclfError(
                    f"port {number} on {host} is already in use (another imgclf serve?): "
                    f"stop that process or pick another port with {flag} or {variable}"
                ) from None
            raise ImgclfError(f"cannot listen on {host}:{number}: {exc.strerror}") from None


def explain(exc: BaseException, store_url: str | None) -> str | None:
    """The one-line message for an expected failure; None when it is a bug."""
    if isinstance(exc, ImgclfError):
        return str(exc)
    redis = sys.modules.get("redis")
    if redis is not None and isinstance(exc, redis.exceptions.ConnectionError):
        return (
            f"cannot reach the job store {store_url} ({exc}): start Redis there, or set "
            "IMGCLF_RESULT_BACKEND (and IMGCLF_BROKER_URL) to a reachable one; "
            "'imgclf demo' shows the embedded SQLite setup"
        )
    if redis is not None and isinstance(exc, redis.exceptions.TimeoutError):
        return f"the job store {store_url} did not answer in time ({exc}): check it is healthy"
    kombu = sys.modules.get("kombu.exceptions")
    if kombu is not None and isinstance(exc, kombu.OperationalError):
        return f"cannot reach the broker ({exc}): start it or set IMGCLF_BROKER_URL"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"{exc.strerror}: a port is taken; pick another with --rest-port / --grpc-port"
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return f"{exc.strerror}: {exc.filename}"
    return None
