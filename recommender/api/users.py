"""Users: events in, recommendations and profiles out, and forgetting on request."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from recommender.api.params import filters_arg, int_arg, user_id_arg
from recommender.auth import require
from recommender.errors import ApiError
from recommender.events import EVENT_WEIGHTS, build_profile, profile_topics
from recommender.state import ready_index, recommender, state
from recommender.validation import event_from_body

bp = Blueprint("users", __name__, url_prefix="/v1/users")
MAX_BATCH = 500
RECENT_EVENTS = 20


@bp.post("/<user_id>/events")
@require("client")
def add_events(user_id: str):
    """Record one event or a list of them (``dismiss``: "not interested"); unknown items refuse the whole request."""
    s = state()
    user_id_arg(user_id)
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "bad_json", "send a JSON event object or a list of them")
    raw_events = body if isinstance(body, list) else [body]
    if not raw_events or len(raw_events) > MAX_BATCH:
        raise ApiError(422, "invalid_event", f"send 1 to {MAX_BATCH} events")
    now = s.clock()
    events = [event_from_body(raw, now, f"event {i}") for i, raw in enumerate(raw_events)]
    missing = [e["item"] for e, ok in zip(events, s.store.items.existing([e["item"] for e in events])) if not ok]
    if missing:
        status = 404 if len(events) == 1 else 422
        raise ApiError(status, "item_not_found", f"unknown items, nothing stored: {sorted(set(missing))[:10]}")
    s.store.users.add_events(user_id, events, [EVENT_WEIGHTS[e["type"]] for e in events], s.settings.user_history)
    return jsonify({"accepted": len(events)}), 202


@bp.get("/<user_id>/recommendations")
@require("client")
def recommendations(user_id: str):
    s = state()
    user_id_arg(user_id)
    k = int_arg("k", 10, 1, s.settings.max_k)
    rec = recommender()
    items = rec.recommend(user_id, k, filters_arg(rec.live, s.clock()))
    return jsonify({"items": items, "version": rec.live.version, "model": s.users.version or None})


@bp.get("/<user_id>/profile")
@require("client")
def profile(user_id: str):
    s = state()
    user_id_arg(user_id)
    live = ready_index()
    events = s.store.users.events(user_id)
    built = build_profile(events, live.index, s.clock(), s.settings.half_life_days)
    recent = [{"item_id": e["item"], "type": e["type"], "ts": e["ts"]} for e in events[:RECENT_EVENTS]]
    return jsonify({"user_id": user_id, "topics": profile_topics(built, live.topics),
                    "strength": round(built.strength, 4), "events": recent, "version": live.version})


@bp.delete("/<user_id>")
@require("client")
def forget(user_id: str):
    """Privacy request: drop the user's events and profile now; the next ``vistas train-users`` learns
    nothing from them (a trained model keeps no per-user data)."""
    state().store.users.forget(user_id_arg(user_id))
    return "", 204
