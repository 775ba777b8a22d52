"""The one preprocessing function: formats, channels, and preprocess_input applied exactly once."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from imgclf import contract
from imgclf.trainer.preprocessing import image_problem, make_augmenter, make_preprocess
from tests.images import animated_gif, encode, jpeg, png, rgb_array

MEANS = np.array(contract.IMAGENET_BGR_MEANS, dtype=np.float32)


def caffe(rgb: np.ndarray) -> np.ndarray:
    """ResNet-50's preprocess_input written out by hand: RGB->BGR, minus ImageNet means."""
    return rgb[..., ::-1].astype(np.float32) - MEANS


@pytest.fixture(scope="module")
def preprocess():
    return make_preprocess(32)


def run(preprocess, data: bytes) -> np.ndarray:
    out = preprocess(tf.constant(data)).numpy()
    assert out.shape == (32, 32, 3)
    assert out.dtype == np.float32
    return out


def test_png_rgb_is_bgr_minus_means_once(preprocess):
    pixels = rgb_array()
    np.testing.assert_allclose(run(preprocess, png(pixels)), caffe(pixels), atol=1e-4)


def test_no_division_by_255(preprocess):
    white = np.full((32, 32, 3), 255, np.uint8)
    out = run(preprocess, png(white))
    np.testing.assert_allclose(out[0, 0], 255.0 - MEANS, atol=1e-4)


def test_grayscale_becomes_three_equal_channels(preprocess):
    gray = rgb_array()[..., 0]
    out = run(preprocess, encode(Image.fromarray(gray, "L"), "PNG"))
    expected = caffe(np.repeat(gray[..., None], 3, axis=2))
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_alpha_channel_is_dropped(preprocess):
    pixels = rgb_array()
    rgba = np.concatenate([pixels, np.full((32, 32, 1), 7, np.uint8)], axis=2)
    out = run(preprocess, encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_allclose(out, caffe(pixels), atol=1e-4)


def test_jpeg_decodes_like_pil(preprocess):
    pixels = rgb_array()
    data = jpeg(pixels)
    decoded = np.asarray(Image.open(__import__("io").BytesIO(data)).convert("RGB"))
    # JPEG decoders differ slightly (IDCT, chroma upsampling); noise is their worst case.
    diff = np.abs(run(preprocess, data) - caffe(decoded))
    assert diff.mean() < 2.0
    assert diff.max() <= 12.0


def test_gif_uses_first_frame(preprocess):
    first = np.zeros((32, 32, 3), np.uint8)
    first[..., 0] = 200
    second = np.zeros((32, 32, 3), np.uint8)
    second[..., 2] = 200
    out = run(preprocess, animated_gif([first, second]))
    expected = caffe(first)
    assert np.abs(out - expected).max() <= 2.0


def test_bmp_and_resize(preprocess):
    pixels = rgb_array(64, 48)
    out = run(preprocess, encode(Image.fromarray(pixels), "BMP"))
    # Resized, so not pixel-equal; the mean colour survives resizing.
    np.testing.assert_allclose(out.mean(axis=(0, 1)), caffe(pixels).mean(axis=(0, 1)), atol=1.0)


def test_bad_bytes_are_refused(preprocess, tmp_path):
    with pytest.raises(tf.errors.InvalidArgumentError):
        preprocess(tf.constant(b"definitely not an image"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    assert "not a decodable" in image_problem(preprocess, bad)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert image_problem(preprocess, empty) == "empty file"
    good = tmp_path / "good.png"
    good.write_bytes(png(rgb_array()))
    assert image_problem(preprocess, good) is None


def test_size_is_checked():
    with pytest.raises(ValueError, match="image_size"):
        make_preprocess(8)


@pytest.mark.parametrize(("preset", "ever_mirrored"), [("shift", False), ("light", True)])
def test_only_the_shift_preset_keeps_left_and_right(preset, ever_mirrored):
    """A bar on the left stays on the left under `shift`; the flipping presets move it."""
    images = np.zeros((64, 32, 32, 3), np.float32)
    images[:, 4:28, 3:8, :] = 100.0  # a vertical bar, columns 3-7
    augmented = make_augmenter(preset, seed=0)(tf.constant(images)).numpy()
    left = augmented[:, :, :16].sum(axis=(1, 2, 3))
    right = augmented[:, :, 16:].sum(axis=(1, 2, 3))
    assert bool((right > left).any()) is ever_mirrored
    if not ever_mirrored:
        assert not np.allclose(augmented, images)  # it did move the images
