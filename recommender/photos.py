"""The one safe photo decoder, for every door: uploads, image paths, query by photo, ingest, workers,
thumbnails and train-head.

Photos come from strangers: they may be truncated, enormous, lying about their
size, animated, CMYK, 16-bit, palette-with-transparency, rotated by an EXIF
tag, or not photos at all. Everything here either returns clean RGB pixels or
raises :class:`ImageError` with a reason a person can act on
(:class:`PhotoTooLarge` for the byte and pixel limits); nothing else escapes.

Invariants, each of which a door relies on:

* the byte limit is checked before reading, the pixel limit from the header
  before any pixel is decoded;
* only the formats in :data:`FORMATS` are opened: Pillow's other plugins
  (EPS, which runs Ghostscript, PSD, ICO, ...) are never reached;
* an animated GIF or a multi-page TIFF costs its first frame, never the rest;
* work per photo is bounded by the pixel limit, whatever the shape: JPEGs are
  decoded at a reduced DCT scale, and the crop region is cut out *before*
  mode conversion and resizing. A 1,000,000x20 strip used to be resized whole
  to a 256-pixel shorter side (12.8 Gpx, 14.6 GB peak RSS, 50 s); it now costs
  what its 20 Mpx cost to decode.

Pure Pillow and numpy, no torch: the API process imports it.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

RESIZE_SHORTER_SIDE = 256
CROP_SIZE = 224
#: The formats a photo may have, with the suffix an upload is stored under.
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}
_ORIENTATION = 0x0112

Source = Path | bytes


class ImageError(ValueError):
    """A photo that cannot be used; the message says why."""


class PhotoTooLarge(ImageError):
    """A photo over the byte or pixel limit (HTTP 413 at the API's doors)."""


@dataclass(frozen=True)
class Probe:
    """What a photo's header says, once it passed the limits."""

    format: str
    width: int
    height: int

    @property
    def suffix(self) -> str:
        return FORMATS[self.format]


def probe(source: Source, max_pixels: int, max_bytes: int) -> Probe:
    """Format and size from the header alone, within the limits; raises ImageError."""
    with _opened(source, max_pixels, max_bytes) as im:
        return Probe(str(im.format), im.width, im.height)


def check(source: Source, max_pixels: int, max_bytes: int) -> Probe:
    """Probe and fully decode the crop the backbone would see: a door that accepts the photo knows it will
    index. Costs what tagging's decode costs (bounded by the limits); raises ImageError."""
    found = probe(source, max_pixels, max_bytes)
    load_crop(source, max_pixels, max_bytes)
    return found


def load_image(source: Source, max_pixels: int, max_bytes: int, min_side: int = RESIZE_SHORTER_SIDE) -> Image.Image:
    """An upright RGB image whose shorter side is reduced towards ``min_side`` (never below it) while decoding:
    JPEGs through libjpeg's DCT scaling, other formats by an integer box reduction before any conversion."""
    with _decoded(source, max_pixels, max_bytes, min_side) as im:
        factor = min(im.size) // min_side
        if factor > 1 and im.mode in _REDUCIBLE:
            im = im.reduce(factor)
        return _to_rgb(im, _top(im))


def center_crop(im: Image.Image) -> np.ndarray:
    """Shorter side to 256, centre 224x224 crop, as uint8 HxWx3 (the backbone's input geometry).

    Only the source region the crop comes from is resized (Pillow's ``box``), so the cost is the crop's,
    not the whole photo scaled up or down.
    """
    return np.asarray(_cropped(im, _to_rgb), dtype=np.uint8)


def load_crop(source: Source, max_pixels: int, max_bytes: int) -> np.ndarray:
    """Decode and crop one photo as :func:`center_crop` does; raises ImageError.

    The crop region is cut out before mode conversion, so a 16-bit or
    transparent photo converts 224x224-odd pixels, not all of them.
    """
    with _decoded(source, max_pixels, max_bytes, RESIZE_SHORTER_SIDE) as im:
        top = _top(im)
        return np.asarray(_cropped(im, lambda region: _to_rgb(region, top)), dtype=np.uint8)


def crop_geometry(width: int, height: int) -> tuple[int, int, int, int]:
    """(width, height) after scaling the shorter side to 256, and the (left, top) of the centre crop."""
    scale = RESIZE_SHORTER_SIDE / min(width, height)
    size = (max(CROP_SIZE, round(width * scale)), max(CROP_SIZE, round(height * scale)))
    return size[0], size[1], (size[0] - CROP_SIZE) // 2, (size[1] - CROP_SIZE) // 2


def has_rotation(im: Image.Image) -> bool:
    """Whether an EXIF tag asks for the photo to be turned (a broken EXIF block means no)."""
    try:
        return im.getexif().get(_ORIENTATION, 1) != 1
    except Exception:  # noqa: BLE001 - a broken EXIF block only means "no rotation info"
        return False


# -- internals ----------------------------------------------------------------------------------------

#: Modes Image.reduce handles; the others (palette, 16-bit) are converted first, which the pixel limit bounds.
_REDUCIBLE = {"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "La", "RGBa"}
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I", "F")


@contextmanager
def _errors() -> Iterator[None]:
    """Every decoder failure as an ImageError with a reason; Pillow's own bomb warning is not ours to heed
    (our pixel limit is the policy), its bomb error is a photo too large."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"not an image file, or not one of the accepted formats ({', '.join(FORMATS)})") from None
    except Image.DecompressionBombError as exc:
        raise PhotoTooLarge(f"photo refused as a decompression bomb: {exc}") from None
    except MemoryError:
        raise PhotoTooLarge("photo is too large to decode in the memory a photo may use") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise anything on hostile bytes; each is a damaged photo
        raise ImageError(f"photo is damaged or truncated: {exc or type(exc).__name__}") from None


@contextmanager
def _opened(source: Source, max_pixels: int, max_bytes: int) -> Iterator[Image.Image]:
    """The photo opened (header parsed, no pixel decoded) after the byte and pixel limits; closed after."""
    with _errors():
        if isinstance(source, (bytes, bytearray)):
            size = len(source)
            fp: io.BytesIO | Path = io.BytesIO(source)
        else:
            try:
                size = source.stat().st_size
            except OSError as exc:
                raise ImageError(f"cannot read {source}: {exc.strerror or exc}") from None
            fp = source
        if size > max_bytes:
            raise PhotoTooLarge(f"photo is {size} bytes, over the limit of {max_bytes}")
        if size == 0:
            raise ImageError("photo is an empty file")
        with Image.open(fp, formats=list(FORMATS)) as im:
            width, height = im.size
            if width < 1 or height < 1:
                raise ImageError(f"photo claims a size of {width}x{height}")
            if width * height > max_pixels:
                raise PhotoTooLarge(
                    f"photo is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
                    "(raise VISTAS_MAX_IMAGE_PIXELS if such photos are expected)"
                )
            yield im


@contextmanager
def _decoded(source: Source, max_pixels: int, max_bytes: int, min_side: int) -> Iterator[Image.Image]:
    """The first frame decoded and upright, JPEGs at the smallest DCT scale keeping ``min_side``."""
    with _opened(source, max_pixels, max_bytes) as im, _errors():
        if im.format == "JPEG" and not has_rotation(im):
            scale = min_side / min(im.size)
            im.draft("RGB", (int(im.width * scale) + 1, int(im.height * scale) + 1))
        im.load()
        yield ImageOps.exif_transpose(im)


def _top(im: Image.Image) -> float | None:
    """The brightest value of a 16-bit or float photo (it is stretched to 0-255), else None."""
    if im.mode not in _SIXTEEN_BIT:
        return None
    low, high = im.getextrema()
    return float(high) if high and math.isfinite(high) else 1.0


def _to_rgb(im: Image.Image, top: float | None = None) -> Image.Image:
    """RGB with transparent areas on white (product cut-outs are shot on white); 16-bit stretched by ``top``."""
    if im.mode in _SIXTEEN_BIT:
        scale = 255.0 / (top if top is not None else (_top(im) or 1.0))
        arr = np.asarray(im, dtype=np.float32) * scale
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "RGB" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _cropped(im: Image.Image, to_rgb) -> Image.Image:
    """The centre crop at 224x224: the source region (with the filter's margin) cut out, converted by
    ``to_rgb``, then resized through Pillow's ``box`` so the result is what resizing the whole photo and
    cropping it would give."""
    width, height = im.size
    new_width, new_height, left, top = crop_geometry(width, height)
    sx, sy = width / new_width, height / new_height
    box = (left * sx, top * sy, (left + CROP_SIZE) * sx, (top + CROP_SIZE) * sy)
    margin = 2 * max(sx, sy, 1.0) + 2  # bilinear support (one source step each side), reduction's rounding
    region = (max(0, math.floor(box[0] - margin)), max(0, math.floor(box[1] - margin)),
              min(width, math.ceil(box[2] + margin)), min(height, math.ceil(box[3] + margin)))
    part = to_rgb(im.crop(region))
    inner = (box[0] - region[0], box[1] - region[1], box[2] - region[0], box[3] - region[1])
    return part.resize((CROP_SIZE, CROP_SIZE), Image.Resampling.BILINEAR, box=inner, reducing_gap=3.0)
