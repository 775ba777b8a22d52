"""Export to a TensorFlow-Serving-layout SavedModel, with the parity check that guards it.

The SavedModel's five signatures wrap the trained Keras model and the very
preprocessing function object the training pipeline used:

  serving_default(image_bytes: string [batch]) -> probabilities, classes, labels
  preprocess(image_bytes: string [])           -> image float32 [H, W, 3]
  predict_images(images: float32 [batch,H,W,3]) -> probabilities, classes, labels
  classify(inputs: string [batch] serialized tf.Example) -> classes string [batch, n],
                                                            scores float32 [batch, n]
  explain(image_bytes: string [batch])         -> heatmap float32 [batch, H, W] in [0, 1],
                                                  probabilities, classes, labels

Every signature that runs the network calls one traced function, `network` (the model's
probabilities and its last stage's activations, which `explain` turns into Grad-CAM), and
each signature is traced once, inside tf.saved_model.save: saved_model.pb holds the
network's graph once, which keeps both the export and every load of the version short.

Every signature that returns probabilities builds them through one `outputs()` function,
which applies the temperature fitted on the validation split (trainer/calibration.py):
what any signature serves is the calibrated probability. T = 1 adds nothing to the graph.

`classify` carries TF Serving's classification method name, so a tensorflow_model_server
pointed at MODEL_DIR/<name> answers Classify (gRPC and REST :classify) as well as Predict.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from imgclf import contract, repository
from imgclf.artifact import HEATMAP_TOLERANCE, LoadedVersion, numeric_platform
from imgclf.trainer.calibration import temperature_scale
from imgclf.trainer.gradcam import GradCam


def build_signatures(
    model: keras.Model,
    preprocess: tf.types.experimental.PolymorphicFunction,
    classes: Sequence[str],
    image_size: int,
    temperature: float = 1.0,
) -> dict[str, tf.types.experimental.PolymorphicFunction]:
    """The signatures; `temperature` (trainer/calibration.py) is applied in `outputs()`."""
    labels = tf.constant(list(classes), dtype=tf.string)

    def outputs(probabilities: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = temperature_scale(probabilities, temperature)
        index = tf.argmax(probabilities, axis=-1, output_type=tf.int64)
        return {
            contract.OUTPUT_PROBABILITIES: probabilities,
            contract.OUTPUT_CLASSES: index,
            contract.OUTPUT_LABELS: tf.gather(labels, index),
        }

    image_spec = tf.TensorSpec([image_size, image_size, 3], tf.float32)
    num_classes = len(classes)
    gradcam = GradCam(model, image_size)
    last_stage = [gradcam.grid, gradcam.grid, gradcam.channels]

    # One traced function for the network, called by every signature that runs it
    # (predict_images, serving_default, classify through serving_default, explain): the
    # SavedModel holds its graph once. It returns the model's probabilities and the last
    # stage's activations, which `explain` turns into Grad-CAM (gradcam.py).
    @tf.function(input_signature=[tf.TensorSpec([None, image_size, image_size, 3], tf.float32)])
    def network(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        def run() -> tuple[tf.Tensor, tf.Tensor]:
            activations, probabilities = gradcam.network(images, training=False)
            return tf.cast(probabilities, tf.float32), tf.cast(activations, tf.float32)

        # An empty batch is a valid request; the convolution kernels reject it, so skip them.
        return tf.cond(
            tf.shape(images)[0] > 0,
            run,
            lambda: (tf.zeros([0, num_classes]), tf.zeros([0, *last_stage])),
        )

    def classify(images: tf.Tensor) -> tf.Tensor:
        return network(images)[0]

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name=contract.INPUT_IMAGES)
        ]
    )
    def predict_images(images: tf.Tensor) -> dict[str, tf.Tensor]:
        return outputs(classify(images))

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name=contract.INPUT_IMAGE_BYTES)]
    )
    def serving_default(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        images = tf.map_fn(preprocess, image_bytes, fn_output_signature=image_spec)
        return outputs(classify(images))

    @tf.function(input_signature=[tf.TensorSpec([], tf.string, name=contract.INPUT_IMAGE_BYTES)])
    def preprocess_signature(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        return {contract.OUTPUT_IMAGE: preprocess(image_bytes)}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=contract.CLASSIFY_INPUTS)])
    def classify_examples(inputs: tf.Tensor) -> dict[str, tf.Tensor]:
        features = tf.io.parse_example(
            inputs, {contract.INPUT_IMAGE_BYTES: tf.io.FixedLenFeature([], tf.string)}
        )
        # Calls serving_default's traced function rather than tracing the model again:
        # the same graph answers both, and the export stays smaller and faster.
        served = serving_default(features[contract.INPUT_IMAGE_BYTES])
        scores, order = tf.math.top_k(served[contract.OUTPUT_PROBABILITIES], k=num_classes)
        return {contract.OUTPUT_CLASSES: tf.gather(labels, order), contract.OUTPUT_SCORES: scores}

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name=contract.INPUT_IMAGE_BYTES)]
    )
    def explain(image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        # Grad-CAM (gradcam.py) on the same preprocessing and the same network; its
        # probabilities go through the same `outputs` as every other signature, so they
        # equal serving_default's.
        images = tf.map_fn(preprocess, image_bytes, fn_output_signature=image_spec)
        heatmap, probabilities = gradcam.from_activations(network(images)[1])
        return {**outputs(probabilities), contract.OUTPUT_HEATMAP: heatmap}

    return {
        contract.SERVING_DEFAULT: serving_default,
        contract.PREPROCESS: preprocess_signature,
        contract.PREDICT_IMAGES: predict_images,
        contract.CLASSIFY: classify_examples,
        contract.EXPLAIN: explain,
    }


def set_classify_method(path: Path) -> None:
    """Give the `classify` SignatureDef TF Serving's classification method name.

    tf.saved_model.save names every signature `tensorflow/serving/predict`; TF Serving's
    Classify refuses such a signature, so the name is set in saved_model.pb afterwards
    (and the fingerprint, a checksum of that file, written again).
    """
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting

    pb = path / "saved_model.pb"
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(pb.read_bytes())
    for graph in proto.meta_graphs:
        graph.signature_def[contract.CLASSIFY].method_name = contract.CLASSIFY_METHOD
    pb.write_bytes(proto.SerializeToString(deterministic=True))
    fingerprint = path / "fingerprint.pb"
    if fingerprint.exists():
        fingerprint.write_bytes(fingerprinting.CreateFingerprintDef(str(path)))


def write_savedmodel(
    path: Path,
    model: keras.Model,
    preprocess: tf.types.experimental.PolymorphicFunction,
    classes: Sequence[str],
    image_size: int,
    temperature: float = 1.0,
) -> None:
    """A plain SavedModel (loadable by tf.saved_model.load and TF Serving) plus labels.txt;
    every signature serves probabilities calibrated by `temperature`."""
    # Plain tf.saved_model.save, each signature traced once, inside the save. Keras'
    # ExportArchive traced every endpoint before the save and the save traced it again (a
    # function's trace cache is keyed on being inside a save), so the export held every
    # graph twice: twice the tracing at export and twice the graphs to read back on load.
    # The root tracks each weight once: the tf.Variable behind each Keras variable, which is
    # what the traced signatures capture (tracking the Keras wrappers instead costs a
    # variable copy per weight at save time).
    root = tf.Module()
    root.weights = [weight.value for weight in model.weights]
    signatures = build_signatures(model, preprocess, classes, image_size, temperature)
    tf.saved_model.save(root, str(path), signatures=signatures)
    set_classify_method(path)
    labels_file = path / contract.LABELS_FILE
    labels_file.parent.mkdir(parents=True, exist_ok=True)
    labels_file.write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")


def write_warmup(path: Path, model_name: str, images: Sequence[bytes]) -> None:
    """TF Serving's warmup format: a TFRecord of PredictionLog protos for serving_default."""
    target = path / contract.WARMUP_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    batches = [[b] for b in images[:4]] + ([list(images)] if len(images) > 1 else [])
    with tf.io.TFRecordWriter(str(target)) as writer:
        for batch in batches:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(
                    name=model_name, signature_name=contract.SERVING_DEFAULT
                )
            )
            request.inputs[contract.INPUT_IMAGE_BYTES].CopyFrom(
                tf.make_tensor_proto(batch, dtype=tf.string)
            )
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())


def write_golden(
    path: Path,
    images: Sequence[bytes],
    sources: Sequence[str],
    probabilities: np.ndarray,
    heatmaps: np.ndarray | None = None,
) -> None:
    """Golden inputs with the training path's outputs, so any server can replay them on load.

    `heatmaps` float32 [n, H, W] (Grad-CAM from gradcam.py on the training path's images)
    are stored as golden/NNNN.heatmap.npy (plain arrays, no pickle) and replayed through
    the `explain` signature (artifact.replay_golden_heatmaps)."""
    folder = path / contract.GOLDEN_DIR
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, (data, source) in enumerate(zip(images, sources, strict=True)):
        name = f"{i:04d}.img"
        (folder / name).write_bytes(data)
        entry = {
            "file": f"{contract.GOLDEN_DIR}/{name}",
            "source": source,
            "probabilities": [float(p) for p in probabilities[i]],
        }
        if heatmaps is not None:
            heatmap = f"{i:04d}.heatmap.npy"
            np.save(folder / heatmap, np.asarray(heatmaps[i], np.float32), allow_pickle=False)
            entry["heatmap"] = f"{contract.GOLDEN_DIR}/{heatmap}"
        entries.append(entry)
    # Where the outputs were computed: a server elsewhere replays with a looser rule.
    manifest: dict = {
        "tolerance": contract.PARITY_TOLERANCE,
        "platform": numeric_platform(),
        "inputs": entries,
    }
    if heatmaps is not None:
        manifest["heatmap_tolerance"] = HEATMAP_TOLERANCE
    (path / contract.GOLDEN_MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def parity_check(
    export: Path | LoadedVersion,
    images: Sequence[bytes],
    training_path_probabilities: np.ndarray,
    training_path_images: np.ndarray,
    training_path_heatmaps: np.ndarray | None = None,
) -> dict:
    """Reload the export from disk, as a server does (`imgclf.artifact`), and compare the
    served path with the training path.

    The served path is `serving_default` (and `explain`, given training-path heatmaps) on
    the raw file bytes; the training path is the tf.data evaluation pipeline followed by
    the Keras model (and gradcam.GradCam on it).
    """
    try:
        loaded = export if isinstance(export, LoadedVersion) else LoadedVersion(export)
    except repository.RepositoryError as exc:
        return {
            "passed": False,
            "reason": str(exc),
            "max_abs_diff": 1.0,
            "samples": len(images),
            "tolerance": contract.PARITY_TOLERANCE,
        }
    served = loaded.predict_bytes(images)
    pre = np.stack([loaded.preprocess(b) for b in images])
    diff = float(np.max(np.abs(served - training_path_probabilities)))
    pre_diff = float(np.max(np.abs(pre - training_path_images)))
    passed = diff <= contract.PARITY_TOLERANCE and pre_diff <= contract.PARITY_TOLERANCE
    heatmap = {}
    if training_path_heatmaps is not None:
        served_heatmaps, _ = loaded.explain_bytes(images)
        heat_diff = float(np.max(np.abs(served_heatmaps - training_path_heatmaps)))
        passed = passed and heat_diff <= HEATMAP_TOLERANCE
        heatmap = {"heatmap_max_abs_diff": heat_diff, "heatmap_tolerance": HEATMAP_TOLERANCE}
    return {
        "passed": passed,
        "max_abs_diff": diff,
        "preprocess_max_abs_diff": pre_diff,
        **heatmap,
        "samples": len(images),
        "tolerance": contract.PARITY_TOLERANCE,
        "reason": "" if passed else "served outputs differ from the training pipeline",
    }


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
