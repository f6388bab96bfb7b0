"""The Flask app factory: one app per API process, holding its live index."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask, current_app

from recommender.catalog import Catalog, connect
from recommender.errors import register_error_handlers
from recommender.index import LiveIndex
from recommender.settings import Settings
from recommender.versions import VersionStore

log = logging.getLogger(__name__)


@dataclass
class State:
    """What request handlers share inside one process."""

    settings: Settings
    catalog: Catalog
    live: LiveIndex


def create_app(settings: Settings | None = None) -> Flask:
    """Build the API. Settings default to the environment (see recommender.settings)."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.json.sort_keys = False
    catalog = Catalog(connect(settings.redis_url_or_default), settings.key_prefix)
    live = LiveIndex(catalog, VersionStore(settings.data_dir), settings.sync_interval)
    app.extensions["vistas"] = State(settings, catalog, live)
    register_error_handlers(app)

    from recommender.api import health, items, topics

    app.register_blueprint(health.bp)
    app.register_blueprint(items.bp)
    app.register_blueprint(topics.bp)
    try:
        live.sync(force=True)
    except Exception as exc:  # noqa: BLE001 - the API starts anyway; /readyz says why it is not ready
        log.warning("index not loaded at start (%s); will retry on requests", exc)
    return app


def state() -> State:
    return current_app.extensions["vistas"]
