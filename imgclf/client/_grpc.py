"""gRPC transport: imgclf's own service (imgclf.v1.Imgclf), which needs no TensorFlow
on the client side."""

from __future__ import annotations

import json
from typing import Any

import grpc

from imgclf.client._errors import ServerUnavailable, TransportError, for_status, retry_after
from imgclf.client._types import (
    Explanation,
    Job,
    LabelScore,
    Prediction,
    prediction_from_scores,
)
from imgclf.v1 import imgclf_pb2, imgclf_pb2_grpc

_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.UNIMPLEMENTED: 501,
}


class GrpcTransport:
    def __init__(self, target: str, token: str | None, timeout: float) -> None:
        self.channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ],
        )
        self.stub = imgclf_pb2_grpc.ImgclfStub(self.channel)
        self.timeout = timeout
        self.metadata = [("authorization", f"Bearer {token}")] if token else []

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=self.timeout, metadata=self.metadata)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or str(exc.code())
            if code == grpc.StatusCode.UNAVAILABLE or (
                code == grpc.StatusCode.RESOURCE_EXHAUSTED and "overloaded" in details
            ):
                trailing = dict(exc.trailing_metadata() or ())
                raise ServerUnavailable(
                    details, retry_after({"Retry-After": trailing.get("retry-after")})
                ) from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise TransportError(f"no answer within {self.timeout}s") from None
            if code in _STATUS:
                raise for_status(_STATUS[code], details) from None
            raise TransportError(f"{code.name}: {details}") from None

    def predict(
        self,
        model: str,
        images: list[bytes],
        version: int | None,
        label: str | None,
        min_score: float | None = None,
    ) -> list[Prediction]:
        request = imgclf_pb2.ClassifyRequest(model=model, images=images, top_k=1)
        if min_score is not None:
            request.min_score = min_score
        if version is not None:
            request.version = version
        elif label:
            request.label = label
        answer = self._call("Classify", request)
        names = list(answer.class_names)
        return [
            prediction_from_scores(
                answer.model, answer.version, names, list(result.probabilities), result.label
            )
            for result in answer.results
        ]

    def classify(
        self, model: str, images: list[bytes], top_k: int, version: int | None, label: str | None
    ) -> list[list[LabelScore]]:
        return [prediction.top(top_k) for prediction in self.predict(model, images, version, label)]

    def explain(
        self,
        model: str,
        images: list[bytes],
        top_k: int,
        version: int | None,
        label: str | None,
        min_score: float | None,
    ) -> list[Explanation]:
        request = imgclf_pb2.ExplainRequest(model=model, images=images, top_k=top_k)
        if version is not None:
            request.version = version
        elif label:
            request.label = label
        if min_score is not None:
            request.min_score = min_score
        answer = self._call("Explain", request)
        return [
            Explanation(
                label=entry.label,
                score=entry.score,
                top=[LabelScore(t.label, t.score) for t in entry.top],
                heatmap_png=entry.heatmap_png,
                overlay_png=entry.overlay_png,
                model=answer.model,
                version=answer.version,
            )
            for entry in answer.explanations
        ]

    def _job(self, message: Any) -> Job:
        return Job.from_record(json.loads(message.record_json))

    def submit_job(self, document: dict[str, Any]) -> Job:
        return self._job(
            self._call("SubmitJob", imgclf_pb2.SubmitJobRequest(document_json=json.dumps(document)))
        )

    def job(self, job_id: str) -> Job:
        return self._job(self._call("GetJob", imgclf_pb2.GetJobRequest(id=job_id)))

    def cancel(self, job_id: str) -> Job:
        return self._job(self._call("CancelJob", imgclf_pb2.CancelJobRequest(id=job_id)))

    def job_logs(self, job_id: str, offset: int) -> dict[str, Any]:
        answer = self._call("GetJobLogs", imgclf_pb2.GetJobLogsRequest(id=job_id, offset=offset))
        return {
            "id": answer.id,
            "status": answer.status,
            "offset": answer.offset,
            "next_offset": answer.next_offset,
            "text": answer.text,
        }

    def set_label(self, model: str, label: str, version: int) -> dict[str, int]:
        request = imgclf_pb2.SetLabelRequest(model=model, label=label, version=version)
        return dict(self._call("SetLabel", request).labels)

    def models(self) -> list[dict[str, Any]]:
        answer = self._call("ListModels", imgclf_pb2.ListModelsRequest())
        return [
            {
                "name": m.name,
                "labels": dict(m.labels),
                "versions": [
                    {"version": v.version, "state": v.state, "error": v.error} for v in m.versions
                ],
            }
            for m in answer.models
        ]

    def close(self) -> None:
        self.channel.close()
