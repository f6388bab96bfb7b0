"""Safe photo decoding and the fixed-size crops the backbone eats.

Photos come from strangers: they may be truncated, enormous, CMYK, 16-bit,
palette-with-transparency or rotated by an EXIF tag. Everything here either
returns a clean 224x224 RGB crop or raises :class:`ImageError` with a reason a
person can act on; nothing else escapes.

The Pillow path is the reference. The device path (nvJPEG when the device is a
GPU) only takes plain baseline JPEGs whose header passed the same byte and
pixel limits; every other photo, and any JPEG the decoder refuses, goes
through the reference path, errors included.
"""

from __future__ import annotations

import io
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.nn import functional as F
from torchvision.io import ImageReadMode, decode_jpeg

RESIZE_SHORTER_SIDE = 256
CROP_SIZE = 224
#: Decoded pixels per nvJPEG call: bounds device memory when a batch holds huge photos (3 bytes a pixel).
DECODE_PIXEL_BUDGET = 128_000_000
_JPEG_END = b"\xff\xd9"

Source = Path | bytes
K = TypeVar("K")
T = TypeVar("T")


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


def _resized(width: int, height: int) -> tuple[int, int, int, int]:
    """(width, height) after scaling the shorter side to 256, and the (left, top) of the centre crop."""
    scale = RESIZE_SHORTER_SIDE / min(width, height)
    size = (max(CROP_SIZE, round(width * scale)), max(CROP_SIZE, round(height * scale)))
    return size[0], size[1], (size[0] - CROP_SIZE) // 2, (size[1] - CROP_SIZE) // 2


def center_crop(im: Image.Image) -> np.ndarray:
    """Shorter side to 256, centre 224x224 crop, as uint8 HxWx3."""
    width, height, left, top = _resized(*im.size)
    im = im.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=3.0)
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
    return prefetch(sources, lambda source: load_crop(source, max_pixels, max_bytes), workers, ahead)


def prefetch(
    sources: Iterable[tuple[K, Source]], load: Callable[[Source], T], workers: int, ahead: int
) -> Iterator[tuple[K, T | ImageError]]:
    """``load`` each source on a thread pool, results in order, at most ``ahead`` in flight."""
    pending: deque[tuple[K, Future[T]]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        for key, source in sources:
            pending.append((key, pool.submit(load, source)))
            if len(pending) >= ahead:
                yield _result(*pending.popleft())
        while pending:
            yield _result(*pending.popleft())


def _result(key: K, future: Future[T]) -> tuple[K, T | ImageError]:
    try:
        return key, future.result()
    except ImageError as exc:
        return key, exc


@dataclass(frozen=True)
class Jpeg:
    """A plain JPEG whose header passed the limits: the device may decode it."""

    data: torch.Tensor  # uint8, the file's bytes
    width: int
    height: int


def jpeg_or_crop(source: Source, max_pixels: int, max_bytes: int) -> Jpeg | np.ndarray:
    """The bytes of a JPEG the device can decode, else the reference crop; raises ImageError.

    Only the header is parsed here, so the byte and pixel limits hold before
    anything is decoded. Progressive JPEGs go to Pillow too: nvJPEG decodes
    them one at a time, slower than the CPU thread pool.
    """
    data = _read(source, max_bytes)
    probe = _plain_jpeg(data, max_pixels) if data is not None else None
    if probe is None:
        return load_crop(source if data is None else data, max_pixels, max_bytes)
    return Jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), *probe)


def _read(source: Source, max_bytes: int) -> bytes | None:
    """The bytes within the limit, or None to let the reference path explain the problem."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source) if len(source) <= max_bytes else None
    try:
        return source.read_bytes() if source.stat().st_size <= max_bytes else None
    except OSError:
        return None


def _plain_jpeg(data: bytes, max_pixels: int) -> tuple[int, int] | None:
    """(width, height) of a complete, upright, baseline RGB or grey JPEG within the pixel limit, else None."""
    if not data.endswith(_JPEG_END):  # truncated, or trailing bytes: Pillow decides
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            plain = (
                im.format == "JPEG" and im.mode in ("RGB", "L") and not im.info.get("progressive")
                and im.width * im.height <= max_pixels and not _has_rotation(im)
            )
    except Exception:  # noqa: BLE001 - anything odd takes the reference path, which names the problem
        return None
    return im.size if plain else None


def crops_on_device(
    jpegs: Sequence[Jpeg], device: torch.device, max_pixels: int, max_bytes: int
) -> list[torch.Tensor | ImageError]:
    """Decode JPEGs on ``device`` and crop them as :func:`center_crop` does: uint8 3x224x224 each.

    A JPEG the decoder refuses is decoded by the reference path instead, so
    its result (a crop or an ImageError) is what the CPU would have given.
    """
    out: list[torch.Tensor | ImageError] = []
    for chunk in _chunks(jpegs):
        try:
            decoded = decode_jpeg([j.data for j in chunk], mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            decoded = [_decode_one(j, device) for j in chunk]
        out.extend(_crop_decoded(chunk, decoded, device, max_pixels, max_bytes))
    return out


def _chunks(jpegs: Sequence[Jpeg]) -> Iterator[Sequence[Jpeg]]:
    start, pixels = 0, 0
    for i, jpeg in enumerate(jpegs):
        if i > start and pixels + jpeg.width * jpeg.height > DECODE_PIXEL_BUDGET:
            yield jpegs[start:i]
            start, pixels = i, 0
        pixels += jpeg.width * jpeg.height
    if start < len(jpegs):
        yield jpegs[start:]


def _decode_one(jpeg: Jpeg, device: torch.device) -> torch.Tensor | None:
    try:
        return decode_jpeg(jpeg.data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return None


def _crop_decoded(
    chunk: Sequence[Jpeg], decoded: Sequence[torch.Tensor | None], device: torch.device, max_pixels: int,
    max_bytes: int,
) -> list[torch.Tensor | ImageError]:
    """Resize and crop same-sized images together (one kernel per size); refused ones via Pillow."""
    out: list[torch.Tensor | ImageError | None] = [None] * len(chunk)
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, (jpeg, image) in enumerate(zip(chunk, decoded)):
        if image is None or image.shape != (3, jpeg.height, jpeg.width):
            out[i] = _reference_crop(jpeg, device, max_pixels, max_bytes)
        else:
            by_size.setdefault((jpeg.width, jpeg.height), []).append(i)
    for (width, height), rows in by_size.items():
        crops = _resize_crop(torch.stack([decoded[i] for i in rows]), width, height)
        for i, crop in zip(rows, crops):
            out[i] = crop
    return cast(list[torch.Tensor | ImageError], out)  # every slot is filled above


def _resize_crop(images: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """center_crop's geometry with an antialiased bilinear filter (what Pillow's BILINEAR resize does)."""
    new_width, new_height, left, top = _resized(width, height)
    resized = F.interpolate(images.float(), size=(new_height, new_width), mode="bilinear", antialias=True)
    crop = resized[:, :, top : top + CROP_SIZE, left : left + CROP_SIZE]
    return crop.round_().clamp_(0, 255).to(torch.uint8)


def _reference_crop(jpeg: Jpeg, device: torch.device, max_pixels: int, max_bytes: int) -> torch.Tensor | ImageError:
    try:
        crop = load_crop(jpeg.data.numpy().tobytes(), max_pixels, max_bytes)
    except ImageError as exc:
        return exc
    return torch.tensor(crop).permute(2, 0, 1).to(device)
