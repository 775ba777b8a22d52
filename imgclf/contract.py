"""Names shared by the trainer, the server and the clients.

Signature names, tensor keys, file names and metric names live here and nowhere
else, so the two sides of the artifact contract cannot drift apart. This module
must stay free of heavy imports (no TensorFlow): the server, the CLI and the
client import it.
"""

from typing import Final

# Signatures of every exported SavedModel.
SERVING_DEFAULT: Final = "serving_default"
PREPROCESS: Final = "preprocess"
PREDICT_IMAGES: Final = "predict_images"
SIGNATURES: Final = (SERVING_DEFAULT, PREPROCESS, PREDICT_IMAGES)
# TF Serving's classification method (its Classify RPC and REST :classify): serialized
# tf.Example strings in (`inputs`, the image bytes under feature `image_bytes`),
# `classes` string [batch, classes] and `scores` float32 [batch, classes] out, by score.
CLASSIFY: Final = "classify"
CLASSIFY_METHOD: Final = "tensorflow/serving/classify"
PREDICT_METHOD: Final = "tensorflow/serving/predict"
CLASSIFY_INPUTS: Final = "inputs"
OUTPUT_SCORES: Final = "scores"
# Grad-CAM of the predicted class (imgclf/trainer/gradcam.py): `image_bytes` string [batch]
# in; `heatmap` float32 [batch, H, W] in [0, 1] plus serving_default's outputs. Versions
# exported before it existed lack it: they load and predict, and :explain refuses them.
EXPLAIN: Final = "explain"

# Tensor keys.
INPUT_IMAGE_BYTES: Final = "image_bytes"  # string [batch] (serving_default) or scalar (preprocess)
INPUT_IMAGES: Final = "images"  # float32 [batch, H, W, 3], already preprocessed
OUTPUT_IMAGE: Final = "image"  # float32 [H, W, 3]
OUTPUT_PROBABILITIES: Final = "probabilities"  # float32 [batch, classes]
OUTPUT_CLASSES: Final = "classes"  # int64 [batch]
OUTPUT_LABELS: Final = "labels"  # string [batch]
OUTPUT_HEATMAP: Final = "heatmap"  # float32 [batch, H, W] in [0, 1]

# Files inside MODEL_DIR/<name>/<version>/.
LABELS_FILE: Final = "assets/labels.txt"
WARMUP_FILE: Final = "assets.extra/tf_serving_warmup_requests"
MODEL_CARD_FILE: Final = "model_card.json"
REPORT_DIR: Final = "report"
GOLDEN_DIR: Final = "golden"
GOLDEN_MANIFEST: Final = "golden/manifest.json"

# Files inside MODEL_DIR/<name>/.
MODEL_LABELS_FILE: Final = "labels.json"  # {"stable": 3, "canary": 4}

# How many (class name, score) pairs a classify answer carries when the caller gives no top_k:
# REST :classify and :upload, gRPC Classify (both services), the client and `imgclf predict`.
DEFAULT_TOP_K: Final = 5

# The label of an answer whose top score is below min_score (the request's, else the model
# card's default). Only imgclf's own answers carry it; TF Serving's :predict tensors never do.
UNKNOWN_LABEL: Final = "unknown"
MIN_SCORE_CARD_KEY: Final = "min_score"

# Parity: the served path must equal the training path this closely.
PARITY_TOLERANCE: Final = 1e-5

# The ImageNet means ResNet-50's preprocess_input subtracts, in BGR order.
IMAGENET_BGR_MEANS: Final = (103.939, 116.779, 123.68)
