"""API keys: admin keys for writes, client keys for reads and events.

Keys come from settings (VISTAS_ADMIN_KEYS, VISTAS_CLIENT_KEYS) and are sent
as ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``. With no key
configured at all, the API runs open (local development), and says so loudly
at start.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import wraps
from typing import Literal, TypeVar

from flask import request

from recommender.errors import ApiError
from recommender.settings import Settings
from recommender.state import state

F = TypeVar("F", bound=Callable)
Role = Literal["admin", "client"]


def auth_enabled(settings: Settings) -> bool:
    return bool(settings.admin_keys or settings.client_keys)


def _presented_key() -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.headers.get("X-API-Key")


def _matches(key: str, keys: tuple[str, ...]) -> bool:
    """Constant-time comparison against every key (no early exit on the first match)."""
    found = False
    for candidate in keys:
        found |= hmac.compare_digest(key.encode(), candidate.encode())
    return found


def check(settings: Settings, role: Role) -> None:
    """Raise 401/403 unless the request carries a key good for ``role``."""
    if not auth_enabled(settings):
        return
    key = _presented_key()
    if not key:
        raise ApiError(401, "unauthorized", "send an API key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
    if _matches(key, settings.admin_keys):
        return
    if _matches(key, settings.client_keys):
        if role == "client":
            return
        raise ApiError(403, "forbidden", "this endpoint needs an admin key")
    raise ApiError(401, "unauthorized", "the API key is not valid")


def require(role: Role) -> Callable[[F], F]:
    """Decorator for a view: the request must carry a key good for ``role``."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapped(*args, **kwargs):
            check(state().settings, role)
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorate
