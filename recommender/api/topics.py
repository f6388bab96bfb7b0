"""Topics of the served version: names and defining tags."""

from __future__ import annotations

from flask import Blueprint, jsonify

from recommender.state import ready_index
from recommender.auth import require

bp = Blueprint("topics", __name__, url_prefix="/v1/topics")


@bp.get("")
@require("client")
def list_topics():
    live = ready_index()
    return jsonify({"topics": live.topics, "version": live.version})
