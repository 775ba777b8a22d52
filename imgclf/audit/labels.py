"""Label-error suspects from a trained model version: which images look more like
another class than their own.

Two views are mixed for each image:
  model      the version's probability for the given label (serving_default on the file's
             bytes, so exactly what serving computes);
  neighbours leave-one-out k-nearest-neighbour vote among the other images, in the
             space of the model's output probabilities (Hellinger distance): the share of
             the image's 10 nearest neighbours that carry its label.
An image the model trained on is not out-of-sample: the model may have fitted its wrong
label. For those (the version's own report/splits.json says which) the neighbour vote
weighs 3/4 and the model 1/4; for held-out images the two weigh the same. The score is
1 - (mixed agreement with the given label), in [0, 1]: a ranking, not a probability that
the label is wrong. Only images whose mixed vote prefers another class are listed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from imgclf import contract, repository
from imgclf.errors import DataError
from imgclf.trainer.data import Dataset

NEIGHBOURS = 10
_DISTANCES = 16_000_000  # float64 distances held at once (128 MB)
_BATCH = 32
_MODEL_WEIGHT = {True: 0.25, False: 0.5}  # in the model's training split -> weight


def _model_train_paths(version_dir: Path, dataset: Dataset) -> set[str]:
    """Relative paths the version trained on, when it trained on this same data root."""
    path = version_dir / contract.REPORT_DIR / "splits.json"
    if not path.is_file():
        return set()
    splits = json.loads(path.read_text(encoding="utf-8"))
    if Path(splits.get("root", "")).resolve() != Path(dataset.root).resolve():
        return set()
    return {row[0] for row in splits.get("train", [])}


def predict_files(version_dir: Path, paths: list[Path]) -> tuple[list[str], np.ndarray]:
    """(the version's labels, probabilities float32 [N, classes]) through serving_default."""
    import tensorflow as tf

    labels = repository.read_labels(version_dir)
    model = tf.saved_model.load(str(version_dir))
    serve = model.signatures[contract.SERVING_DEFAULT]
    out = []
    for start in range(0, len(paths), _BATCH):
        batch = [p.read_bytes() for p in paths[start : start + _BATCH]]
        result = serve(**{contract.INPUT_IMAGE_BYTES: tf.constant(batch)})
        out.append(result[contract.OUTPUT_PROBABILITIES].numpy())
    return labels, np.concatenate(out) if out else np.zeros((0, len(labels)), np.float32)


def knn_votes(features: np.ndarray, labels: np.ndarray, classes: int, k: int) -> np.ndarray:
    """Leave-one-out vote shares float [N, classes] of each row's k nearest other rows."""
    count = len(features)
    k = max(1, min(k, count - 1))
    votes = np.zeros((count, classes), np.float64)
    chunk = max(1, _DISTANCES // count)  # bounded memory: chunk x count distances at a time
    for start in range(0, count, chunk):
        part = features[start : start + chunk]
        dist = (part**2).sum(1)[:, None] - 2 * part @ features.T + (features**2).sum(1)[None]
        dist[np.arange(len(part)), np.arange(start, start + len(part))] = np.inf
        nearest = np.argpartition(dist, k - 1, axis=1)[:, :k]
        rows = np.repeat(np.arange(start, start + len(part)), k)
        np.add.at(votes, (rows, labels[nearest].reshape(-1)), 1.0 / k)
    return votes


def _rank(
    rows: list[tuple[str, str, str]],
    labels: list[str],
    probs: np.ndarray,
    trained_on: set[str],
) -> list[dict]:
    """rows: (path, split, given label) aligned with `probs` [N, classes]; suspects sorted."""
    unknown = sorted({given for _, _, given in rows} - set(labels))
    if unknown:
        raise DataError(
            f"the predictions do not know class(es) {', '.join(unknown)}; "
            "audit labels with a model trained on the same classes"
        )
    index = {label: i for i, label in enumerate(labels)}
    given = np.array([index[g] for _, _, g in rows])
    votes = knn_votes(
        np.sqrt(np.clip(probs, 0, 1).astype(np.float64)), given, len(labels), NEIGHBOURS
    )
    suspects = []
    for row, (path, split, label) in enumerate(rows):
        in_sample = path in trained_on
        w = _MODEL_WEIGHT[in_sample]
        mixed = w * probs[row] + (1 - w) * votes[row]
        suggested = int(np.argmax(mixed))
        if suggested == given[row]:
            continue
        suspects.append(
            {
                "path": path,
                "split": split,
                "given": label,
                "suggested": labels[suggested],
                "score": round(float(1.0 - mixed[given[row]]), 4),
                "model_p_given": round(float(probs[row, given[row]]), 4),
                "neighbours_agree": round(float(votes[row, given[row]]), 4),
                "model_trained_on_it": in_sample,
            }
        )
    suspects.sort(key=lambda x: (-x["score"], x["path"]))
    return suspects


def label_suspects(dataset: Dataset, version_dir: Path) -> tuple[list[dict], dict]:
    """Suspects from a model version, most suspicious first, and how they were made."""
    samples = [(split, s) for split in ("train", "val", "test") for s in dataset.splits[split]]
    if len(samples) < 2:
        return [], {"version_dir": str(version_dir), "method": "none: fewer than 2 images"}
    labels, probs = predict_files(version_dir, [s.path for _, s in samples])
    rows = [(dataset.relative(s), split, s.label) for split, s in samples]
    trained_on = _model_train_paths(version_dir, dataset)
    info = {
        "version_dir": str(version_dir),
        "method": f"model probability + leave-one-out {NEIGHBOURS}-NN vote on its outputs",
        "images_the_model_trained_on": sum(1 for r in rows if r[0] in trained_on),
    }
    return _rank(rows, labels, probs, trained_on), info


def kfold_suspects(dataset: Dataset, kfold_run_dir: Path) -> tuple[list[dict], dict]:
    """Suspects from a k-fold job's out-of-fold predictions (RUN_DIR/kfold/fold_*/
    predictions.json): every probability comes from a model that never saw the image.
    Images the folds did not hold (the kept-out test split, files added since) are not
    ranked."""
    files = sorted((Path(kfold_run_dir) / "kfold").glob("fold_*/predictions.json"))
    if not files:
        raise DataError(
            f"no out-of-fold predictions under {kfold_run_dir}/kfold/: give the run folder "
            "of a finished k-fold job"
        )
    oof: dict[str, list[float]] = {}
    labels: list[str] = []
    for path in files:
        fold = json.loads(path.read_text(encoding="utf-8"))
        if Path(fold["root"]).resolve() != Path(dataset.root).resolve():
            raise DataError(f"{path} was made for data {fold['root']}, not {dataset.root}")
        labels = fold["classes"]
        oof.update({rel: probs for rel, _label, probs in fold["rows"]})
    rows, probs = [], []
    for split in ("train", "val", "test"):
        for sample in dataset.splits[split]:
            rel = dataset.relative(sample)
            if rel in oof:
                rows.append((rel, split, sample.label))
                probs.append(oof[rel])
    info = {
        "kfold_dir": str(kfold_run_dir),
        "method": f"out-of-fold probability + leave-one-out {NEIGHBOURS}-NN vote on them",
        "images_ranked": len(rows),
        "images_without_prediction": sum(len(v) for v in dataset.splits.values()) - len(rows),
    }
    if len(rows) < 2:
        return [], info
    return _rank(rows, labels, np.asarray(probs, np.float64), set()), info
