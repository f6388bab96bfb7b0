"""The GPU fast path's side of photo decoding: which photos the device (nvJPEG) may decode, and doing it.

Decoding itself is :mod:`recommender.photos`, the one safe decoder every
door shares; :mod:`recommender.model.prefetch` schedules it on threads, and
this module adds the GPU fast path. The device
path only takes plain baseline JPEGs whose header passed the same byte and
pixel limits and whose shape keeps the resize small; every other photo, and
any JPEG the decoder refuses, goes through the reference path, errors
included.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from recommender.photos import CROP_SIZE, ImageError, Source, crop_geometry, has_rotation, load_crop, probe

#: Decoded pixels per nvJPEG call: bounds device memory when a batch holds huge photos (3 bytes a pixel).
DECODE_PIXEL_BUDGET = 128_000_000
#: Longest side over shorter side the device path takes: it resizes the whole photo before cropping, so a
#: strip would cost its upscaled size in device memory. Longer shapes go to Pillow, which crops first.
DEVICE_MAX_ASPECT = 4.0
_JPEG_END = b"\xff\xd9"


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
    size = _plain_jpeg(data, max_pixels) if data is not None else None
    if size is None:
        return load_crop(source if data is None else data, max_pixels, max_bytes)
    return Jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), *size)


def _read(source: Source, max_bytes: int) -> bytes | None:
    """The bytes within the limit, or None to let the reference path explain the problem."""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source) if len(source) <= max_bytes else None
    try:
        return source.read_bytes() if source.stat().st_size <= max_bytes else None
    except OSError:
        return None


def _plain_jpeg(data: bytes, max_pixels: int) -> tuple[int, int] | None:
    """(width, height) of a complete, upright, baseline RGB or grey JPEG within the limits, of a shape the
    device resizes cheaply, else None."""
    if not data.endswith(_JPEG_END):  # truncated, or trailing bytes: Pillow decides
        return None
    try:
        found = probe(data, max_pixels, len(data))
        long_side, short_side = max(found.width, found.height), min(found.width, found.height)
        if found.format != "JPEG" or long_side > DEVICE_MAX_ASPECT * short_side:
            return None
        with Image.open(io.BytesIO(data), formats=["JPEG"]) as im:
            plain = im.mode in ("RGB", "L") and not im.info.get("progressive") and not has_rotation(im)
    except Exception:  # noqa: BLE001 - anything odd takes the reference path, which names the problem
        return None
    return (found.width, found.height) if plain else None


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
    new_width, new_height, left, top = crop_geometry(width, height)
    resized = F.interpolate(images.float(), size=(new_height, new_width), mode="bilinear", antialias=True)
    crop = resized[:, :, top : top + CROP_SIZE, left : left + CROP_SIZE]
    return crop.round_().clamp_(0, 255).to(torch.uint8)


def _reference_crop(jpeg: Jpeg, device: torch.device, max_pixels: int, max_bytes: int) -> torch.Tensor | ImageError:
    try:
        crop = load_crop(jpeg.data.numpy().tobytes(), max_pixels, max_bytes)
    except ImageError as exc:
        return exc
    return torch.tensor(crop).permute(2, 0, 1).to(device)
