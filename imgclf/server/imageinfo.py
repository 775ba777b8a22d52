"""Image size from the header alone, so decompression bombs are refused before decoding.

Covers the formats the model's preprocess decodes: JPEG, PNG, GIF, BMP and WebP
(TensorFlow's decode_image reads WebP too). Returns None for anything else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    frames: int = 1

    @property
    def pixels(self) -> int:
        """Pixels the decoder allocates: a GIF is decoded whole, every frame."""
        return self.width * self.height * max(1, self.frames)


def _skip_sub_blocks(data: bytes, i: int) -> int:
    while i < len(data):
        size = data[i]
        i += 1 + size
        if size == 0:
            return i
    return i


def _gif_frames(data: bytes) -> int:
    """Count image descriptors by walking the block structure (no decoding)."""
    flags = data[10]
    i = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    frames = 0
    while i < len(data):
        block = data[i]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            i = _skip_sub_blocks(data, i + 2)
        elif block == 0x2C:  # image descriptor
            frames += 1
            if i + 10 > len(data):
                break
            local = data[i + 9]
            i += 10 + (3 * 2 ** ((local & 7) + 1) if local & 0x80 else 0)
            i = _skip_sub_blocks(data, i + 1)  # LZW minimum code size, then data
        else:
            break
    return max(1, frames)


def _jpeg(data: bytes) -> ImageInfo | None:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if marker in _JPEG_SOF and i + 9 <= n:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return ImageInfo("jpeg", width, height)
        if length < 2:
            return None
        i += 2 + length
    return None


def _webp(data: bytes) -> ImageInfo | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return ImageInfo("webp", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return ImageInfo("webp", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        animated = bool(data[20] & 0x02)
        frames = data.count(b"ANMF") if animated else 1
        return ImageInfo("webp", width, height, max(1, frames))
    return None


def sniff(data: bytes) -> ImageInfo | None:
    """Format and dimensions from the first bytes, without decoding pixels."""
    if data[:3] == b"\xff\xd8\xff":
        return _jpeg(data)
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return ImageInfo("png", width, height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 13:
        width, height = struct.unpack("<HH", data[6:10])
        return ImageInfo("gif", width, height, _gif_frames(data))
    if data[:2] == b"BM" and len(data) >= 26:
        header = struct.unpack("<I", data[14:18])[0]
        if header == 12:
            width, height = struct.unpack("<HH", data[18:22])
        else:
            width, height = struct.unpack("<ii", data[18:26])
        return ImageInfo("bmp", abs(width), abs(height))
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    return None
