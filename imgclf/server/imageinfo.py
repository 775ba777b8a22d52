"""What the decoder will allocate, read from headers alone, so bombs are refused unread.

Covers the formats the model's preprocess decodes: JPEG, PNG, GIF, BMP and WebP
(TensorFlow's decode_image reads WebP too). Returns None for anything else.

A header can lie: a GIF's logical screen may say 1x1 while a frame inside is
20000x20000, and giflib allocates the frame. So every GIF image descriptor is read
and the canvas is the largest extent of the screen and of every frame. The
`decode_bytes` estimate is what decoding plus the first float32 conversion of the
preprocess allocate (docs/serving.md, "Decode limits", gives the worst case).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from imgclf.errors import PayloadTooLarge

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


_PROGRESSIVE_SOF = {0xC2, 0xC6, 0xCA, 0xCE}


@dataclass(frozen=True)
class ImageInfo:
    """Canvas size (the largest extent the decoder fills), frame count, bytes per pixel.

    `frame_pixels` is the sum of every frame's own raster (GIF: one byte a pixel
    each in giflib); `extra_bytes_per_pixel` covers decoder buffers beyond the RGB(A)
    output (a progressive JPEG's coefficients, 16-bit PNG rows).
    """

    format: str
    width: int
    height: int
    frames: int = 1
    frame_pixels: int = 0
    bytes_per_pixel: int = 4
    extra_bytes_per_pixel: int = 0

    @property
    def pixels(self) -> int:
        """Pixels the decoder allocates: every frame of the whole canvas."""
        return self.width * self.height * max(1, self.frames)

    @property
    def decode_bytes(self) -> int:
        """Bytes decoding allocates: output frames, frame rasters, decoder buffers, and
        one float32 RGB copy of the canvas (the preprocess converts before resizing)."""
        canvas = self.width * self.height
        return (
            self.pixels * self.bytes_per_pixel
            + self.frame_pixels
            + canvas * self.extra_bytes_per_pixel
            + canvas * 3 * 4
        )

    def describe(self) -> str:
        frames = f", {self.frames} frames" if self.frames > 1 else ""
        return f"{self.format} {self.width}x{self.height}{frames}"


def _skip_sub_blocks(data: bytes, i: int) -> int:
    while i < len(data):
        size = data[i]
        i += 1 + size
        if size == 0:
            return i
    return i


def _gif(data: bytes) -> ImageInfo:
    """Walk the block structure (no decoding): every image descriptor's size counts."""
    screen_w, screen_h = struct.unpack("<HH", data[6:10])
    width, height = screen_w, screen_h
    flags = data[10]
    i = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    frames = 0
    frame_pixels = 0
    while i < len(data):
        block = data[i]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            i = _skip_sub_blocks(data, i + 2)
        elif block == 0x2C:  # image descriptor: left, top, width, height, flags
            if i + 10 > len(data):
                break
            left, top, frame_w, frame_h = struct.unpack("<HHHH", data[i + 1 : i + 9])
            frames += 1
            frame_pixels += frame_w * frame_h
            width = max(width, left + frame_w)
            height = max(height, top + frame_h)
            local = data[i + 9]
            i += 10 + (3 * 2 ** ((local & 7) + 1) if local & 0x80 else 0)
            i = _skip_sub_blocks(data, i + 1)  # LZW minimum code size, then data
        else:
            break
    return ImageInfo("gif", width, height, max(1, frames), frame_pixels, bytes_per_pixel=3)


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
            # libjpeg keeps a progressive image's DCT coefficients: 2 bytes a sample.
            extra = 6 if marker in _PROGRESSIVE_SOF else 0
            return ImageInfo("jpeg", width, height, bytes_per_pixel=3, extra_bytes_per_pixel=extra)
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
        depth = data[24] if len(data) > 24 else 8
        return ImageInfo("png", width, height, bytes_per_pixel=8 if depth == 16 else 4)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 13:
        return _gif(data)
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


class DecodeBudget:
    """One request's decode limits: pixels per image, and bytes for all its images.

    The 413 message names what was over: which image, its real canvas, and the limit.
    """

    def __init__(self, max_pixels: int, max_bytes: int) -> None:
        self.max_pixels = max_pixels
        self.max_bytes = max_bytes
        self.used = 0

    def add(self, index: int, info: ImageInfo) -> None:
        if info.pixels > self.max_pixels:
            raise PayloadTooLarge(
                f"image {index}: {info.describe()} decodes to {info.pixels} pixels, over the "
                f"limit of {self.max_pixels} pixels (IMGCLF_MAX_IMAGE_PIXELS)"
            )
        self.used += info.decode_bytes
        if self.used > self.max_bytes:
            raise PayloadTooLarge(
                f"image {index}: {info.describe()} brings this request's decode memory to "
                f"{self.used / 2**20:.0f} MiB, over the budget of "
                f"{self.max_bytes / 2**20:.0f} MiB (IMGCLF_MAX_DECODE_BYTES)"
            )
