"""Users: events in, recommendations and profiles out, and forgetting on request."""

from __future__ import annotations

import math

from flask import Blueprint, jsonify, request

from recommender.api.params import filters_arg, int_arg
from recommender.state import ready_index, state
from recommender.auth import require
from recommender.store.items import parse_timestamp, valid_item_id
from recommender.errors import ApiError
from recommender.events import EVENT_WEIGHTS, build_profile, profile_topics, recommend_for_user

bp = Blueprint("users", __name__, url_prefix="/v1/users")
MAX_BATCH = 500
RECENT_EVENTS = 20


def _user_id(user_id: str) -> str:
    if not valid_item_id(user_id):
        raise ApiError(400, "bad_user_id", "user ids are 1-128 characters of A-Z a-z 0-9 . _ : -")
    return user_id


def _event(raw: object, now: float, where: str) -> dict:
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


@bp.post("/<user_id>/events")
@require("client")
def add_events(user_id: str):
    """Record one event or a list of them; unknown items refuse the whole request."""
    s = state()
    _user_id(user_id)
    body = request.get_json(silent=True)
    if body is None:
        raise ApiError(400, "bad_json", "send a JSON event object or a list of them")
    raw_events = body if isinstance(body, list) else [body]
    if not raw_events or len(raw_events) > MAX_BATCH:
        raise ApiError(422, "invalid_event", f"send 1 to {MAX_BATCH} events")
    now = s.clock()
    events = [_event(raw, now, f"event {i}") for i, raw in enumerate(raw_events)]
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
    _user_id(user_id)
    k = int_arg("k", 10, 1, s.settings.max_k)
    live = ready_index()
    now = s.clock()
    filters = filters_arg(live, now)
    profile = build_profile(s.store.users.events(user_id), live, now, s.settings.half_life_days)
    items = recommend_for_user(s.store, live, profile, k, filters, s.settings.seen_limit)
    return jsonify({"items": items, "version": live.version})


@bp.get("/<user_id>/profile")
@require("client")
def profile(user_id: str):
    s = state()
    _user_id(user_id)
    live = ready_index()
    events = s.store.users.events(user_id)
    built = build_profile(events, live, s.clock(), s.settings.half_life_days)
    recent = [{"item_id": e["item"], "type": e["type"], "ts": e["ts"]} for e in events[:RECENT_EVENTS]]
    return jsonify({"user_id": user_id, "topics": profile_topics(built, live.topics),
                    "strength": round(built.strength, 4), "events": recent, "version": live.version})


@bp.delete("/<user_id>")
@require("client")
def forget(user_id: str):
    """Privacy request: drop the user's events and profile."""
    state().store.users.forget(_user_id(user_id))
    return "", 204
