"""Safe decoding: every odd photo either yields a clean crop or a clear ImageError."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recommender.model.prefetch import prefetch_crops
from recommender.photos import CROP_SIZE, ImageError, load_crop, load_image
from tests.conftest import DEMO

LIMITS = {"max_pixels": 20_000_000, "max_bytes": 5_000_000}
PHOTO = DEMO / "images" / "scratch" / "nature-beach-malibu.jpg"


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def test_real_photo_gives_224_crop() -> None:
    crop = load_crop(PHOTO, **LIMITS)
    assert crop.shape == (CROP_SIZE, CROP_SIZE, 3) and crop.dtype == np.uint8
    assert crop.std() > 10  # a real picture, not a blank


def test_garbage_bytes_are_refused() -> None:
    with pytest.raises(ImageError, match="not an image"):
        load_crop(b"this is not a photo" * 100, **LIMITS)


def test_truncated_jpeg_is_refused(tmp_path: Path) -> None:
    data = PHOTO.read_bytes()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_crop(broken, **LIMITS)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = encode(Image.new("L", (6000, 6000)), "PNG")  # 36 Mpx in a few kB
    assert len(bomb) < 200_000
    with pytest.raises(ImageError, match="over the limit"):
        load_image(bomb, **LIMITS)


def test_too_many_bytes_is_refused() -> None:
    with pytest.raises(ImageError, match="bytes, over the limit"):
        load_image(b"\xff" * 6_000_000, **LIMITS)


def test_missing_file_is_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "nope.jpg", **LIMITS)


@pytest.mark.parametrize("mode", ["CMYK", "RGBA", "LA", "P", "L", "I;16"])
def test_odd_modes_become_rgb(mode: str) -> None:
    base = Image.open(PHOTO).convert("RGB")
    if mode == "I;16":
        arr = (np.asarray(base.convert("L"), dtype=np.uint16) * 257)
        im = Image.fromarray(arr)
        assert im.mode.startswith("I;16")
        data = encode(im, "PNG")
    else:
        im = base.convert(mode)
        data = encode(im, "JPEG" if mode in ("CMYK", "L") else "PNG")
    out = load_image(data, **LIMITS)
    assert out.mode == "RGB" and out.size == base.size
    assert np.asarray(out).std() > 10


def test_transparency_is_composited_on_white() -> None:
    im = Image.new("RGBA", (300, 300), (255, 0, 0, 0))  # fully transparent red
    out = np.asarray(load_image(encode(im, "PNG"), **LIMITS))
    assert (out == 255).all()


def test_exif_rotation_is_applied() -> None:
    im = Image.open(PHOTO).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    out = load_image(encode(im, "JPEG", exif=exif.tobytes()), **LIMITS)
    assert out.size == (im.height, im.width)


def test_prefetch_keeps_order_and_reports_errors() -> None:
    sources = [("a", PHOTO), ("b", b"garbage"), ("c", PHOTO)]
    results = list(prefetch_crops(sources, workers=2, ahead=2, **LIMITS))
    assert [k for k, _ in results] == ["a", "b", "c"]
    assert isinstance(results[1][1], ImageError)
    assert results[0][1].shape == (CROP_SIZE, CROP_SIZE, 3)
