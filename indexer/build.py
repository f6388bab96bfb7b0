"""Building an index version: fit topics, write the snapshot, publish it.

A version is immutable once written; Redis's ``version`` pointer says which
one the API serves, and flipping it is the single step that publishes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence

import numpy as np

from indexer.projection import build_map, save_projectors
from indexer.topics import DEFAULT_REPRESENTATION, TopicModel
from recommender.catalog import Catalog
from recommender.index import TopicIndex
from recommender.settings import Settings
from recommender.versions import MAP_MODEL, MODEL, TOPICS, VersionStore

log = logging.getLogger(__name__)


def build_version(
    settings: Settings, catalog: Catalog, ids: Sequence[str], nums: Sequence[int],
    tags: Sequence[list[tuple[str, float]]], features: np.ndarray | None,
) -> tuple[int, np.ndarray]:
    """Fit a topic model on these items, lay out their map, write version N+1 and make it current.

    Returns the new version number and the items' serving vectors.
    """
    store = VersionStore(settings.data_dir)
    version = max([catalog.current_version(), *store.versions()]) + 1
    started = time.monotonic()
    changes_from = catalog.last_change_id()
    model = TopicModel(n_topics=settings.n_topics, representation=catalog.representation() or DEFAULT_REPRESENTATION)
    vectors = model.fit(tags, features)
    index = TopicIndex(vectors.shape[1])
    index.upsert(np.asarray(nums), list(ids), vectors)
    items = catalog.get_many(ids)
    catalog_map, projectors = build_map(
        ids, nums, [i.title if i else "" for i in items], [bool(i and i.image) for i in items],
        tags, features, vectors, settings.n_topics,
    )
    manifest = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "items": len(ids), "topics": model.n_topics, "representation": model.representation,
        "backbone": settings.backbone, "changes_from": changes_from,
    }
    with store.create(version, manifest) as directory:
        index.save(directory)
        model.save(directory / MODEL)
        (directory / TOPICS).write_text(json.dumps([t.to_json() for t in model.topics], indent=1))
        catalog_map.save(directory)
        save_projectors(projectors, directory / MAP_MODEL)
    log.info(
        "built index version %d: %d items, %d topics (%s) in %.1fs",
        version, len(ids), model.n_topics, model.representation, time.monotonic() - started,
    )
    return version, vectors


def load_model(settings: Settings, version: int) -> TopicModel:
    """The topic model of a version, with a fix-it message when the directory is missing."""
    store = VersionStore(settings.data_dir)
    if not store.exists(version):
        raise FileNotFoundError(
            f"Redis says index version {version} is current, but {store.path(version)} does not exist: "
            "point VISTAS_DATA_DIR at the directory the index was built in, or start over with --reset"
        )
    return TopicModel.load(store.path(version) / MODEL)
