"""Small JPEGs of item photos for the map page, made once and cached on disk.

A thumbnail is named after what it was made from (the photo's path, size and
modification time, and the thumbnail size), so a changed photo gets a new file
and a new ETag, and API processes sharing the data directory share the cache.
Photos go through the same safe decoder, with the same limits, as indexing.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from PIL import Image

from recommender.objects import fetched, stamp
from recommender.photos import ImageError, load_image
from recommender.settings import Settings

SIZE = 256  # longest side, pixels: sharp on a hover card at 2x, a few kB
QUALITY = 80


class ThumbnailError(Exception):
    """The item's photo is missing, too large or unreadable; the message says which."""


def thumbnail(settings: Settings, photo: str) -> tuple[Path, str]:
    """The cached thumbnail of ``photo`` (made now if needed) and its ETag."""
    try:
        size, changed = stamp(photo)
    except OSError as exc:
        raise ThumbnailError(f"the photo cannot be read ({exc.strerror or exc})") from None
    tag = hashlib.sha1(f"{photo}\0{size}\0{changed}\0{SIZE}".encode()).hexdigest()[:24]
    path = settings.data_dir / "thumbnails" / tag[:2] / f"{tag}.jpg"
    if not path.is_file():
        _write(_make(photo, settings.max_image_pixels, settings.max_image_bytes), path)
    return path, tag


def _make(photo: str, max_pixels: int, max_bytes: int) -> Image.Image:
    missing: list[int] = []
    try:
        (_, source), = fetched([(0, photo)], missing)  # an upload's size was checked when it was stored
    except ValueError:  # nothing fetched: the object is gone
        raise ThumbnailError("the photo cannot be read (the object store has no such upload)") from None
    try:
        image = load_image(source, max_pixels, max_bytes, min_side=SIZE)
    except ImageError as exc:
        raise ThumbnailError(str(exc)) from None
    image.thumbnail((SIZE, SIZE), Image.Resampling.LANCZOS)
    return image


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
