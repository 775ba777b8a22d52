"""One exported version loaded in memory, called through its own signatures.

Uses only the artifact: the SavedModel, assets/labels.txt and model_card.json.
The preprocessing is the one saved inside the model; nothing here decodes or
normalises images.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from imgclf import contract, repository
from imgclf.errors import BadImageError


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float


class LoadedVersion:
    """A SavedModel version with its labels; thread-safe to call (TF functions are)."""

    def __init__(self, version_dir: str | Path) -> None:
        self.path = Path(version_dir)
        self.labels = repository.read_labels(self.path)
        self.card = repository.read_model_card(self.path)
        self._model = tf.saved_model.load(str(self.path))
        self.signatures = self._model.signatures
        missing = [s for s in contract.SIGNATURES if s not in self.signatures]
        if missing:
            raise repository.RepositoryError(f"{self.path} lacks signatures {missing}")
        spec = self.signatures[contract.PREDICT_IMAGES].structured_input_signature[1]
        self.image_shape = tuple(spec[contract.INPUT_IMAGES].shape[1:])

    @functools.cached_property
    def signature_def_map(self):
        """The SignatureDefs as stored in saved_model.pb (what TF Serving's metadata returns).

        Parsed once per loaded version: saved_model.pb is megabytes and metadata calls repeat.
        """
        from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
        from tensorflow_serving.apis import get_model_metadata_pb2

        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((self.path / "saved_model.pb").read_bytes())
        graph: meta_graph_pb2.MetaGraphDef = proto.meta_graphs[0]
        out = get_model_metadata_pb2.SignatureDefMap()
        for name in contract.SIGNATURES:
            out.signature_def[name].CopyFrom(graph.signature_def[name])
        return out

    def preprocess(self, image: bytes) -> np.ndarray:
        """float32 [H, W, 3] from encoded bytes; BadImageError if they cannot be decoded."""
        try:
            out = self.signatures[contract.PREPROCESS](
                **{contract.INPUT_IMAGE_BYTES: tf.constant(image, dtype=tf.string)}
            )
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as exc:
            raise BadImageError("not a decodable JPEG, PNG, GIF, BMP or WebP image") from exc
        return out[contract.OUTPUT_IMAGE].numpy()

    def predict_images(self, images: np.ndarray) -> np.ndarray:
        """probabilities float32 [batch, classes] for preprocessed images [batch, H, W, 3]."""
        out = self.signatures[contract.PREDICT_IMAGES](
            **{contract.INPUT_IMAGES: tf.constant(images, dtype=tf.float32)}
        )
        return out[contract.OUTPUT_PROBABILITIES].numpy()

    def predict_bytes(self, images: Sequence[bytes]) -> np.ndarray:
        """probabilities [batch, classes] through serving_default, as TF Serving would call it."""
        try:
            out = self.signatures[contract.SERVING_DEFAULT](
                **{contract.INPUT_IMAGE_BYTES: tf.constant(list(images), dtype=tf.string)}
            )
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as exc:
            raise BadImageError("not a decodable JPEG, PNG, GIF, BMP or WebP image") from exc
        return out[contract.OUTPUT_PROBABILITIES].numpy()

    def top_k(self, probabilities: np.ndarray, k: int) -> list[list[Prediction]]:
        k = max(1, min(k, len(self.labels)))
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
        return [
            [Prediction(self.labels[i], float(row[i])) for i in idx]
            for row, idx in zip(probabilities, order, strict=True)
        ]
