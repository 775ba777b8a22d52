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
