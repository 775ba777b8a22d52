"""Python client for apps that embed imgclf: the same calls and result types over REST
or gRPC.

    from imgclf.client import Client
    with Client(rest_url="http://127.0.0.1:8501", model="pets") as client:
        for p in client.predict(["cat.jpg"]):
            print(p.label, p.score, p.version)
"""

from imgclf.client._client import DEFAULT_RETRIES, DEFAULT_TIMEOUT, Client
from imgclf.client._errors import (
    BadRequest,
    Conflict,
    Forbidden,
    ImgclfClientError,
    NotFound,
    PayloadTooLarge,
    RequestError,
    ServerUnavailable,
    TransportError,
    Unauthorized,
)
from imgclf.client._types import Explanation, Job, LabelScore, Prediction

__all__ = [
    "DEFAULT_RETRIES",
    "DEFAULT_TIMEOUT",
    "BadRequest",
    "Client",
    "Conflict",
    "Explanation",
    "Forbidden",
    "ImgclfClientError",
    "Job",
    "LabelScore",
    "NotFound",
    "PayloadTooLarge",
    "Prediction",
    "RequestError",
    "ServerUnavailable",
    "TransportError",
    "Unauthorized",
]
