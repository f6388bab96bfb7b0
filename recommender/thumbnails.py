"""Small JPEGs of item photos for the map page, made once and cached on disk.

A thumbnail is named after what it was made from (the photo's path, size and
modification time, and the thumbnail size), so a changed photo gets a new file
and a new ETag, and API processes sharing the data directory share the cache.
Photos are opened with the same byte and pixel limits as indexing uses.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from PIL import Image, ImageOps

from recommender.settings import Settings

SIZE = 256  # longest side, pixels: sharp on a hover card at 2x, a few kB
QUALITY = 80


class ThumbnailError(Exception):
    """The item's photo is missing, too large or unreadable."""


def thumbnail(settings: Settings, photo: str) -> tuple[Path, str]:
    """The cached thumbnail of ``photo`` (made now if needed) and its ETag."""
    try:
        stat = os.stat(photo)
    except OSError as exc:
        raise ThumbnailError(f"the photo cannot be read ({exc.strerror})") from None
    if stat.st_size > settings.max_image_bytes:
        raise ThumbnailError(f"the photo is {stat.st_size} bytes, over the limit of {settings.max_image_bytes}")
    tag = hashlib.sha1(f"{photo}\0{stat.st_size}\0{stat.st_mtime_ns}\0{SIZE}".encode()).hexdigest()[:24]
    path = settings.data_dir / "thumbnails" / tag[:2] / f"{tag}.jpg"
    if not path.is_file():
        _write(_make(photo, settings.max_image_pixels), path)
    return path, tag


def _make(photo: str, max_pixels: int) -> Image.Image:
    try:
        with Image.open(photo) as image:
            if image.width * image.height > max_pixels:
                raise ThumbnailError(f"the photo has {image.width}x{image.height} pixels, over the limit")
            image.draft("RGB", (SIZE, SIZE))  # JPEG: decode at a reduced scale, much faster
            image = ImageOps.exif_transpose(image)
            if image.mode in ("RGBA", "LA", "P", "PA"):
                image = image.convert("RGBA")
                flat = Image.new("RGB", image.size, "white")
                flat.paste(image, mask=image.getchannel("A"))
                image = flat
            image = image.convert("RGB")
            image.thumbnail((SIZE, SIZE), Image.Resampling.LANCZOS)
            return image
    except ThumbnailError:
        raise
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ThumbnailError(f"the photo cannot be decoded ({exc})") from None


def _write(image: Image.Image, path: Path) -> None:
    """Write to a temporary file and rename it, so a concurrent reader never sees half a JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, "JPEG", quality=QUALITY, optimize=True)
        os.replace(scratch, path)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)
