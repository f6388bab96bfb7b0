"""The catalog map: every item's 2-D position in one of three representations."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from recommender.auth import require
from recommender.catalog_map import LABELS, REPRESENTATIONS
from recommender.errors import ApiError
from recommender.state import ready_index, state

bp = Blueprint("map", __name__, url_prefix="/v1/map")


@bp.get("")
@require("client")
def get_map():
    """Parallel arrays (ids, titles, x, y, topics, ...) of the served version's map, plus items placed since."""
    s = state()
    live = ready_index()
    assert live.index is not None
    catalog_map = s.maps.get(live.version)
    if catalog_map is None:
        raise ApiError(409, "map_not_built", f"index version {live.version} was built without a map; "
                       "reindex to make one")
    representation = request.args.get("representation") or catalog_map.default_representation()
    if representation not in REPRESENTATIONS:
        raise ApiError(400, "bad_parameter", f"representation must be one of {', '.join(REPRESENTATIONS)}, "
                       f"got {representation!r}")
    if representation not in catalog_map.layouts:
        raise ApiError(404, "map_not_found", f"this catalog has no {LABELS[representation]} map "
                       f"(no photo features); try {catalog_map.default_representation()}")
    rows = s.store.versions.map_rows(live.version)
    later = [(item, rows[item.id]) for item in s.store.items.get_many(rows) if item is not None]
    return jsonify(catalog_map.points(representation, live.version, later, live.index.ids))
