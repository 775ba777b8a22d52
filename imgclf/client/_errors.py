"""The client's exceptions.

ImgclfClientError
├── RequestError            the server refused the request (4xx); not retried
│   ├── BadRequest (400)     e.g. not an image, invalid job config
│   ├── Unauthorized (401)
│   ├── Forbidden (403)
│   ├── NotFound (404)       unknown model, version, label or job
│   ├── Conflict (409)       e.g. cancelling a finished job
│   └── PayloadTooLarge (413)
├── ServerUnavailable        503 / UNAVAILABLE / overloaded, still failing after retries
└── TransportError           no answer (connection, timeout) after retries
"""

from __future__ import annotations


class ImgclfClientError(Exception):
    pass


class RequestError(ImgclfClientError):
    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(RequestError):
    status = 400


class Unauthorized(RequestError):
    status = 401


class Forbidden(RequestError):
    status = 403


class NotFound(RequestError):
    status = 404


class Conflict(RequestError):
    status = 409


class PayloadTooLarge(RequestError):
    status = 413


class ServerUnavailable(ImgclfClientError):
    """503 / UNAVAILABLE; `retry_after` is the server's Retry-After in seconds, if sent."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransportError(ImgclfClientError):
    pass


BY_STATUS: dict[int, type[RequestError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
}


def for_status(status: int, message: str) -> RequestError:
    return BY_STATUS.get(status, RequestError)(message, status)


def retry_after(headers: object) -> float | None:
    """Seconds from a Retry-After header or metadata value (delta-seconds form)."""
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return max(0.0, min(float(value), 60.0)) if value is not None else None
    except ValueError:
        return None
