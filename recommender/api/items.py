"""Items: write, delete, list a page, read one, its thumbnail, the items most similar to it, and the items viewed
with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from flask import Blueprint, jsonify, request, send_file

from recommender import photos
from recommender.api.params import filters_arg, float_arg, int_arg, item_id_arg
from recommender.auth import require
from recommender.errors import ApiError, photo_error
from recommender.objects import UPLOADS, ObjectStore
from recommender.state import recommender, state
from recommender.store.items import Item, Status
from recommender.thumbnails import ThumbnailError, thumbnail
from recommender.validation import item_from_body

bp = Blueprint("items", __name__, url_prefix="/v1/items")
TOPICS_PER_ITEM = 5
MAX_PAGE = 100
THUMBNAIL_MAX_AGE = 24 * 3600  # seconds; a changed photo gets a new ETag, so revalidation catches it


def get_item_or_404(item_id: str) -> Item:
    """Any stored item that is not deleted (queued and failed ones too), else a 404."""
    item = state().store.items.get(item_id_arg(item_id))
    if item is None or item.status == Status.DELETED:
        raise ApiError(404, "item_not_found", f"no item with id {item_id!r}")
    return item


def item_topics(item: Item) -> list[dict]:
    """The item's strongest topics, named, when its vector belongs to the served version."""
    live = state().live
    if item.vector is None or item.version != live.version or not live.topics:
        return []
    order = item.vector.argsort()[::-1][:TOPICS_PER_ITEM]
    return [
        {"id": live.topics[i]["id"], "name": live.topics[i]["name"], "weight": round(float(item.vector[i]), 4)}
        for i in order if item.vector[i] > 0
    ]


@bp.get("")
@require("client")
def list_items():
    """The served catalog a page at a time, in index order: what a storefront grid shows before any ranking."""
    limit = int_arg("limit", 24, 1, MAX_PAGE)
    offset = int_arg("offset", 0, 0, 10**9)
    rec = recommender()
    nums = np.flatnonzero(rec.index.present)
    ids = [rec.index.ids[int(n)] for n in nums[offset:offset + limit]]
    items = [item for item in state().store.items.get_many(ids) if item is not None and item.status != Status.DELETED]
    return jsonify({"items": [{**item.public(), "topics": item_topics(item), "photo": bool(item.image)}
                              for item in items],
                    "total": int(nums.size), "offset": offset, "version": rec.live.version})


@bp.get("/<item_id>")
@require("client")
def get_item(item_id: str):
    item = get_item_or_404(item_id)
    return jsonify({**item.public(), "topics": item_topics(item), "version": item.version or None})


@bp.get("/<item_id>/thumbnail")
@require("client")
def get_thumbnail(item_id: str):
    """A small JPEG of the item's photo, for the map page's hover cards."""
    item = get_item_or_404(item_id)
    if not item.image:
        raise ApiError(404, "no_photo", f"item {item_id!r} has no photo")
    try:
        path, etag = thumbnail(state().settings, item.image)
    except ThumbnailError as exc:
        raise ApiError(404, "photo_unavailable", f"item {item_id!r}: {exc}") from None
    return send_file(path, mimetype="image/jpeg", etag=etag, max_age=THUMBNAIL_MAX_AGE, conditional=True)


@bp.get("/<item_id>/similar")
@require("client")
def similar(item_id: str):
    s = state()
    k = int_arg("k", 10, 1, s.settings.max_k)
    diversity = float_arg("diversity", 0.0, 0.0, 1.0)
    rec = recommender()
    filters = filters_arg(rec.live, s.clock())
    results = rec.similar_items(item_id_arg(item_id), k, filters, diversity)
    if results is None:
        _not_served(item_id, rec.live.version)
    return jsonify({"items": results, "version": rec.live.version})


@bp.get("/<item_id>/also")
@require("client")
def also(item_id: str):
    """"Customers also viewed": co-occurrence from the user model, filled from content for new items."""
    s = state()
    k = int_arg("k", 10, 1, s.settings.max_k)
    rec = recommender()
    results = rec.also_viewed(item_id_arg(item_id), k, filters_arg(rec.live, s.clock()))
    if results is None:
        _not_served(item_id, rec.live.version)
    return jsonify({"items": results, "version": rec.live.version})


def _not_served(item_id: str, version: int) -> None:
    """Say why an item is not served: unknown or deleted (404), queued or failed (409)."""
    item = get_item_or_404(item_id)
    reason = item.reason or f"not in index version {version} yet"
    raise ApiError(409, "item_not_indexed", f"item {item_id!r} is {item.status}: {reason}")


@bp.put("/<item_id>")
@require("admin")
def put_item(item_id: str):
    """Create or replace an item; a worker tags and indexes it (202: accepted, not yet searchable)."""
    s = state()
    item_id_arg(item_id)
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("photo")
        if upload is None:
            raise ApiError(422, "invalid_item", "multipart writes need a 'photo' file part")
        try:
            body = json.loads(request.form.get("metadata") or "{}")
        except json.JSONDecodeError:
            raise ApiError(400, "bad_json", "the 'metadata' part must be a JSON object") from None
        item = item_from_body(item_id, body, None, photo_saved=_save_photo(item_id, upload.read()))
    else:
        body = request.get_json(silent=True)
        if body is None:
            raise ApiError(400, "bad_json", "send a JSON object (Content-Type: application/json) or multipart")
        item = item_from_body(item_id, body, s.settings.image_root)
        if item.image:
            _check_photo(Path(item.image))
    s.store.submit(item)
    response = jsonify({"id": item.id, "status": item.status})
    response.headers["Location"] = f"/v1/items/{item.id}"
    return response, 202


def _check_photo(source: Path | bytes) -> photos.Probe:
    """Decode the photo as a worker will (the same decoder and limits): a photo the API accepts indexes,
    and one it refuses gets a 413 or 422 naming the problem instead of a failed item later."""
    settings = state().settings
    try:
        return photos.check(source, settings.max_image_pixels, settings.max_image_bytes)
    except photos.ImageError as exc:
        raise photo_error(exc) from None


def _save_photo(item_id: str, data: bytes) -> str:
    """Check an uploaded photo and keep it in the object store (``uploads/``), where every worker reads it;
    what names it there (a path on a local store, a URL on S3) becomes the item's image."""
    found = _check_photo(data)
    objects = ObjectStore.for_settings(state().settings)
    key = f"{UPLOADS}/{item_id}{found.suffix}"
    objects.put(key, data)
    return objects.url_of(key)


@bp.delete("/<item_id>")
@require("admin")
def delete_item(item_id: str):
    """Remove an item from every answer at once."""
    s = state()
    num = s.store.delete_item(item_id_arg(item_id))
    if num is None:
        raise ApiError(404, "item_not_found", f"no item with id {item_id!r}")
    s.live.remove(num)
    return "", 204
