"""Topics of the served version: names and defining tags; an admin can rename one."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from recommender.auth import require
from recommender.errors import ApiError
from recommender.state import ready_index, state

bp = Blueprint("topics", __name__, url_prefix="/v1/topics")
NAME_MAX = 80


@bp.get("")
@require("client")
def list_topics():
    live = ready_index()
    return jsonify({"topics": live.topics, "version": live.version})


@bp.put("/<topic_id>")
@require("admin")
def rename_topic(topic_id: str):
    """Give a topic a name of one's own: shown wherever the topic is, and kept by reindexes that keep the topic."""
    if not topic_id.isascii() or not topic_id.isdigit():
        raise ApiError(400, "bad_parameter", f"topic id must be a non-negative integer, not {topic_id!r}")
    return _rename(int(topic_id))


def _rename(topic_id: int):
    """The name goes to Redis, not the version: versions are immutable, and the name must outlive them."""
    live = ready_index()
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_json", 'send a JSON object {"name": "..."} (Content-Type: application/json)')
    name = body.get("name")
    if set(body) != {"name"} or not isinstance(name, str) or not name.split() or len(name) > NAME_MAX:
        raise ApiError(422, "invalid_topic_name", f'send exactly {{"name": "..."}}, 1-{NAME_MAX} characters')
    name = " ".join(name.split())
    topics = live.topics
    topic = next((t for t in topics if t["id"] == topic_id), None)
    if topic is None:
        raise ApiError(404, "topic_not_found", f"index version {live.version} has no topic {topic_id}")
    clash = next((t for t in topics if t["id"] != topic_id and t["name"].lower() == name.lower()), None)
    if clash is not None:
        raise ApiError(409, "topic_name_taken", f"topic {clash['id']} is already called {clash['name']!r}")
    state().store.versions.set_topic_name(topic_id, name)
    live.names.forget()
    return jsonify({**next(t for t in live.topics if t["id"] == topic_id), "version": live.version})
