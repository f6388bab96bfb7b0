"""Topics of the served version: names and defining tags."""

from __future__ import annotations

from flask import Blueprint, jsonify

from recommender.auth import require
from recommender.state import ready_index

bp = Blueprint("topics", __name__, url_prefix="/v1/topics")


@bp.get("")
@require("client")
def list_topics():
    live = ready_index()
    return jsonify({"topics": live.topics, "version": live.version})
