"""REST transport: imgclf's :upload endpoint for predictions (it returns every class's
score and the version), TF Serving's :classify for classify, /v1/jobs and /v1/models
for the rest."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

import requests

from imgclf.client._errors import ServerUnavailable, TransportError, for_status, retry_after
from imgclf.client._types import (
    Explanation,
    Job,
    LabelScore,
    Prediction,
    prediction_from_scores,
)

_ALL_CLASSES = 100_000  # top_k larger than any class count: the server returns them all


class RestTransport:
    def __init__(self, base_url: str, token: str | None, timeout: float) -> None:
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.session.request(
                method, self.base + path, timeout=self.timeout, **kwargs
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise TransportError(f"no answer from {self.base}: {exc}") from None
        if response.status_code == 503:
            raise ServerUnavailable(_message(response), retry_after(response.headers))
        if response.status_code >= 400:
            raise for_status(response.status_code, _message(response))
        return response.json()

    def predict(
        self,
        model: str,
        images: list[bytes],
        version: int | None,
        label: str | None,
        min_score: float | None = None,
    ) -> list[Prediction]:
        files = [("file", (f"image{i}", data)) for i, data in enumerate(images)]
        params: dict[str, Any] = {"top_k": _ALL_CLASSES}
        if min_score is not None:
            params["min_score"] = repr(float(min_score))
        answer = self._call(
            "POST", _model_path(model, version, label, "upload"), files=files, params=params
        )
        out = []
        for result in answer["results"]:
            names = [entry["label"] for entry in result["top"]]
            scores = [entry["score"] for entry in result["top"]]
            out.append(
                prediction_from_scores(
                    answer["model"], answer["version"], names, scores, result.get("label")
                )
            )
        return out

    def classify(
        self, model: str, images: list[bytes], top_k: int, version: int | None, label: str | None
    ) -> list[list[LabelScore]]:
        """TF Serving's REST :classify: [[label, score], ...] per image, best first."""
        examples = [{"image_bytes": {"b64": base64.b64encode(data).decode()}} for data in images]
        answer = self._call(
            "POST", _model_path(model, version, label, "classify"), json={"examples": examples}
        )
        return [
            [LabelScore(str(name), float(score)) for name, score in row[: max(1, top_k)]]
            for row in answer["results"]
        ]

    def explain(
        self,
        model: str,
        images: list[bytes],
        top_k: int,
        version: int | None,
        label: str | None,
        min_score: float | None,
    ) -> list[Explanation]:
        """imgclf's REST :explain (heatmap and overlay PNGs as base64)."""
        body: dict[str, Any] = {
            "instances": [{"b64": base64.b64encode(data).decode()} for data in images],
            "top_k": top_k,
        }
        if min_score is not None:
            body["min_score"] = min_score
        answer = self._call("POST", _model_path(model, version, label, "explain"), json=body)
        spec = answer["model_spec"]
        return [
            Explanation(
                label=entry["label"],
                score=float(entry["score"]),
                top=[LabelScore(t["label"], float(t["score"])) for t in entry["top"]],
                heatmap_png=base64.b64decode(entry["heatmap"]["b64"]),
                overlay_png=base64.b64decode(entry["overlay"]["b64"]),
                model=spec["name"],
                version=int(spec["version"]),
            )
            for entry in answer["explanations"]
        ]

    def submit_job(self, document: dict[str, Any]) -> Job:
        return Job.from_record(self._call("POST", "/v1/jobs", json=document))

    def job(self, job_id: str) -> Job:
        return Job.from_record(self._call("GET", f"/v1/jobs/{job_id}"))

    def cancel(self, job_id: str) -> Job:
        return Job.from_record(self._call("DELETE", f"/v1/jobs/{job_id}"))

    def job_logs(self, job_id: str, offset: int) -> dict[str, Any]:
        return self._call("GET", f"/v1/jobs/{job_id}/logs", params={"offset": offset})

    def set_label(self, model: str, label: str, version: int) -> dict[str, int]:
        path = f"/v1/models/{quote(model, safe='')}/labels/{quote(label, safe='')}"
        return self._call("POST", path, json={"version": version})["labels"]

    def models(self) -> list[dict[str, Any]]:
        models = self._call("GET", "/v1/models")["models"]
        return [
            {"name": m["name"], "labels": m["labels"], "versions": m["versions"]} for m in models
        ]

    def close(self) -> None:
        self.session.close()


def _model_path(model: str, version: int | None, label: str | None, verb: str) -> str:
    return (
        f"/v1/models/{model}"
        + (f"/versions/{version}" if version is not None else "")
        + (f"/labels/{label}" if label else "")
        + f":{verb}"
    )


def _message(response: requests.Response) -> str:
    try:
        return response.json().get("error") or response.text
    except ValueError:
        return response.text or f"HTTP {response.status_code}"
