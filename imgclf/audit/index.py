"""Finding near-identical pairs among N images without comparing all N^2 pairs.

Two locality-sensitive hash families put similar images into the same bucket:
  - bit sampling of the 64-bit DCT hash (close in Hamming distance -> same sampled bits);
  - SimHash of the centred grey thumbnail (random hyperplanes: a small angle between
    two thumbnails -> same signs).
Each family has `TABLES` tables keyed by `KEY_BITS` sampled bits. Only pairs that share
a bucket in some table are compared, and a pair counts when `is_near` says so. With
these settings a pair at Hamming distance 6 or thumbnail correlation 0.95 is missed
with probability below 2% (distance 8: 5%; distance 12: 46%, unless the thumbnail
tables catch it), while a random pair of photos is compared with probability below 1%:
the work grows with N times the bucket sizes, not N^2.
"""

from __future__ import annotations

import numpy as np

from imgclf.audit.hashing import hamming

TABLES = 32
KEY_BITS = 18
BIG_BUCKET = 256  # a bucket larger than this is compared along a sorted window only
_WINDOW = 32
_CHUNK = 1 << 16  # pairs verified at once: 2 x 64 MB of thumbnail vectors
# The rule a candidate pair must pass, calibrated on 104 textured 96x96 photo tiles:
# all resized (64 px) and JPEG q60 copies pass, 103/104 one-pixel shifts, 85/104 copies
# cropped by 3 px a side, and 2 of the 5,356 pairs of different tiles.
HAMMING_CLOSE = 6
CORR_FLOOR = 0.85
HAMMING_NEAR = 12
CORR_NEAR = 0.92
CORR_CLOSE = 0.985
_FLAT_STD = 2.0  # a thumbnail this flat has no pattern to correlate; compare its mean


def thumb_vectors(thumbs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit vectors float32 [N, D], means [N], stds [N]) of uint8 thumbnails [N, h, w]."""
    flat = thumbs.reshape(len(thumbs), -1).astype(np.float32)
    means = flat.mean(axis=1)
    centred = flat - means[:, None]
    stds = centred.std(axis=1)
    norms = np.linalg.norm(centred, axis=1)
    return centred / np.maximum(norms, 1e-6)[:, None], means, stds


def is_near(
    i: np.ndarray,
    j: np.ndarray,
    phash: np.ndarray,
    vectors: np.ndarray,
    means: np.ndarray,
    stds: np.ndarray,
) -> np.ndarray:
    """Which of the pairs (i[k], j[k]) are near-duplicates (bool array)."""
    dist = hamming(phash[i], phash[j])
    corr = np.einsum("kd,kd->k", vectors[i], vectors[j])
    textured = ((dist <= HAMMING_NEAR) & (corr >= CORR_NEAR)) | (
        (dist <= HAMMING_CLOSE) & (corr >= CORR_FLOOR)
    )
    textured |= corr >= CORR_CLOSE
    flat_i, flat_j = stds[i] < _FLAT_STD, stds[j] < _FLAT_STD
    flat = flat_i & flat_j & (np.abs(means[i] - means[j]) <= 4.0)
    return np.where(flat_i | flat_j, flat, textured)


def _simhash(vectors: np.ndarray, seed: int) -> np.ndarray:
    planes = np.random.default_rng(seed).standard_normal((vectors.shape[1], 64)).astype(np.float32)
    bits = (vectors @ planes) > 0
    return np.packbits(bits, axis=1).view(">u8")[:, 0].astype(np.uint64)


def _keys(codes: np.ndarray, positions: np.ndarray) -> np.ndarray:
    key = np.zeros(len(codes), np.uint64)
    for p in positions:
        key = (key << np.uint64(1)) | ((codes >> np.uint64(p)) & np.uint64(1))
    return key


def _bucket_pairs(keys: np.ndarray, tie: np.ndarray) -> np.ndarray:
    """Pairs (as [M, 2] int64) of items that share a key; big buckets by a window."""
    order = np.lexsort((tie, keys))
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    sizes = np.diff(np.r_[starts, len(keys)])
    out = []
    for size in np.unique(sizes[sizes > 1]):
        runs = starts[sizes == size]
        if size <= BIG_BUCKET:
            a, b = np.triu_indices(size, 1)
            out.append(np.stack([order[runs[:, None] + a], order[runs[:, None] + b]], -1))
        else:
            for start in runs:
                members = order[start : start + size]
                for step in range(1, _WINDOW + 1):
                    out.append(np.stack([members[:-step], members[step:]], -1)[None])
    if not out:
        return np.empty((0, 2), np.int64)
    return np.concatenate([p.reshape(-1, 2) for p in out]).astype(np.int64)


def near_pairs(phash: np.ndarray, thumbs: np.ndarray, seed: int = 0) -> tuple[np.ndarray, int]:
    """Verified near pairs [M, 2] (i < j) and how many candidate pairs were compared."""
    count = len(phash)
    if count < 2:
        return np.empty((0, 2), np.int64), 0
    vectors, means, stds = thumb_vectors(thumbs)
    families = (phash.astype(np.uint64), _simhash(vectors, seed))
    rng = np.random.default_rng(seed)
    tie = phash.astype(np.uint64)
    candidates = []
    for codes in families:
        for _ in range(TABLES):
            pairs = _bucket_pairs(_keys(codes, rng.choice(64, KEY_BITS, replace=False)), tie)
            pairs.sort(axis=1)
            candidates.append(np.unique(pairs[:, 0] * count + pairs[:, 1]))
    flat = np.unique(np.concatenate(candidates))
    found = []
    for chunk in range(0, len(flat), _CHUNK):
        part = flat[chunk : chunk + _CHUNK]
        i, j = part // count, part % count
        keep = is_near(i, j, tie, vectors, means, stds)
        found.append(np.stack([i[keep], j[keep]], -1))
    pairs = np.concatenate(found) if found else np.empty((0, 2), np.int64)
    return pairs, len(flat)
