"""Liveness and readiness, for load balancers and orchestrators."""

from __future__ import annotations

from flask import Blueprint, jsonify

from recommender.state import state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process is up (says nothing about Redis or the index)."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Ready to answer queries: Redis answers and an index version is loaded."""
    s = state()
    checks = {"redis": False, "index": False}
    try:
        checks["redis"] = s.store.ping()
        s.live.sync()
    except Exception:  # noqa: BLE001 - any failure here just means "not ready"
        checks["redis"] = False
    checks["index"] = s.live.ready
    body = {"ready": all(checks.values()), "checks": checks, "version": s.live.version,
            "items": len(s.live.index) if s.live.index is not None else 0}
    return jsonify(body), 200 if body["ready"] else 503
