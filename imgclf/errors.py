"""One exception tree for the whole project. Each error knows its HTTP status;
the gRPC layer maps statuses to codes in one table.

    ImgclfError
    ├── InvalidInput (400)          bad request data the caller can fix
    │   ├── ConfigError             a training config field is wrong
    │   ├── DataError               the training data cannot be used
    │   ├── BadImageError           bytes that are not a decodable image
    │   └── PayloadTooLarge (413)   body, image count or pixel count over the limit
    ├── NotFound (404)
    │   └── RepositoryError         model / version / file missing in the repository
    ├── WeightsUnavailableError (400) pretrained weights missing (offline)
    ├── ParityError (500)           an export does not reproduce training; not published
    ├── Cancelled (409)             a run was asked to stop
    ├── Rejected (409)              the promotion gate refused a candidate (carries the comparison)
    ├── Conflict (409)              the request clashes with the current state (job already ended)
    ├── Unavailable (503)           a backend (broker, job store) cannot be reached
    │   ├── Overloaded              the batching queue is full
    │   └── NotReady                no version of the model is loaded yet
    ├── Unauthorized (401)          missing or wrong bearer token
    └── Forbidden (403)             a valid token without the needed role
"""

from __future__ import annotations


class ImgclfError(Exception):
    status = 500


class InvalidInput(ImgclfError, ValueError):
    status = 400


class ConfigError(InvalidInput):
    """A config value is wrong; the message names the field, the value and what is allowed."""


class DataError(InvalidInput):
    """The data cannot be trained on; the message says what to fix."""


class BadImageError(InvalidInput):
    """The bytes are not an image the model's own preprocess accepts."""


class NotFound(ImgclfError):
    status = 404


class RepositoryError(NotFound):
    """The model repository is missing something a caller asked for."""


class WeightsUnavailableError(ImgclfError, RuntimeError):
    """Pretrained weights could not be found or fetched; the message says where to put them."""

    status = 400


class ParityError(ImgclfError, RuntimeError):
    """The exported model does not reproduce the training pipeline; nothing was published."""


class Cancelled(ImgclfError):
    """The run was asked to stop; nothing is published."""

    status = 409


class Rejected(ImgclfError):
    """The promotion gate kept the live version; `comparison` says why."""

    status = 409

    def __init__(self, message: str, comparison: dict) -> None:
        super().__init__(message)
        self.comparison = comparison


class Conflict(ImgclfError):
    status = 409


class Unavailable(ImgclfError):
    status = 503


class PayloadTooLarge(InvalidInput):
    status = 413


class Overloaded(Unavailable):
    """The request queue is full: answered at once instead of queueing without bound."""


class NotReady(Unavailable):
    """No version of the model is loaded yet."""


class Unauthorized(ImgclfError):
    status = 401


class Forbidden(ImgclfError):
    status = 403
