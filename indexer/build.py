"""Building an index version: fit topics, lay out the map, write the snapshot.

A version is immutable once written; Redis's ``version`` pointer says which
one the API serves, and flipping it is the single step that publishes
(``indexer.ingest`` for the first version, ``indexer.reindex`` for the rest).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import numpy as np

from indexer.projection import Projector, build_map, save_projectors
from recommender.catalog_map import CatalogMap
from recommender.index import TopicIndex
from recommender.model.exported import fetch_heads
from recommender.model.identity import TopicChanges
from recommender.model.topics import DEFAULT_REPRESENTATION, TopicModel, load_model
from recommender.model.vocabulary import display_names
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.items import Status, Summary
from recommender.versions import MAP_MODEL, MODEL, TOPICS, VersionStore

log = logging.getLogger(__name__)


def build_version(
    settings: Settings, store: Store, ids: Sequence[str], nums: Sequence[int],
    tags: Sequence[list[tuple[str, float]]], features: np.ndarray | None, phases: dict[str, float] | None = None,
) -> tuple[int, np.ndarray]:
    """Fit a topic model on these items, lay out their map and write version N+1 (the caller makes it current).

    Returns the new version number and the items' serving vectors; ``phases`` receives the seconds of the
    topic fit, the map and the write, for the caller's summary.
    """
    version = next_version(settings, store)
    started = time.monotonic()
    changes_from = store.changes.last_id()
    model = new_topic_model(settings, store)
    vectors = model.fit(tags, features)
    carry_identity(settings, store, model)
    index = TopicIndex.built(np.asarray(nums), list(ids), vectors)
    fitted = time.monotonic()
    layout = lay_out(settings, store, ids, nums, tags, features, vectors)
    laid_out = time.monotonic()
    write_version(settings, store, version, model, index, layout, changes_from, laid_out - started,
                  dict(zip(ids, tags)))
    if phases is not None:
        phases.update({"topic fit": fitted - started, "map": laid_out - fitted, "write": time.monotonic() - laid_out})
    return version, vectors


def new_topic_model(settings: Settings, store: Store) -> TopicModel:
    """An unfitted topic model in the representation `vistas eval` chose (the default until it ran),
    naming custom heads' labels as their ``names.json`` says."""
    representation = store.versions.representation() or DEFAULT_REPRESENTATION
    return TopicModel(n_topics=settings.n_topics, representation=representation,
                      display=display_names(fetch_heads(settings)))


def carry_identity(settings: Settings, store: Store, model: TopicModel) -> TopicChanges:
    """Give a freshly fitted model's topics the ids and names of the served version's topics they match.

    Names given through the API (Redis) stay with their ids; ids a lineage used once are never
    handed out again (not even after a rollback), so a given name never lands on another theme.
    A first version starts a lineage: names given to an earlier one are forgotten.
    """
    current = store.versions.current()
    renamed = store.versions.topic_names()
    previous = None
    if current:
        try:
            previous = load_model(settings, current, store)
        except FileNotFoundError as exc:
            log.warning("topics get new ids: the served version's model is not readable (%s)", exc)
    if previous is None:
        store.versions.drop_topic_names(list(renamed))
        renamed = {}
    else:
        previous.next_id = max([getattr(previous, "next_id", 0), *[i + 1 for i in renamed]])
    changes = model.adopt(previous, renamed)
    for refit in model.refits:
        log.info("topics: refitted with fewer topics: %s", refit)
    log.info("topics: %s", changes.summary())
    return changes


def lay_out(
    settings: Settings, store: Store, ids: Sequence[str], nums: Sequence[int],
    tags: Sequence[list[tuple[str, float]]], features: np.ndarray | None, vectors: np.ndarray,
) -> tuple[CatalogMap, list[Projector]]:
    """The catalog map of these items (with their serving ``vectors``) and what places later items on it."""
    items = store.items.get_many(ids)
    return build_map(
        ids, nums, [i.title if i else "" for i in items], [bool(i and i.image) for i in items],
        tags, features, vectors, settings.n_topics, display_names(fetch_heads(settings)),
    )


def version_summaries(
    store: Store, tags: Mapping[str, list[tuple[str, float]]] | None = None,
) -> Callable[[Sequence[str]], list[Summary | None]]:
    """What result lists show of a version's items once it is published, for ``TopicIndex.save`` to read a chunk
    at a time: read after ``changes_from`` was taken (a later change is replayed on top), indexed, with ``tags``
    where given (a first version's items get theirs in Redis only after the build)."""
    tags = tags or {}

    def of(ids: Sequence[str]) -> list[Summary | None]:
        return [None if s is None else replace(s, status=Status.INDEXED,
                                               tags=tuple(t for t, _ in tags[s.id]) if s.id in tags else s.tags)
                for s in store.items.summaries(ids)]

    return of


def next_version(settings: Settings, store: Store) -> int:
    """One more than any version Redis or the object store knows (rolled-back ones included)."""
    return max([store.versions.current(), *VersionStore.for_settings(settings).versions()]) + 1


def write_version(
    settings: Settings, store: Store, version: int, model: TopicModel, index: TopicIndex,
    layout: tuple[CatalogMap, list[Projector]], changes_from: str, build_seconds: float,
    tags: Mapping[str, list[tuple[str, float]]] | None = None, **manifest: object,
) -> None:
    """Write version ``version`` to the object store, and its topic model into Redis.

    ``changes_from`` is the changes stream's position when the build read the catalog: an API
    loading this version replays the changes after it. ``tags``: items' tags Redis does not hold yet.
    """
    files = VersionStore.for_settings(settings)
    manifest = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "build_seconds": round(build_seconds, 1),
        "items": len(index), "topics": model.n_topics, "representation": model.representation,
        "backbone": settings.backbone, "changes_from": changes_from, **manifest,
    }
    catalog_map, projectors = layout
    with files.create(version, manifest) as directory:
        index.save(directory, version_summaries(store, tags))
        model.save(directory / MODEL)
        (directory / TOPICS).write_text(json.dumps([t.to_json() for t in model.topics], indent=1))
        catalog_map.save(directory)
        save_projectors(projectors, directory / MAP_MODEL)
        store.versions.save_model(version, (directory / MODEL).read_bytes())
    log.info(
        "built index version %d: %d items, %d topics (%s) in %.1fs",
        version, len(index), model.n_topics, model.representation, build_seconds,
    )

