"""Items: read one, and the items most similar to it."""

from __future__ import annotations

from flask import Blueprint, jsonify

from recommender.api.params import int_arg, item_id_arg
from recommender.app import state
from recommender.catalog import DELETED, INDEXED, Item
from recommender.errors import ApiError

bp = Blueprint("items", __name__, url_prefix="/v1/items")
TOPICS_PER_ITEM = 5


def _get_item(item_id: str) -> Item:
    item = state().catalog.get(item_id_arg(item_id))
    if item is None or item.status == DELETED:
        raise ApiError(404, "item_not_found", f"no item with id {item_id!r}")
    return item


def item_topics(item: Item) -> list[dict]:
    """The item's strongest topics, named, when its vector belongs to the served version."""
    live = state().live
    if item.vector is None or item.version != live.version or not live.topics:
        return []
    order = item.vector.argsort()[::-1][:TOPICS_PER_ITEM]
    return [
        {"id": int(i), "name": live.topics[i]["name"], "weight": round(float(item.vector[i]), 4)}
        for i in order if item.vector[i] > 0
    ]


@bp.get("/<item_id>")
def get_item(item_id: str):
    item = _get_item(item_id)
    return jsonify({**item.public(), "topics": item_topics(item), "version": item.version or None})


@bp.get("/<item_id>/similar")
def similar(item_id: str):
    s = state()
    k = int_arg("k", 10, 1, s.settings.max_k)
    item = _get_item(item_id)
    s.live.sync()
    if not s.live.ready:
        raise ApiError(503, "index_not_ready", "no index version is loaded yet; ingest a catalog first")
    assert s.live.index is not None
    if item.status != INDEXED:
        raise ApiError(409, "item_not_indexed", f"item {item_id!r} is {item.status}: {item.reason or 'not indexed yet'}")
    query = item.vector if item.version == s.live.version else s.live.index.vector(item.num)
    if query is None:
        raise ApiError(409, "item_not_indexed", f"item {item_id!r} is not in index version {s.live.version} yet")
    hits = s.live.index.search(query, k, exclude=frozenset({item.num}))
    found = s.catalog.get_many(s.live.index.ids[num] for num, _ in hits)
    results = [
        {"id": it.id, "score": round(score, 4), "title": it.title, "kind": it.kind, "category": it.category,
         "price": it.price, "url": it.url}
        for (_, score), it in zip(hits, found) if it is not None and it.status != DELETED
    ]
    return jsonify({"items": results, "version": s.live.version})
