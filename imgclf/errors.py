"""One exception tree for the whole project. Each error carries both its HTTP status
and the name of its gRPC status code (`grpc.StatusCode[...]`); these two class
attributes are the one table both protocol layers read, with no special cases.
The gRPC code is kept as a name so this module imports nothing heavy.

    ImgclfError (500, INTERNAL)
    ├── InvalidInput (400, INVALID_ARGUMENT)  bad request data the caller can fix
    │   ├── ConfigError             a training config field is wrong
    │   ├── DataError               the training data cannot be used
    │   ├── BadImageError           bytes that are not a decodable image
    │   └── PayloadTooLarge (413, RESOURCE_EXHAUSTED)  body, image count or pixels over the limit
    ├── NotFound (404, NOT_FOUND)
    │   └── RepositoryError         model / version / file missing in the repository
    ├── WeightsUnavailableError (400, INVALID_ARGUMENT) pretrained weights missing (offline)
    ├── ParityError (500, INTERNAL) an export does not reproduce training; not published
    ├── Cancelled (409, FAILED_PRECONDITION) a run was asked to stop
    ├── Rejected (409, FAILED_PRECONDITION) the promotion gate refused a candidate
    ├── Conflict (409, FAILED_PRECONDITION) the request clashes with the current state
    ├── Unimplemented (501, UNIMPLEMENTED) a protocol method this server does not offer
    ├── Unavailable (503, UNAVAILABLE) a backend (broker, job store) cannot be reached
    │   ├── Overloaded (503, RESOURCE_EXHAUSTED) the batching queue is full
    │   └── NotReady                no version of the model is loaded yet
    ├── UnsupportedMediaType (415, INVALID_ARGUMENT) tokenless state change without JSON
    ├── Unauthorized (401, UNAUTHENTICATED) missing or wrong bearer token
    └── Forbidden (403, PERMISSION_DENIED)  a valid token without the needed role
"""

from __future__ import annotations

QUOTE_LIMIT = 64  # characters of a client-supplied name an error message repeats


class ImgclfError(Exception):
    status = 500
    grpc_code = "INTERNAL"


class InvalidInput(ImgclfError, ValueError):
    status = 400
    grpc_code = "INVALID_ARGUMENT"


class ConfigError(InvalidInput):
    """A config value is wrong; the message names the field, the value and what is allowed."""


class DataError(InvalidInput):
    """The data cannot be trained on; the message says what to fix."""


class BadImageError(InvalidInput):
    """The bytes are not an image the model's own preprocess accepts."""


class NotFound(ImgclfError):
    status = 404
    grpc_code = "NOT_FOUND"


class RepositoryError(NotFound):
    """The model repository is missing something a caller asked for."""


class WeightsUnavailableError(ImgclfError, RuntimeError):
    """Pretrained weights could not be found or fetched; the message says where to put them."""

    status = 400
    grpc_code = "INVALID_ARGUMENT"


class ParityError(ImgclfError, RuntimeError):
    """The exported model does not reproduce the training pipeline; nothing was published."""


class Cancelled(ImgclfError):
    """The run was asked to stop; nothing is published."""

    status = 409
    grpc_code = "FAILED_PRECONDITION"


class Rejected(ImgclfError):
    """The promotion gate kept the live version; `comparison` says why."""

    status = 409
    grpc_code = "FAILED_PRECONDITION"

    def __init__(self, message: str, comparison: dict) -> None:
        super().__init__(message)
        self.comparison = comparison


class Conflict(ImgclfError):
    status = 409
    grpc_code = "FAILED_PRECONDITION"


class Unimplemented(ImgclfError):
    """A method of the protocol (TF Serving's Regress, MultiInference, ...) not offered here."""

    status = 501
    grpc_code = "UNIMPLEMENTED"


class Unavailable(ImgclfError):
    status = 503
    grpc_code = "UNAVAILABLE"


class PayloadTooLarge(InvalidInput):
    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class Overloaded(Unavailable):
    """The request queue is full: answered at once instead of queueing without bound."""

    grpc_code = "RESOURCE_EXHAUSTED"


class NotReady(Unavailable):
    """No version of the model is loaded yet."""


class UnsupportedMediaType(ImgclfError):
    """A state-changing request without the content type a browser cannot forge cross-site."""

    status = 415
    grpc_code = "INVALID_ARGUMENT"


class Unauthorized(ImgclfError):
    status = 401
    grpc_code = "UNAUTHENTICATED"


class Forbidden(ImgclfError):
    status = 403
    grpc_code = "PERMISSION_DENIED"


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """repr() of a client-supplied value, cut to `limit` characters for error messages.

    A 5,000-character model name must not come back 5,000 characters long in every
    error and log line.
    """
    text = repr(value if isinstance(value, str) else str(value))
    return text if len(text) <= limit else text[: limit - 4] + "...'"
