"""Cross-site request checks for the tokenless (loopback) mode.

With no admin token the server accepts management calls from anything that can reach
loopback, and a web page open in the developer's browser can: a form or fetch() sends
a "simple" cross-site POST (text/plain, form-encoded) without asking first, and DNS
rebinding makes a foreign name resolve to 127.0.0.1. So, when no admin token is set,
a request that changes state (moves a label, submits or cancels a job) must:

- carry `Content-Type: application/json` (a browser sends that cross-site only after a
  CORS preflight, which this server never approves);
- name a loopback host in `Host` (refuses DNS rebinding), and
- have no `Origin`, or an Origin whose host is a loopback name (refuses other sites).

Predictions change nothing and keep TensorFlow Serving's lenient rules (curl -d sends
form-encoded). With admin tokens configured a browser cannot attach the bearer token
cross-site, so the token is the protection and these checks are off.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from flask import Flask, request

from imgclf.errors import Forbidden, UnsupportedMediaType
from imgclf.settings import Settings

_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
# Any ":verb" on a model path is a data-plane call (predict, classify, upload, regress,
# or an unknown verb that gets its 404): none changes state.
_PREDICT_VERB = re.compile(r":[^/:]+$")
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def _host_name(value: str) -> str:
    """'127.0.0.1:8501' -> '127.0.0.1', '[::1]:8501' -> '::1' (lower case)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def is_loopback_host(value: str) -> bool:
    return _host_name(value) in _LOOPBACK_NAMES or _host_name(value).startswith("127.")


def changes_state(method: str, path: str) -> bool:
    """Label moves and job submits/cancels; predictions and reads do not count."""
    return method not in _SAFE_METHODS and not _PREDICT_VERB.search(path)


def check(method: str, path: str, content_type: str, host: str, origin: str | None) -> None:
    """Raise 415/403 for a state-changing request that a foreign web page could forge."""
    if not changes_state(method, path):
        return
    if method != "DELETE" and content_type.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(
            f"{method} {path[:80]} needs Content-Type: application/json "
            f"(got {content_type[:60] or 'none'!r})"
        )
    if not is_loopback_host(host):
        raise Forbidden(
            f"Host {host[:80]!r} is not a loopback name: without admin tokens this server "
            "only takes management calls addressed to localhost"
        )
    if origin is not None and not is_loopback_host(urlsplit(origin).netloc or origin):
        raise Forbidden(
            f"cross-site request from Origin {origin[:80]!r} refused: without admin tokens "
            "management calls must come from this machine (set IMGCLF_ADMIN_TOKENS)"
        )


def install(app: Flask, settings: Settings) -> None:
    """Check every request before its view when no admin token is configured."""
    if settings.admin_tokens:
        return

    @app.before_request
    def _cross_site() -> None:
        check(
            request.method,
            request.path,
            request.headers.get("Content-Type", ""),
            request.headers.get("Host", ""),
            request.headers.get("Origin"),
        )
