"""JSON errors: every failure a client sees is ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging

import redis
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from recommender.photos import ImageError, PhotoTooLarge

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status and a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def photo_error(exc: ImageError) -> ApiError:
    """A refused photo as the client sees it: 413 over a limit, else 422, with the decoder's reason."""
    if isinstance(exc, PhotoTooLarge):
        return ApiError(413, "photo_too_large", str(exc))
    return ApiError(422, "invalid_photo", str(exc))


def error_response(status: int, code: str, message: str):
    return jsonify({"error": {"code": code, "message": message}}), status


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(redis.RedisError)
    @app.errorhandler(redis.RedisClusterException)  # e.g. no node serves a slot: not a RedisError in redis-py
    def _redis_down(exc: Exception):
        log.error("redis error: %s", exc)
        return error_response(503, "store_unavailable", "the item store (Redis) is unreachable; retry shortly")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal", "internal error; the server log has the details")
