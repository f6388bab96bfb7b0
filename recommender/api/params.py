"""Query-parameter parsing with 400s that say what was wrong."""

from __future__ import annotations

from flask import request

from recommender.catalog import valid_item_id
from recommender.errors import ApiError


def int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name} must be an integer from {low} to {high}, got {raw!r}") from None
    if not low <= value <= high:
        raise ApiError(400, "bad_parameter", f"{name} must be from {low} to {high}, got {value}")
    return value


def item_id_arg(item_id: str) -> str:
    if not valid_item_id(item_id):
        raise ApiError(400, "bad_item_id", "item ids are 1-128 characters of A-Z a-z 0-9 . _ : -")
    return item_id
