"""One exported version loaded in memory, called through its own signatures.

The one place that reads an artifact back: the trainer's parity check after export,
the promotion gate (scoring the live version) and the server all load versions with
`LoadedVersion` and check golden files with `replay_golden`. It imports nothing from
imgclf.trainer or imgclf.server.

Uses only the artifact: the SavedModel, assets/labels.txt, model_card.json and the
golden files. The preprocessing is the one saved inside the model; nothing here
decodes or normalises images.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from imgclf import contract, repository
from imgclf.cpu import cpu_flags
from imgclf.errors import BadImageError

log = logging.getLogger(__name__)

# bfloat16 keeps 8 significant bits, so a ResNet-50 run in it moves probabilities by about
# 1e-2 (0.008-0.017 measured, bench/bf16.py and docs/BENCHMARKS.md). Under bfloat16 the
# golden replay allows this much, and the top-1 class must stay the same on every golden
# input whose stored top-1 leads the runner-up by at least BF16_MARGIN (closer calls are
# ties that any rounding may flip).
BF16_TOLERANCE = 0.05
BF16_MARGIN = 0.02
# Golden heatmaps (Grad-CAM, values in [0, 1]): in fp32 the served map must stay within
# HEATMAP_TOLERANCE of the stored one everywhere (a quarter of one 8-bit PNG step); under
# bfloat16 the mean |difference| per map must stay within BF16_HEATMAP_TOLERANCE.
HEATMAP_TOLERANCE = 1e-3
BF16_HEATMAP_TOLERANCE = 0.05
# The exact floats a graph computes depend on the kernels that run it, so 1e-5 holds only
# where the golden files were recorded. A 64 px model exported on a Zen 4 host and replayed
# there with oneDNN limited to AVX-512 core (an older Intel's kernels) moved probabilities
# by 6.1e-4 and heatmaps by 1.3e-3 (docs/BENCHMARKS.md). Golden files recorded on another
# platform (numeric_platform) are replayed within these bounds (max |difference|, about 16
# and 8 times what was measured), so a broken preprocessing or artifact still fails while
# an export still loads on a server with another CPU. A GPU's arithmetic (TF32, float16
# layers) was not measured here.
OTHER_PLATFORM_TOLERANCE = 1e-2
OTHER_PLATFORM_HEATMAP_TOLERANCE = 1e-2
# CPU features oneDNN chooses kernels by (x86 and Arm), and the variables that override it.
_KERNEL_FLAGS = (
    "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve",
)  # fmt: skip
_KERNEL_VARIABLES = ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


def numeric_platform() -> dict:
    """What decides the exact floats this process computes: TensorFlow's version, its GPUs
    and the CPU features and variables oneDNN picks kernels by. Recorded with the golden
    files at export and compared on replay."""
    return json.loads(_numeric_platform())  # a fresh copy: callers may change theirs


@functools.cache
def _numeric_platform() -> str:
    gpus = [
        tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
        for gpu in tf.config.list_physical_devices("GPU")
    ]
    flags = cpu_flags()
    platform = {
        "tensorflow": tf.__version__,
        "gpus": gpus,
        "cpu_features": [flag for flag in _KERNEL_FLAGS if flag in flags],
        "variables": {key: os.environ[key] for key in _KERNEL_VARIABLES if key in os.environ},
    }
    return json.dumps(platform)


def platform_differences(manifest: dict) -> list[str]:
    """What differs between the platform that recorded the golden files and this one
    (empty for files from before the record: their replay stays as strict as it was)."""
    recorded = manifest.get("platform")
    if recorded is None:
        return []
    here = numeric_platform()
    return sorted(key for key in {*recorded, *here} if recorded.get(key) != here.get(key))


class LoadedVersion:
    """A SavedModel version with its labels; thread-safe to call (TF functions are).

    A staging folder (no model card yet) loads too: the export's parity check reads
    the files it has just written exactly as a server will.
    """

    def __init__(self, version_dir: str | Path) -> None:
        self.path = Path(version_dir)
        self.labels = repository.read_labels(self.path)
        self.card = (
            repository.read_model_card(self.path)
            if (self.path / contract.MODEL_CARD_FILE).is_file()
            else {}
        )
        self._model = tf.saved_model.load(str(self.path))
        self.signatures = self._model.signatures
        missing = [s for s in contract.SIGNATURES if s not in self.signatures]
        if missing:
            raise repository.RepositoryError(f"{self.path} lacks signatures {missing}")
        spec = self.signatures[contract.PREDICT_IMAGES].structured_input_signature[1]
        self.image_shape = tuple(spec[contract.INPUT_IMAGES].shape[1:])

    @property
    def has_explain(self) -> bool:
        """False for versions exported before the `explain` signature existed."""
        return contract.EXPLAIN in self.signatures

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
        for name in (*contract.SIGNATURES, contract.EXPLAIN):
            if name in graph.signature_def:
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

    def explain_bytes(self, images: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """(heatmaps float32 [batch, H, W] in [0, 1], probabilities [batch, classes]) through
        the `explain` signature. Callers check `has_explain` first."""
        try:
            out = self.signatures[contract.EXPLAIN](
                **{contract.INPUT_IMAGE_BYTES: tf.constant(list(images), dtype=tf.string)}
            )
        except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as exc:
            raise BadImageError("not a decodable JPEG, PNG, GIF, BMP or WebP image") from exc
        return out[contract.OUTPUT_HEATMAP].numpy(), out[contract.OUTPUT_PROBABILITIES].numpy()


def _golden_manifest(loaded: LoadedVersion) -> dict:
    return json.loads((loaded.path / contract.GOLDEN_MANIFEST).read_text(encoding="utf-8"))


def golden_images(loaded: LoadedVersion, manifest: dict | None = None) -> list[bytes]:
    """The encoded golden inputs stored with the version (real images of its own kind)."""
    manifest = manifest if manifest is not None else _golden_manifest(loaded)
    return [(loaded.path / entry["file"]).read_bytes() for entry in manifest["inputs"]]


def replay_golden(loaded: LoadedVersion, bfloat16: bool = False) -> float:
    """Max |difference| between stored golden outputs and this process's predict path.

    In fp32, on the platform that recorded them, the difference must stay within the
    manifest's tolerance (1e-5); on another platform within OTHER_PLATFORM_TOLERANCE.
    Under bfloat16 it may reach BF16_TOLERANCE, and the top-1 class must not change where
    the stored answer was not a near tie (see BF16_MARGIN). Raises RuntimeError on a
    mismatch.
    """
    manifest = _golden_manifest(loaded)
    images = golden_images(loaded, manifest)
    expected = np.array([entry["probabilities"] for entry in manifest["inputs"]], np.float32)
    batch = np.stack([loaded.preprocess(image) for image in images])
    got = loaded.predict_images(batch)
    tolerance = float(manifest.get("tolerance", contract.PARITY_TOLERANCE))
    if got.shape != expected.shape:
        raise RuntimeError(
            f"golden replay mismatch: outputs shaped {got.shape}, stored {expected.shape}"
        )
    diff = float(np.max(np.abs(got - expected))) if len(expected) else 0.0
    elsewhere = platform_differences(manifest)
    why = " (bfloat16)" if bfloat16 else ""
    if bfloat16:
        tolerance = max(tolerance, BF16_TOLERANCE)
        ranked = np.sort(expected, axis=1)
        clear = ranked[:, -1] - ranked[:, -2] >= BF16_MARGIN
        flipped = np.flatnonzero(clear & (got.argmax(axis=1) != expected.argmax(axis=1)))
        if len(flipped):
            raise RuntimeError(
                f"golden replay under bfloat16: top-1 class changed on golden inputs "
                f"{flipped.tolist()}"
            )
    elif elsewhere:
        tolerance = max(tolerance, OTHER_PLATFORM_TOLERANCE)
        why = f" (golden files recorded on another platform: {', '.join(elsewhere)} differ)"
        log.warning(
            "%s: golden files recorded on another platform (%s differ): replayed within %s",
            loaded.path,
            ", ".join(elsewhere),
            tolerance,
        )
    if diff > tolerance:
        raise RuntimeError(
            f"golden replay mismatch: max difference {diff:.2e} > tolerance {tolerance:.0e}{why}"
        )
    replay_golden_heatmaps(loaded, manifest, images, bfloat16)
    return diff


def replay_golden_heatmaps(
    loaded: LoadedVersion, manifest: dict, images: list[bytes], bfloat16: bool = False
) -> float:
    """Max |difference| between the stored golden heatmaps and this process's `explain`.

    A version without `explain` (exported before it existed) has nothing to replay. One
    that has it must carry golden heatmaps, else its explanations could drift unseen.
    Raises RuntimeError on a mismatch; returns 0.0 when there is nothing to compare.
    """
    if not loaded.has_explain or not images:
        return 0.0
    entries = manifest["inputs"]
    if any("heatmap" not in entry for entry in entries):
        raise RuntimeError(
            "golden replay: the version has an 'explain' signature but no golden heatmaps "
            f"in {contract.GOLDEN_MANIFEST}; re-export it"
        )
    expected = np.stack(
        [np.load(loaded.path / entry["heatmap"], allow_pickle=False) for entry in entries]
    )
    got, _ = loaded.explain_bytes(images)
    if got.shape != expected.shape:
        raise RuntimeError(
            f"golden heatmap mismatch: maps shaped {got.shape}, stored {expected.shape}"
        )
    difference = np.abs(got - expected)
    # A constant stored map (a 1x1 last stage, below 64 px) says nothing about where the
    # model looked, and rounding near its ReLU may flip it from 1 to 0: under bfloat16 or
    # on another platform it is skipped.
    varied = np.ptp(expected, axis=(1, 2)) > 1e-6
    elsewhere = platform_differences(manifest)
    tolerance = float(manifest.get("heatmap_tolerance", HEATMAP_TOLERANCE))
    why = ""
    if bfloat16:
        per_map = difference.mean(axis=(1, 2))[varied]
        worst = float(per_map.max()) if per_map.size else 0.0
        tolerance, what, why = BF16_HEATMAP_TOLERANCE, "mean difference per map", " (bfloat16)"
    elif elsewhere:
        worst = float(difference[varied].max()) if varied.any() else 0.0
        tolerance = max(tolerance, OTHER_PLATFORM_HEATMAP_TOLERANCE)
        what, why = "max difference", " (golden files recorded on another platform)"
    else:
        worst = float(difference.max())
        what = "max difference"
    if worst > tolerance:
        raise RuntimeError(
            f"golden heatmap mismatch (explanations drifted): {what} {worst:.2e} > tolerance "
            f"{tolerance:.0e}{why}"
        )
    return worst
