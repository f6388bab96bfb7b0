"""Validating what clients write: items (every field's type and size, photo paths kept inside the image
root) and user events."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from recommender.errors import ApiError
from recommender.events import EVENT_WEIGHTS
from recommender.store.items import Item, parse_timestamp, valid_item_id

MAX_TEXT = {"title": 500, "kind": 64, "category": 128, "url": 2048}
MAX_ATTRS_BYTES = 8192
MAX_TAGS, MAX_TAG_LEN = 50, 100
FIELDS = {*MAX_TEXT, "price", "starts_at", "ends_at", "attrs", "tags", "image"}


def _invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_item", message)


def item_from_body(item_id: str, body: Any, image_root: Path | None, photo_saved: str | None = None) -> Item:
    """An Item from a client's JSON object, or a 422 naming the first bad field."""
    if not isinstance(body, dict):
        raise _invalid("the body must be a JSON object")
    unknown = set(body) - FIELDS
    if unknown:
        raise _invalid(f"unknown fields {sorted(unknown)}; allowed: {sorted(FIELDS)}")
    item = Item(id=item_id)
    for name, limit in MAX_TEXT.items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > limit:
            raise _invalid(f"{name} must be a string of at most {limit} characters")
        setattr(item, name, value)
    price = body.get("price")
    if price is not None:
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price < 0:
            raise _invalid("price must be a non-negative number")
        item.price = float(price)
    for name in ("starts_at", "ends_at"):
        value = body.get(name)
        if value is None:
            continue
        try:
            if not isinstance(value, str):
                raise ValueError
            parse_timestamp(value)
        except ValueError:
            raise _invalid(f"{name} must be an ISO-8601 timestamp such as 2026-12-01T09:00:00+01:00") from None
        setattr(item, name, value)
    if item.starts_at and item.ends_at and parse_timestamp(item.ends_at) <= parse_timestamp(item.starts_at):
        raise _invalid("ends_at must be after starts_at")
    attrs = body.get("attrs", {})
    if not isinstance(attrs, dict) or len(json.dumps(attrs)) > MAX_ATTRS_BYTES:
        raise _invalid(f"attrs must be a JSON object of at most {MAX_ATTRS_BYTES} bytes")
    item.attrs = attrs
    tags = body.get("tags", [])
    if (not isinstance(tags, list) or len(tags) > MAX_TAGS
            or not all(isinstance(t, str) and 0 < len(t.strip()) <= MAX_TAG_LEN for t in tags)):
        raise _invalid(f"tags must be a list of at most {MAX_TAGS} non-empty strings of at most {MAX_TAG_LEN} characters")
    item.given_tags = [t.strip() for t in tags]
    if photo_saved is not None:
        item.image = str(photo_saved)
    elif body.get("image") is not None:
        item.image = str(_image_path(body["image"], image_root))
    if not item.image and not item.given_tags:
        raise _invalid("an item needs an image (path or uploaded photo) or tags")
    return item


def _image_path(value: Any, image_root: Path | None) -> Path:
    """Resolve a client-given path and refuse anything outside the image root."""
    if not isinstance(value, str) or not value:
        raise _invalid("image must be a path string")
    if image_root is None:
        raise _invalid("image paths are disabled on this server (VISTAS_IMAGE_ROOT is not set); upload the photo")
    root = image_root.resolve()
    path = (root / value).resolve()
    if not path.is_relative_to(root):
        raise _invalid("image must be a path inside the image root")
    if not path.is_file():
        raise _invalid(f"image {value!r} does not exist under the image root")
    return path


def event_from_body(raw: object, now: float, where: str) -> dict:
    """A stored event ``{item, type, ts}`` from a client's JSON object, or a 422 saying what was wrong."""
    if not isinstance(raw, dict):
        raise ApiError(422, "invalid_event", f"{where}: an event is a JSON object")
    unknown = set(raw) - {"item_id", "type", "ts"}
    if unknown:
        raise ApiError(422, "invalid_event", f"{where}: unknown fields {sorted(unknown)}")
    item_id, kind, ts = raw.get("item_id"), raw.get("type"), raw.get("ts")
    if not isinstance(item_id, str) or not valid_item_id(item_id):
        raise ApiError(422, "invalid_event", f"{where}: item_id must be a valid item id")
    if kind not in EVENT_WEIGHTS:
        raise ApiError(422, "invalid_event", f"{where}: type must be one of {sorted(EVENT_WEIGHTS)}")
    if ts is None:
        when = now
    elif isinstance(ts, str):
        try:
            when = parse_timestamp(ts)
        except ValueError:
            raise ApiError(422, "invalid_event", f"{where}: ts must be ISO-8601 or epoch seconds") from None
    elif isinstance(ts, (int, float)) and not isinstance(ts, bool) and math.isfinite(ts):
        when = float(ts)
    else:
        raise ApiError(422, "invalid_event", f"{where}: ts must be ISO-8601 or epoch seconds")
    if when > now + 300:
        raise ApiError(422, "invalid_event", f"{where}: ts is in the future")
    return {"item": item_id, "type": kind, "ts": when}
