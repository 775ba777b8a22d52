"""Bearer tokens from the environment, compared in constant time.

Admin endpoints (jobs, model management) need an admin token whenever tokens are
configured, and the server refuses to listen beyond loopback without any. Predict
endpoints need a predict (or admin) token only when predict tokens are configured.
"""

from __future__ import annotations

import hmac

from imgclf.errors import ConfigError, Forbidden, Unauthorized
from imgclf.settings import Settings


def _matches(token: str, allowed: list[str]) -> bool:
    found = False
    for candidate in allowed:  # no early exit: the time taken does not depend on the match
        found |= hmac.compare_digest(token.encode(), candidate.encode())
    return found


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class Auth:
    def __init__(self, settings: Settings) -> None:
        self.admin = [t.get_secret_value() for t in settings.admin_tokens]
        self.predict = [t.get_secret_value() for t in settings.predict_tokens]

    def require(self, role: str, token: str | None) -> None:
        """Raise Unauthorized (no/bad token) or Forbidden (valid token, wrong role)."""
        allowed = self.admin if role == "admin" else self.predict + self.admin
        if role == "predict" and not self.predict:
            return
        if role == "admin" and not self.admin:
            return  # only possible on loopback: check_startup refuses the other case
        if token is None:
            raise Unauthorized(f"this endpoint needs a bearer token ({role})")
        if _matches(token, allowed):
            return
        if role == "admin" and _matches(token, self.predict):
            raise Forbidden("this token may predict but not manage jobs or models")
        raise Unauthorized("invalid bearer token")


def check_startup(settings: Settings) -> None:
    if settings.listens_beyond_loopback() and not settings.admin_tokens:
        raise ConfigError(
            f"refusing to listen on {settings.host!r} (beyond loopback) without admin tokens: "
            "set IMGCLF_ADMIN_TOKENS, or bind to 127.0.0.1"
        )
