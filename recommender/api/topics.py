"""Topics of the served version: names and defining tags."""

from __future__ import annotations

from flask import Blueprint, jsonify

from recommender.app import state
from recommender.errors import ApiError

bp = Blueprint("topics", __name__, url_prefix="/v1/topics")


@bp.get("")
def list_topics():
    live = state().live
    live.sync()
    if not live.ready:
        raise ApiError(503, "index_not_ready", "no index version is loaded yet; ingest a catalog first")
    return jsonify({"topics": live.topics, "version": live.version})
