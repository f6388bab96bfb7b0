"""The per-process state every request handler shares, in a leaf module (flaskr's ``db.py``).

Blueprints, auth, metrics and the web page import :func:`state`,
:func:`ready_index` and :func:`recommender` from here; the app factory calls
:func:`init_app`. Nothing the factory imports imports it back (only the
gunicorn server does, to build each worker's app), so there is no circle.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, current_app

from recommender.catalog_map import MapCache
from recommender.errors import ApiError
from recommender.live_index import LiveIndex
from recommender.recommender import Recommender
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.replicas import Reporter
from recommender.users.live import FOLDER, LiveUsers
from recommender.versions import VersionStore

EXTENSION = "vistas"


@dataclass
class State:
    """What request handlers share inside one process."""

    settings: Settings
    store: Store
    live: LiveIndex
    maps: MapCache
    #: The trained user model (``vistas train-users``), swapped in like index versions.
    users: LiveUsers
    #: Wall clock for sale windows and event decay; tests inject their own.
    clock: Callable[[], float] = field(default=time.time)


def init_app(app: Flask, settings: Settings, clock: Callable[[], float] = time.time) -> State:
    """Give ``app`` its process's State (the store, the live index and user model, the map cache); :func:`state`
    returns it inside that app's requests."""
    files = VersionStore.for_settings(settings)
    store = Store.from_settings(settings)
    users = LiveUsers(store, VersionStore.for_settings(settings, FOLDER))
    live = LiveIndex(store, files)
    Reporter(store.replicas, f"{socket.gethostname()}:{os.getpid()}", live.position)  # for `vistas status`
    app.extensions[EXTENSION] = State(settings, store, live, MapCache(files), users, clock)
    return app.extensions[EXTENSION]


def state() -> State:
    """The current app's State."""
    return app_state(current_app)


def app_state(app: Flask) -> State:
    """``app``'s State, outside a request too (the metrics collector runs at scrape time)."""
    return app.extensions[EXTENSION]


def recommender() -> Recommender:
    """The verbs over this process's index, caught up with Redis (503 when none is loaded yet)."""
    s = state()
    return Recommender(s.store, ready_index(), s.settings, s.clock, s.users)


def ready_index() -> LiveIndex:
    """The live index, caught up with Redis; 503 when no version is loaded yet."""
    live = state().live
    live.sync()
    if not live.ready:
        raise ApiError(503, "index_not_ready", "no index version is loaded yet; ingest a catalog first")
    return live
