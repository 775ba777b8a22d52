"""Images whose evidence sits in a known place, for the Grad-CAM localization test.

Each image is noise with one small coloured shape (the class) inside one random
quadrant; the quadrant is recorded, so a test can ask whether the heatmap's mass
lies where the evidence is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.images import png

QUADRANT_SHAPES = {"circle": (220, 40, 40), "square": (40, 200, 60), "cross": (50, 70, 230)}


def draw_in_quadrant(shape: str, size: int, quadrant: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [size, size, 3]: noise, and `shape` centred somewhere in `quadrant`
    (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right)."""
    image = rng.normal(110, 30, size=(size, size, 3))
    half = size / 2
    r = size * rng.uniform(0.09, 0.13)
    cy = (quadrant // 2) * half + rng.uniform(r + 1, half - r - 1)
    cx = (quadrant % 2) * half + rng.uniform(r + 1, half - r - 1)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if shape == "circle":
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
    elif shape == "square":
        mask = (np.abs(xx - cx) <= r * 0.85) & (np.abs(yy - cy) <= r * 0.85)
    else:
        mask = ((np.abs(xx - cx) <= r * 0.35) & (np.abs(yy - cy) <= r)) | (
            (np.abs(yy - cy) <= r * 0.35) & (np.abs(xx - cx) <= r)
        )
    image[mask] = np.array(QUADRANT_SHAPES[shape]) + rng.normal(0, 15, size=3)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_quadrant_dataset(
    root: Path, *, per_class: int, size: int = 64, seed: int = 0
) -> dict[Path, int]:
    """Write root/<shape>/<i>.png; returns {file: quadrant of its shape}."""
    rng = np.random.default_rng(seed)
    where: dict[Path, int] = {}
    for shape in QUADRANT_SHAPES:
        folder = root / shape
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            quadrant = int(rng.integers(4))
            path = folder / f"{i:04d}.png"
            path.write_bytes(png(draw_in_quadrant(shape, size, quadrant, rng)))
            where[path] = quadrant
    return where


def peak_quadrant(heatmap: np.ndarray) -> int:
    """The quadrant holding most of the heatmap's mass (same numbering as above)."""
    h, w = heatmap.shape
    masses = [
        heatmap[: h // 2, : w // 2].sum(),
        heatmap[: h // 2, w // 2 :].sum(),
        heatmap[h // 2 :, : w // 2].sum(),
        heatmap[h // 2 :, w // 2 :].sum(),
    ]
    return int(np.argmax(masses))


def strip_explain(version_dir: Path) -> None:
    """Make an export look like one written before `explain` existed: the signature
    gone from saved_model.pb (its SignatureDef and the object graph's signature map)
    and no golden heatmaps."""
    import json

    from tensorflow.core.protobuf import saved_model_pb2

    from imgclf import contract

    pb = version_dir / "saved_model.pb"
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString(pb.read_bytes())
    graph = proto.meta_graphs[0]
    del graph.signature_def[contract.EXPLAIN]
    nodes = graph.object_graph_def.nodes
    for node in nodes:
        for child in node.children:
            if child.local_name == "signatures":
                signatures = nodes[child.node_id]
                keep = [c for c in signatures.children if c.local_name != contract.EXPLAIN]
                del signatures.children[:]
                signatures.children.extend(keep)
    pb.write_bytes(proto.SerializeToString())
    (version_dir / "fingerprint.pb").unlink(missing_ok=True)
    manifest_path = version_dir / contract.GOLDEN_MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest.pop("heatmap_tolerance", None)
    for entry in manifest["inputs"]:
        (version_dir / entry.pop("heatmap")).unlink()
    manifest_path.write_text(json.dumps(manifest))


def export_untrained(version_dir: Path, *, size: int, images: list[bytes]) -> None:
    """An untrained 3-class ResNet-50 exported as a run would (signatures, golden files
    with heatmaps, card): random weights at 64 px already give maps with spatial
    structure (2x2 last stage), enough to compare protocols with the signature."""
    import json

    import tensorflow as tf

    from imgclf import contract
    from imgclf.trainer import export
    from imgclf.trainer.gradcam import compiled_gradcam
    from imgclf.trainer.model import build_classifier
    from imgclf.trainer.preprocessing import make_preprocess

    classes = list(QUADRANT_SHAPES)
    classifier = build_classifier(3, image_size=size, weights="none", dropout=0.0, l2=0.0)
    preprocess = make_preprocess(size)
    export.write_savedmodel(version_dir, classifier.model, preprocess, classes, size)
    batch = tf.stack([preprocess(tf.constant(image)) for image in images])
    heatmaps, probabilities = compiled_gradcam(classifier.model, size, batch)
    export.write_golden(
        version_dir,
        images,
        [f"generated/{i}.png" for i in range(len(images))],
        probabilities,
        heatmaps,
    )
    card = {"name": "random", "labels": classes, "image_size": size}
    (version_dir / contract.MODEL_CARD_FILE).write_text(json.dumps(card))
