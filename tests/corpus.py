"""A corpus of bad and odd photos, made here with Pillow and byte edits (nothing shipped from elsewhere).

``LIMITS`` is small so that real bombs stay a few kB and quick to make; the
lying headers claim sizes over Pillow's own bomb threshold, so that path is
covered too. Every door's test feeds the same corpus.
"""

from __future__ import annotations

import io
import struct
import zlib
from functools import cache

import numpy as np
from PIL import Image

from tests.conftest import DEMO

#: Limits the door tests run under: 4 Mpx and 2 MB.
MAX_PIXELS, MAX_BYTES = 4_000_000, 2_000_000
PHOTO = DEMO / "images" / "scratch" / "nature-beach-malibu.jpg"
BOMB_SIDE = 3000  # 9 Mpx: over MAX_PIXELS, a few kB compressed


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def photo() -> Image.Image:
    return Image.open(PHOTO).convert("RGB")


def _jpeg_with_size(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose SOF marker claims another size."""
    at = next(i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC2))
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


def _png_with_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR claims another size, with a valid checksum (so only the size lies)."""
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of header
    ihdr[4:12] = struct.pack(">II", width, height)
    return data[:12] + bytes(ihdr) + struct.pack(">I", zlib.crc32(bytes(ihdr))) + data[33:]


def _gif_with_size(data: bytes, width: int, height: int) -> bytes:
    """A GIF whose logical screen claims another size."""
    return data[:6] + struct.pack("<HH", width, height) + data[10:]


def _webp_with_size(data: bytes, width: int, height: int) -> bytes:
    """A lossless WebP whose VP8L header claims another size (14 bits each, minus one)."""
    at = data.index(b"VP8L") + 8 + 1  # chunk header, then the 0x2f signature
    bits = int.from_bytes(data[at : at + 4], "little")
    bits = (bits & ~((1 << 28) - 1)) | (width - 1) | ((height - 1) << 14)
    return data[:at] + bits.to_bytes(4, "little") + data[at + 4 :]


def _tiff_with_size(data: bytes, width: int, height: int) -> bytes:
    """A little-endian TIFF whose ImageWidth and ImageLength tags claim another size."""
    out = bytearray(data)
    ifd = struct.unpack_from("<I", out, 4)[0]
    for n in range(struct.unpack_from("<H", out, ifd)[0]):
        entry = ifd + 2 + 12 * n
        tag, kind = struct.unpack_from("<HH", out, entry)
        if tag in (256, 257):
            value = width if tag == 256 else height
            struct.pack_into("<HHII", out, entry, tag, 4, 1, value)  # as a LONG, whatever it was
            assert kind in (3, 4)
    return bytes(out)


def _animated_gif(frames: int, side: int) -> bytes:
    shades = [Image.new("P", (side, side), i % 256) for i in range(frames)]
    return encode(shades[0], "GIF", save_all=True, append_images=shades[1:], duration=40, loop=0)


@cache
def bad_photos() -> dict[str, bytes]:
    """Files no door may accept, each with the start of the reason it must give."""
    small = photo().resize((120, 90))
    blank = Image.new("L", (BOMB_SIDE, BOMB_SIDE))
    jpeg, png = encode(small, "JPEG"), encode(small, "PNG")
    return {
        "bomb.png": encode(blank, "PNG"),
        "bomb.gif": encode(blank.convert("P"), "GIF"),
        "bomb.jpg": encode(blank, "JPEG"),
        "bomb.tif": encode(blank, "TIFF", compression="tiff_deflate"),
        "bomb.webp": encode(blank, "WEBP", lossless=True),
        "lying-65535.gif": _gif_with_size(encode(small.convert("P"), "GIF"), 65535, 65535),
        "lying-65000.jpg": _jpeg_with_size(jpeg, 65000, 65000),
        "lying-60000.png": _png_with_size(png, 60000, 60000),
        "lying-16384.webp": _webp_with_size(encode(small, "WEBP", lossless=True), 16384, 16384),
        "lying-60000.tif": _tiff_with_size(encode(small, "TIFF"), 60000, 60000),
        "lying-small.png": _png_with_size(png, 1500, 1500),  # under the limit, but the data is 120x90
        "truncated.jpg": PHOTO.read_bytes()[:6000],
        "truncated.png": encode(photo(), "PNG")[:20_000],
        "empty.jpg": b"",
        "text.jpg": b"these are the notes for the summer sale, not a photo\n" * 20,
        "page.jpg": b"<!doctype html><html><body><img src='beach.jpg'></body></html>\n",
        "vector.jpg": b'<svg xmlns="http://www.w3.org/2000/svg" width="9000" height="9000"><rect/></svg>',
        "eps.jpg": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n",
        "too-many-bytes.jpg": jpeg + b"\x00" * MAX_BYTES,
    }


#: The reason each bad photo must give (a substring of the message), and whether it is "too large".
REASONS = {
    "bomb": ("over the limit", True), "lying-6": ("decompression bomb", True), "lying-1": ("decompression bomb", True),
    "lying-small": ("damaged or truncated", False), "truncated": ("damaged or truncated", False),
    "empty": ("empty file", False), "text": ("not an image", False), "page": ("not an image", False),
    "vector": ("not an image", False), "eps": ("not an image", False), "too-many-bytes": ("bytes, over", True),
}


def reason(name: str) -> tuple[str, bool]:
    """(expected substring of the reason, whether it is a too-large refusal) for a bad photo."""
    return next(v for prefix, v in REASONS.items() if name.startswith(prefix))


@cache
def odd_photos() -> dict[str, bytes]:
    """Odd but valid photos: every door accepts them and they index."""
    base = photo()
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    sixteen = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 0
    return {
        "cmyk.jpg": encode(base.convert("CMYK"), "JPEG"),
        "sixteen-bit.png": encode(sixteen, "PNG"),
        "palette-transparent.png": encode(palette, "PNG", transparency=0),
        "exif-rotated.jpg": encode(base, "JPEG", exif=exif.tobytes()),
        "photo.webp": encode(base, "WEBP", quality=80),
        "animated.gif": _animated_gif(frames=40, side=1000),  # 40 Mpx of frames: only the first is decoded
        "grey.tif": encode(base.convert("L"), "TIFF"),
        "progressive.jpg": encode(base, "JPEG", progressive=True),
    }
