"""Safe photo decoding and the fixed-size crops the backbone eats.

Photos come from strangers: they may be truncated, enormous, CMYK, 16-bit,
palette-with-transparency or rotated by an EXIF tag. Everything here either
returns a clean 224x224 RGB crop or raises :class:`ImageError` with a reason a
person can act on; nothing else escapes.
"""

from __future__ import annotations

import io
import warnings
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

RESIZE_SHORTER_SIDE = 256
CROP_SIZE = 224

Source = Path | bytes
K = TypeVar("K")


class ImageError(ValueError):
    """A photo that cannot be used; the message says why."""


def _open(source: Source, max_bytes: int) -> Image.Image:
    if isinstance(source, (bytes, bytearray)):
        if len(source) > max_bytes:
            raise ImageError(f"photo is {len(source)} bytes, over the limit of {max_bytes}")
        return Image.open(io.BytesIO(source))
    try:
        size = source.stat().st_size
    except OSError as exc:
        raise ImageError(f"cannot read {source}: {exc.strerror or exc}") from None
    if size > max_bytes:
        raise ImageError(f"photo is {size} bytes, over the limit of {max_bytes}")
    return Image.open(source)


def _to_rgb(im: Image.Image) -> Image.Image:
    """RGB with transparent areas on white (product cut-outs are shot on white)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = arr.max() or 1.0
        im = Image.fromarray((arr * (255.0 / top)).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "RGB" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def load_image(source: Source, max_pixels: int, max_bytes: int) -> Image.Image:
    """Decode a photo to an upright RGB image, refusing bombs and broken files.

    JPEGs are decoded at a reduced scale when that still leaves the shorter
    side at least RESIZE_SHORTER_SIDE (libjpeg's DCT scaling is nearly free).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = _open(source, max_bytes)
            width, height = im.size
            if width * height > max_pixels:
                raise ImageError(
                    f"photo is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
                    "(raise VISTAS_MAX_IMAGE_PIXELS if such photos are expected)"
                )
            if im.format == "JPEG" and not _has_rotation(im):
                scale = RESIZE_SHORTER_SIDE / min(width, height)
                im.draft("RGB", (int(width * scale) + 1, int(height * scale) + 1))
            im.load()
            im = ImageOps.exif_transpose(im)
            return _to_rgb(im)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image file, or a format Pillow cannot read") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"photo refused as a decompression bomb: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"photo is damaged or truncated: {exc}") from None


def _has_rotation(im: Image.Image) -> bool:
    try:
        return im.getexif().get(0x0112, 1) != 1
    except Exception:  # noqa: BLE001 - a broken EXIF block only means "no rotation info"
        return False


def center_crop(im: Image.Image) -> np.ndarray:
    """Shorter side to 256, centre 224x224 crop, as uint8 HxWx3."""
    width, height = im.size
    scale = RESIZE_SHORTER_SIDE / min(width, height)
    size = (max(CROP_SIZE, round(width * scale)), max(CROP_SIZE, round(height * scale)))
    im = im.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    left = (size[0] - CROP_SIZE) // 2
    top = (size[1] - CROP_SIZE) // 2
    return np.asarray(im.crop((left, top, left + CROP_SIZE, top + CROP_SIZE)), dtype=np.uint8)


def load_crop(source: Source, max_pixels: int, max_bytes: int) -> np.ndarray:
    """Decode and crop one photo; raises ImageError."""
    return center_crop(load_image(source, max_pixels, max_bytes))


def prefetch_crops(
    sources: Iterable[tuple[K, Source]], max_pixels: int, max_bytes: int, workers: int = 2, ahead: int = 64
) -> Iterator[tuple[K, np.ndarray | ImageError]]:
    """Decode photos on a thread pool, in order, at most ``ahead`` in flight.

    Pillow releases the GIL while decoding and resizing, so this overlaps with
    the forward pass running in the caller's thread.
    """
    pending: deque[tuple[K, Future[np.ndarray]]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        for key, source in sources:
            pending.append((key, pool.submit(load_crop, source, max_pixels, max_bytes)))
            if len(pending) >= ahead:
                yield _result(*pending.popleft())
        while pending:
            yield _result(*pending.popleft())


def _result(key: K, future: Future[np.ndarray]) -> tuple[K, np.ndarray | ImageError]:
    try:
        return key, future.result()
    except ImageError as exc:
        return key, exc
