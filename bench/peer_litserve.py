"""The peer: the same SavedModel served by LitServe, written the way its docs suggest.

Run as its own process (`python -m bench.peer_litserve --model-dir DIR --port P`),
so TensorFlow is imported only in LitServe's spawned inference worker, never in the
process that forks its HTTP servers. It gets the same JPEGs as imgclf, as
`{"b64": "..."}` JSON, and the same batching budget (up to 32 images, 2 ms wait),
and calls the model's own `serving_default` signature, so decoding and
preprocessing are the same graph ops imgclf runs.
"""

from __future__ import annotations

import argparse
import base64
import os

import litserve as ls

from imgclf import contract


class SavedModelAPI(ls.LitAPI):
    def __init__(self, model_dir: str, max_batch_size: int, batch_timeout_s: float) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout_s)
        self.model_dir = model_dir

    def setup(self, device: str) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        self.tf = tf
        self.model = tf.saved_model.load(self.model_dir)
        self.serve = self.model.signatures[contract.SERVING_DEFAULT]

    def decode_request(self, request: dict) -> bytes:
        return base64.b64decode(request["b64"])

    def batch(self, inputs: list[bytes]) -> list[bytes]:
        return list(inputs)

    def predict(self, images: list[bytes]) -> list:
        out = self.serve(**{contract.INPUT_IMAGE_BYTES: self.tf.constant(images)})
        probabilities = out[contract.OUTPUT_PROBABILITIES].numpy()
        labels = out[contract.OUTPUT_LABELS].numpy()
        return [(p, label) for p, label in zip(probabilities, labels, strict=True)]

    def unbatch(self, output: list) -> list:
        return list(output)

    def encode_response(self, output: tuple) -> dict:
        probabilities, label = output
        return {"probabilities": probabilities.tolist(), "label": label.decode()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-dir", required=True, help="one version folder (SavedModel)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout-ms", type=float, default=2.0)
    args = parser.parse_args()
    api = SavedModelAPI(args.model_dir, args.max_batch_size, args.batch_timeout_ms / 1000.0)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, timeout=60)
    server.run(
        host="127.0.0.1",
        port=args.port,
        num_api_servers=1,
        generate_client_file=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
