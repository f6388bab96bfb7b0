"""The verbs of a recommender, as implicit names them: ``similar_items`` for an item,
``recommend`` for a user, ``search`` for a query vector (a photo's, see ``recommender.embed``).

Each searches the live index under the client's filters (optionally re-ranked for
diversity), then hydrates the hits from the process's item summaries with the reasons
behind each: the topics a result shares with the query, and the tags (items, photos) or
the history items (users) that brought it. The blueprints only parse, call and render.
The user verbs (``recommend``, ``also_viewed``) are :class:`recommender.personal.UserVerbs`'.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence

import numpy as np

from recommender.live_index import LiveIndex
from recommender.personal import UserVerbs
from recommender.ranking import MARGIN, Filters, Hit, maximal_marginal_relevance, shared_topics, unit
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.items import Status, Summary
from recommender.users.live import LiveUsers

#: A result's ``reasons``: (the result, its topic vector, the topics it shares with the query) -> the object.
Reasons = Callable[[Summary, np.ndarray, list[dict]], dict]


def _shared_tags(tags: Collection[str]) -> Reasons:
    return lambda item, _, topics: {"topics": topics, "tags": [t for t in item.tags if t in tags]}


class Recommender(UserVerbs):
    """The verbs over one process's live index (caught up with Redis) and the store."""

    def __init__(self, store: Store, live: LiveIndex, settings: Settings, clock: Callable[[], float] = time.time,
                 users: LiveUsers | None = None):
        assert live.index is not None, "a ready index (see recommender.state.ready_index)"
        self.store = store
        self.live = live
        self.index = live.index
        self.settings = settings
        self.clock = clock  # what users' events decay to
        self.users = users  # the trained user model, when one is published

    def similar_items(self, item_id: str, k: int, filters: Filters, diversity: float = 0.0) -> list[dict] | None:
        """Items most like ``item_id`` (never itself) under ``filters``; None when it is not served."""
        num = self.index.nums.get(item_id)
        summary = self.live.summaries([item_id], [num])[0] if num is not None else None
        query = self.index.vector(num) if num is not None else None
        if summary is None or query is None:
            return None
        hits = self._ranked(query, k, filters.excluding([num]), diversity, like=num)
        return self._hydrate(hits, k, query, _shared_tags(set(summary.tags)))

    def search(self, vector: np.ndarray, k: int, filters: Filters, diversity: float = 0.0,
               tags: Collection[str] = ()) -> list[dict]:
        """Items most like a query vector; ``tags`` (the query's own) are the reasons' tags."""
        return self._hydrate(self._ranked(vector, k, filters, diversity), k, vector, _shared_tags(set(tags)))

    def _ranked(self, query: np.ndarray, k: int, filters: Filters, diversity: float,
                like: int | None = None) -> list[Hit]:
        """Top ``k + MARGIN`` eligible items for ``query`` (item ``like``'s vector, when it is one), diversified
        when asked."""
        if diversity <= 0:
            n = k + MARGIN
            found = self.live.search(query, n, filters) if like is None else self.live.like(like, n, filters)
            return [Hit(num, score) for num, score in found]
        pool = self.live.search(query, max(4 * k, 50), filters)
        if not pool:
            return []
        nums = [n for n, _ in pool]
        picked = maximal_marginal_relevance(unit(query), nums, self.index.vectors[nums], k + MARGIN, diversity)
        return [Hit(n, s) for n, s in picked]

    def _hydrate(self, hits: Sequence[Hit], k: int, topics_of: np.ndarray | None, reasons: Reasons) -> list[dict]:
        """Items for the hits (skipping ones deleted meanwhile), with score and reasons, at most ``k``.

        Each result's reasons are the topics it shares with ``topics_of`` (none when that is None)
        and what ``reasons`` adds.
        """
        index = self.index
        kept: list[tuple[Hit, Summary]] = []
        start = 0
        while len(kept) < k and start < len(hits):  # the first k, and more only for those deleted meanwhile (rare)
            wanted = hits[start:start + k - len(kept)]
            start += len(wanted)
            chunk = [(h, i) for h, i in zip(wanted, index.item_ids.ids_of([h.num for h in wanted])) if i is not None]
            items = self.live.summaries([item_id for _, item_id in chunk], [h.num for h, _ in chunk])
            kept += [(h, item) for (h, _), item in zip(chunk, items) if item is not None and item.status != Status.DELETED]
        vectors = index.vectors[[hit.num for hit, _ in kept]]
        topics = shared_topics(topics_of, vectors, self.live.topics) if topics_of is not None else [[] for _ in kept]
        return [
            {**item.fields, "score": round(hit.score, 4), "reasons": reasons(item, vector, shared)}
            for (hit, item), vector, shared in zip(kept, vectors, topics)
        ]
