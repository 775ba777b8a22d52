"""Header sniffing that lets the server refuse decompression bombs before decoding."""

import numpy as np
from PIL import Image

from imgclf.server.imageinfo import sniff
from tests.images import animated_gif, encode, jpeg, png, rgb_array


def test_dimensions_of_every_accepted_format():
    pixels = rgb_array(30, 50)
    assert sniff(png(pixels)) == sniff(png(pixels))
    for data, fmt in [
        (png(pixels), "png"),
        (jpeg(pixels), "jpeg"),
        (encode(Image.fromarray(pixels), "BMP"), "bmp"),
        (encode(Image.fromarray(pixels), "GIF"), "gif"),
    ]:
        info = sniff(data)
        assert (info.format, info.width, info.height) == (fmt, 50, 30)


def test_progressive_jpeg_and_gif_frames():
    progressive = encode(Image.fromarray(rgb_array(40, 20)), "JPEG", progressive=True)
    assert (sniff(progressive).width, sniff(progressive).height) == (20, 40)
    frames = [np.full((16, 16, 3), v, np.uint8) for v in (0, 90, 180)]
    info = sniff(animated_gif(frames))
    assert info.frames == 3 and info.pixels == 16 * 16 * 3


def test_webp_is_sniffed_like_the_model_decodes_it():
    for kwargs in ({"lossless": True}, {"quality": 80}):
        info = sniff(encode(Image.fromarray(rgb_array(30, 50)), "WEBP", **kwargs))
        assert (info.format, info.width, info.height) == ("webp", 50, 30)


def test_unknown_or_truncated_bytes():
    assert sniff(b"hello") is None
    assert sniff(b"") is None
    assert sniff(b"\xff\xd8\xff") is None


def gif_bomb(screen: int = 1, frame: int = 20000) -> bytes:
    """A GIF whose logical screen says `screen`x`screen` and whose one frame is huge.

    The LZW data is a tiny valid stream (clear code, end code): the header alone is
    what a naive check reads, the frame descriptor is what giflib allocates.
    """
    import struct

    header = b"GIF89a" + struct.pack("<HHBBB", screen, screen, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    descriptor = b"\x2c" + struct.pack("<HHHHB", 0, 0, frame, frame, 0)
    lzw = b"\x02" + b"\x02\x44\x01" + b"\x00"  # min code size 2; clear + end; terminator
    return header + descriptor + lzw + b"\x3b"


def test_gif_frame_descriptors_count_not_the_screen():
    info = sniff(gif_bomb())
    assert (info.width, info.height, info.frames) == (20000, 20000, 1)
    assert info.pixels == 400_000_000
    assert info.decode_bytes > 400_000_000 * 3


def test_decode_budget_names_what_was_over():
    import pytest

    from imgclf.errors import PayloadTooLarge
    from imgclf.server.imageinfo import DecodeBudget

    with pytest.raises(PayloadTooLarge, match=r"gif 20000x20000 decodes to 400000000 pixels"):
        DecodeBudget(40_000_000, 2**30).add(0, sniff(gif_bomb()))
    budget = DecodeBudget(40_000_000, 32 * 2**20)
    photo = sniff(png(rgb_array(8, 8)))
    budget.add(0, photo)  # tiny
    big = sniff(jpeg(rgb_array(1500, 2000)))
    with pytest.raises(PayloadTooLarge, match=r"image 1: jpeg 2000x1500 .* budget of 32 MiB"):
        budget.add(1, big)
