"""The Flask app factory: one app per API process, holding its live index."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import faiss
from flask import Flask

from recommender.api import docs, health, items, search, topics, users
from recommender.api import map as map_api
from recommender.auth import auth_enabled
from recommender.errors import register_error_handlers
from recommender.json_provider import OrjsonProvider
from recommender.metrics import init_metrics
from recommender.settings import Settings
from recommender.state import init_app
from recommender.web import pages

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, clock: Callable[[], float] = time.time) -> Flask:
    """Build the API. Settings default to the environment (see recommender.settings)."""
    settings = settings or Settings.from_env()
    # One request at a time per process: FAISS's OpenMP threads only add contention (3x slower here).
    faiss.omp_set_num_threads(1)
    app = Flask(__name__, static_folder="web/static", static_url_path="/web")  # the demo pages' files
    app.json = OrjsonProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_image_bytes + 1024 * 1024
    live = init_app(app, settings, clock).live
    register_error_handlers(app)
    if not auth_enabled(settings):
        log.warning("NO API KEYS CONFIGURED: development mode, every endpoint (writes included) is open. "
                    "Set VISTAS_ADMIN_KEYS and VISTAS_CLIENT_KEYS in production.")
    for blueprint in (health.bp, items.bp, topics.bp, users.bp, search.bp, docs.bp, map_api.bp, pages.bp):
        app.register_blueprint(blueprint)
    init_metrics(app)
    try:
        live.sync()
    except Exception as exc:  # noqa: BLE001 - the API starts anyway; /readyz says why it is not ready
        log.warning("index not loaded at start (%s); will retry on requests", exc)
    return app

