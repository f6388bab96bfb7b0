"""Training the user model (``vistas train-users``) and choosing its weights (``vistas eval --users``).

Both read every user's events from the store (SCAN, a batch of users per round trip) into flat arrays:
users become dense indexes in the order they are met, items their catalog numbers (the model's item
indexes are the numbers the live index serves, so an API process needs no mapping table). No user id
reaches the model: a user forgotten by ``DELETE /v1/users/{uid}`` is gone from the next training's inputs.

``train_users`` fits :class:`recommender.users.hybrid.HybridModel` with what ``eval --users`` recorded
(or the defaults), writes it as a new user-model version under ``user-models/`` in the object store, flips the
pointer in Redis and keeps the newest ``keep_versions``; API processes swap it in between requests.
"""

from __future__ import annotations

import logging
import time
from array import array
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from recommender.live_index import LiveIndex
from recommender.settings import Settings
from recommender.store import Store
from recommender.users.collaborative import EVENT_WEIGHTS, EventLog
from recommender.users.config import HybridConfig
from recommender.users.hybrid import HybridModel
from recommender.users.live import FOLDER, MODEL_FILE
from recommender.users.tuning import choose_weights, tune
from recommender.versions import VersionStore

log = logging.getLogger(__name__)
TYPES = tuple(EVENT_WEIGHTS)


@dataclass
class CatalogEvents:
    """Every user's events as the model reads them, and the items as the live index serves them."""

    events: EventLog
    n_users: int
    vectors: np.ndarray  # (items, dim) by catalog number; zeros where no item is served
    windows: np.ndarray  # (items, 2): sale window start, end; (inf, -inf) where no item is served
    index_version: int
    activity_from: str  # the activity stream's tip before reading: what the model has seen


def served_items(store: Store, settings: Settings) -> LiveIndex:
    """The current index version, caught up with the changes stream (as an API process serves it)."""
    live = LiveIndex(store, VersionStore.for_settings(settings))
    live.sync()
    if not live.ready:
        raise RuntimeError("no index version is current: ingest a catalog first")
    return live


def read_user_events(store: Store, nums: Mapping[str, int]) -> tuple[EventLog, int]:
    """Every user's events on the items in ``nums`` (item id -> number), users as dense indexes in the order
    of their ids, and how many users there are. Held as flat typed arrays while reading (about 25 bytes an
    event) and one batch of users' JSON at a time; the ids only to number the users the same way whatever
    order SCAN meets them in (Redis seeds its hash tables at random), so a training is reproducible."""
    codes = {t: i for i, t in enumerate(TYPES)}
    users, items, kinds, ts = array("q"), array("q"), array("b"), array("d")
    user_ids: list[str] = []
    for user_id, events in store.users.all_events():
        kept = [e for e in events if e["item"] in nums]
        if not kept:
            continue
        users.extend([len(user_ids)] * len(kept))
        items.extend(nums[e["item"]] for e in kept)
        kinds.extend(codes[e["type"]] for e in kept)
        ts.extend(float(e["ts"]) for e in kept)
        user_ids.append(user_id)
    rank = np.empty(len(user_ids), dtype=np.int64)
    rank[np.argsort(np.array(user_ids), kind="stable")] = np.arange(len(user_ids))
    kind_names = np.array(TYPES)[np.frombuffer(kinds, dtype=np.int8)] if len(kinds) else np.array([], dtype="<U12")
    log_ = EventLog(rank[np.frombuffer(users, dtype=np.int64)], np.frombuffer(items, dtype=np.int64), kind_names,
                    np.frombuffer(ts, dtype=np.float64))
    return log_, len(user_ids)


def read_events(store: Store, live: LiveIndex) -> CatalogEvents:
    """Every user's events (those on served items), with the items' vectors and sale windows."""
    activity_from = store.users.activity_tip()
    index = live.index
    assert index is not None
    events, n_users = read_user_events(store, index.nums)
    present = np.flatnonzero(index.present)
    n_items = int(present[-1]) + 1 if len(present) else 0
    windows = np.tile([np.inf, -np.inf], (n_items, 1))
    eligibility = live.eligibility
    windows[present, 0] = eligibility.starts[present]
    windows[present, 1] = eligibility.ends[present]
    return CatalogEvents(events, n_users, index.vectors[:n_items].copy(), windows, live.version, activity_from)


def recorded(store: Store) -> tuple[HybridConfig, dict | None, bool]:
    """The config and weights ``eval --users`` recorded (defaults and None when it has not run)."""
    tuning = store.users.tuning()
    if not tuning:
        return HybridConfig(), None, False
    return HybridConfig(**tuning["config"]), tuning["weights"], bool(tuning["chosen"])


@dataclass
class TrainReport:
    version: int
    users: int
    events: int
    items: int
    weights_chosen: bool
    seconds: float
    phases: dict[str, float] = field(default_factory=dict)
    model_bytes: int = 0


def train_users(settings: Settings, store: Store, clock: Callable[[], float] = time.time) -> TrainReport:
    """Fit the user model on every user's events, publish it as a new version, prune old ones."""
    started = time.monotonic()
    phases: dict[str, float] = {}
    live = served_items(store, settings)
    data = read_events(store, live)
    if not len(data.events):
        raise RuntimeError("no user events on served items yet: nothing to train on")
    phases["read"] = time.monotonic() - started
    config, weights, chosen = recorded(store)
    model = HybridModel(config, weights_chosen=chosen)
    if weights is not None:
        model.weights = weights
    with threadpool_limits(1, "blas"):  # implicit's ALS runs its own threads over a single-threaded BLAS
        model.fit(data.events, data.vectors, data.windows, now=clock(), n_users=data.n_users)
    phases["fit"] = model.fit_seconds
    files = VersionStore.for_settings(settings, FOLDER)
    version = max([*files.versions(), store.users.model_version()]) + 1
    t = time.monotonic()
    manifest = {"index_version": data.index_version, "activity_from": data.activity_from, "users": data.n_users,
                "events": len(data.events), "items": model.n_items, "trained_at": clock(), "card": model.card()}
    with files.create(version, manifest) as scratch:
        model.save(scratch / MODEL_FILE)
    store.users.set_model_version(version)
    phases["write"] = time.monotonic() - t
    prune(files, store, settings.keep_versions)
    report = TrainReport(version, data.n_users, len(data.events), model.n_items, chosen, time.monotonic() - started,
                         phases, model.collaborative.nbytes() if model.collaborative else 0)
    log.info("user model %d: %d users, %d events, %d items, %.1fs %s", version, report.users, report.events,
             report.items, report.seconds, {k: round(v, 2) for k, v in phases.items()})
    return report


def prune(files: VersionStore, store: Store, keep: int) -> None:
    """Remove user-model versions beyond the newest ``keep`` (never the current one)."""
    current = store.users.model_version()
    versions = files.versions()
    for version in versions[:-keep] if keep > 0 else versions:
        if version != current:
            files.delete(version)
            log.info("removed user model %d (keeping %d)", version, keep)


def tune_users(settings: Settings, store: Store, quick: bool = False,
               log_line: Callable[[str], None] | None = None) -> dict:
    """Choose the hybrid's weights (and, unless ``quick``, its hyperparameters) on the catalog's own events,
    a time-ordered holdout, and record them in Redis for ``train-users`` and the API."""
    data = read_events(store, served_items(store, settings))
    started = time.monotonic()
    with threadpool_limits(1, "blas"):
        if quick:
            config = HybridConfig()
            choice = choose_weights(data.events, data.vectors, data.windows, config=config, n_users=data.n_users)
        else:
            config, choice, _ = tune(data.events, data.vectors, n_users=data.n_users, log=log_line,
                                     item_windows=data.windows)
    tuning = {"config": asdict(config), "weights": choice.weights, "chosen": choice.chosen,
              "validation": choice.validation, "validation_users": choice.users, "reason": choice.reason,
              "events": len(data.events), "users": data.n_users, "seconds": round(time.monotonic() - started, 2),
              "at": time.time()}
    store.users.set_tuning(tuning)
    return tuning
