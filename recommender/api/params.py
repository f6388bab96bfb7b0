"""Query-parameter parsing with 400s that say what was wrong."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from flask import request

from recommender.errors import ApiError
from recommender.live_index import LiveIndex
from recommender.ranking import Filters
from recommender.store.items import parse_timestamp, valid_item_id

MAX_EXCLUDE = 500
N = TypeVar("N", int, float)


def int_arg(name: str, default: int, low: int, high: int) -> int:
    return _number_arg(name, default, low, high, int, "an integer")


def float_arg(name: str, default: float, low: float, high: float) -> float:
    return _number_arg(name, default, low, high, float, "a number")


def _number_arg(name: str, default: N, low: N, high: N, kind: Callable[[str], N], noun: str) -> N:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name} must be {noun} from {low} to {high}, got {raw!r}") from None
    if not low <= value <= high:  # also refuses NaN
        raise ApiError(400, "bad_parameter", f"{name} must be from {low} to {high}, got {raw}")
    return value


def item_id_arg(item_id: str) -> str:
    return _id_arg(item_id, "item")


def user_id_arg(user_id: str) -> str:
    return _id_arg(user_id, "user")


def _id_arg(value: str, kind: str) -> str:
    if not valid_item_id(value):
        raise ApiError(400, f"bad_{kind}_id", f"{kind} ids are 1-128 characters of A-Z a-z 0-9 . _ : -")
    return value


def active_at_arg(now: float) -> float | None:
    """``active_at``: an ISO-8601 instant, ``now`` (the default) or ``any`` (no window filter)."""
    raw = request.args.get("active_at", "now").strip()
    if raw == "any":
        return None
    if raw == "now" or raw == "":
        return now
    try:
        return parse_timestamp(raw)
    except ValueError:
        raise ApiError(
            400, "bad_parameter", f"active_at must be ISO-8601 (2026-12-01T09:00:00+01:00), 'now' or 'any', got {raw!r}"
        ) from None


def filters_arg(live: LiveIndex, now: float | None = None) -> Filters:
    """kind, category, active_at and exclude (comma-separated or repeated ids) from the query string."""
    exclude_ids = [i for raw in request.args.getlist("exclude") for i in raw.split(",") if i]
    if len(exclude_ids) > MAX_EXCLUDE:
        raise ApiError(400, "bad_parameter", f"exclude takes at most {MAX_EXCLUDE} ids")
    for item_id in exclude_ids:
        item_id_arg(item_id)
    nums = live.index.nums if live.index is not None else {}
    return Filters(
        kind=request.args.get("kind") or None,
        category=request.args.get("category") or None,
        active_at=active_at_arg(time.time() if now is None else now),
        exclude=frozenset(nums[i] for i in exclude_ids if i in nums),
    )
