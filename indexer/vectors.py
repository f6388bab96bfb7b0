"""Serving vectors for freshly tagged items, written so they never land in the wrong version.

A worker (or an inline ingest) transforms tags and features with the topic
model of the version Redis calls current, then settles them with
:meth:`recommender.store.queue.Queue.settle`, which refuses an outcome computed with a model that
stopped being current meanwhile (a reindex flipped the pointer). Those items
are transformed again with the new model, so an item indexed during a reindex
lands in the new version, not in the one being retired.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from indexer.projection import place_items
from recommender.model.topics import TopicModel, load_model
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.queue import Message, Op, Outcome, Settled

log = logging.getLogger(__name__)
#: Reindexes that may flip the pointer while one batch is being written before we give up on it.
MAX_STALE_ROUNDS = 5


class NoVersionYet(RuntimeError):
    """There is no topic model to transform with until the first index version is built."""


@dataclass
class Tagged:
    """An item's tags (backbone labels merged with given tags) and features, ready for a vector."""

    item_id: str
    num: int
    tags: list[tuple[str, float]]
    features: np.ndarray | None
    message: Message | None = None
    seen: float | None = None  # the item's updated_at when it was read (``Outcome.seen``)


class CurrentModel:
    """The topic model of the version Redis calls current, loaded once per version."""

    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        self.version = 0
        self.model: TopicModel | None = None

    def get(self) -> tuple[int, TopicModel]:
        version = self.store.versions.current()
        if version == 0:
            raise NoVersionYet("no index version yet: build one with `vistas ingest PATH` or `vistas reindex`")
        if version != self.version or self.model is None:
            self.model, self.version = load_model(self.settings, version, self.store), version
            log.info("using the topic model of index version %d", version)
        return self.version, self.model


def feature_matrix(tagged: Sequence[Tagged]) -> np.ndarray | None:
    """The items' features as rows; zeros for items without a photo; None when none has one."""
    dims = [t.features.shape[0] for t in tagged if t.features is not None]
    if not dims:
        return None
    zeros = np.zeros(dims[0], dtype=np.float32)
    return np.stack([t.features if t.features is not None else zeros for t in tagged])


def transform(model: TopicModel, tagged: Sequence[Tagged]) -> np.ndarray:
    """Serving vectors (items without a photo: the model works on their tags)."""
    return model.transform([t.tags for t in tagged], feature_matrix(tagged))


def index_tagged(
    store: Store, models: CurrentModel, tagged: Sequence[Tagged], consumer: str = "",
    on_settled: Callable[[list[Tagged], int], None] | None = None,
) -> list[str]:
    """Give items vectors from the current model and settle them; returns one settle code per item.

    ``on_settled(items, version)`` hears which items were written with which version (to put
    them on that version's map). An item left ``STALE`` after :data:`MAX_STALE_ROUNDS` pointer
    flips is not written (its message stays pending and is retried).
    """
    codes = [Settled.STALE] * len(tagged)
    todo = list(range(len(tagged)))
    for _ in range(MAX_STALE_ROUNDS):
        version, model = models.get()
        batch = [tagged[i] for i in todo]
        vectors = transform(model, batch)
        outcomes = [
            Outcome(Op.INDEX, t.item_id, t.num, t.tags, vector, t.features, message=t.message, seen=t.seen)
            for t, vector in zip(batch, vectors)
        ]
        for i, code in zip(todo, store.queue.settle(outcomes, consumer, version)):
            codes[i] = code
        if on_settled is not None:
            on_settled([t for t, i in zip(batch, todo) if codes[i] == Settled.SETTLED], version)
        todo = [i for i in todo if codes[i] == Settled.STALE]
        if not todo:
            break
        log.info("index version changed while indexing: transforming %d items again", len(todo))
    return codes


def place_on_map(settings: Settings, store: Store, tagged: Sequence[Tagged], version: int) -> None:
    """Put indexed items on the version's catalog map; a failure here costs the map points, nothing more."""
    if not tagged:
        return
    try:
        place_items(settings, store, version, [t.item_id for t in tagged], [t.tags for t in tagged],
                    feature_matrix(tagged))
    except Exception:  # noqa: BLE001 - the items are indexed and served; only their map position is missing
        log.exception("could not place %d items on the map of index version %d", len(tagged), version)
