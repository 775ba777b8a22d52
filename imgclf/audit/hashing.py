"""What the audit reads from each image file, once: a content hash, a perceptual hash,
a tiny grey thumbnail and the image's size and colour mode.

No TensorFlow: Pillow decodes, and a JPEG is decoded at a reduced scale (`draft`) since
a 32x32 grey copy is all the hashes need. That keeps an audit of 100,000 files to
minutes on a laptop CPU.

The perceptual hash is the DCT hash (pHash): the grey image at 32x32, its 2-D DCT, the
8x8 lowest frequencies without the DC term compared with their median, 64 bits. Resizing,
JPEG recompression, a shift by a pixel or a crop of a few percent change few of the bits;
different pictures differ in about half of them.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from imgclf.trainer.data import NOT_DECODABLE, read_image_file

HASH_SIZE = 8  # 8x8 DCT coefficients -> 64 bits
_DCT_INPUT = 32
THUMB = 16  # the grey thumbnail compared to confirm a near pair (16x16 uint8)
# What the trainer's decoder accepts (tf.io.decode_image): other formats are skipped there.
FORMATS = frozenset({"JPEG", "PNG", "GIF", "BMP", "MPO"})


def _dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix: D @ x is the DCT of the column vector x."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


_DCT = _dct_matrix(_DCT_INPUT)[:HASH_SIZE]


@dataclass(frozen=True)
class ImageFacts:
    """What the audit knows about one readable image."""

    sha256: str
    phash: int  # 64-bit unsigned
    thumb: np.ndarray  # uint8 [THUMB, THUMB], grey
    width: int
    height: int
    grayscale: bool  # a grey mode, or colour channels that are all equal


def phash_of(grey32: np.ndarray) -> int:
    """64-bit DCT hash of a float [32, 32] grey image."""
    coeffs = _DCT @ grey32 @ _DCT.T  # [8, 8], lowest frequencies
    flat = coeffs.reshape(-1)[1:]  # drop the DC term (mean brightness)
    bits = np.concatenate([[False], flat > np.median(flat)])
    return int(np.packbits(bits).view(">u8")[0])


def _is_grey(image: Image.Image) -> bool:
    if image.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return True
    small = np.asarray(image.convert("RGB").resize((32, 32), Image.Resampling.BOX), dtype=np.int16)
    return bool(np.abs(small[..., 0] - small[..., 1]).max() <= 2) and bool(
        np.abs(small[..., 1] - small[..., 2]).max() <= 2
    )


def read_facts(path: Path) -> ImageFacts | str:
    """The facts of one file, or why it cannot be read (a short reason)."""
    data = read_image_file(path)
    if isinstance(data, str):
        return data
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in FORMATS:
                return NOT_DECODABLE
            width, height = image.size
            image.draft("RGB", (_DCT_INPUT * 2, _DCT_INPUT * 2))  # JPEG only: decode small
            image.load()
            grayscale = _is_grey(image)
            grey = image.convert("L")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        return f"not a decodable image ({type(exc).__name__})"
    grey32 = np.asarray(grey.resize((_DCT_INPUT, _DCT_INPUT), Image.Resampling.BOX), np.float64)
    thumb = np.asarray(grey.resize((THUMB, THUMB), Image.Resampling.BOX), np.uint8)
    return ImageFacts(
        sha256=hashlib.sha256(data).hexdigest(),
        phash=phash_of(grey32),
        thumb=thumb,
        width=width,
        height=height,
        grayscale=grayscale,
    )


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise distance of two uint64 arrays, element by element."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int16)
