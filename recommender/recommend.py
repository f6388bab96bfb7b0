"""What a recommender does: ``similar_items`` for an item, ``recommend`` for a user.

Both search the live index under the client's filters, optionally re-rank
for diversity, then hydrate the hits from Redis with the reasons behind each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from recommender.store.items import Status, Summary
from recommender.index import LiveIndex
from recommender.ranking import Filters, maximal_marginal_relevance, shared_topics

#: Extra hits fetched beyond k, to cover items deleted in another process moments ago.
MARGIN = 5


@dataclass(frozen=True)
class Hit:
    num: int
    score: float


def ranked(live: LiveIndex, query: np.ndarray, k: int, filters: Filters, diversity: float) -> list[Hit]:
    """Top ``k + MARGIN`` eligible items for ``query``, diversified when asked."""
    assert live.index is not None
    if diversity <= 0:
        return [Hit(n, s) for n, s in live.search(query, k + MARGIN, filters)]
    pool = live.search(query, max(4 * k, 50), filters)
    if not pool:
        return []
    nums = [n for n, _ in pool]
    q = query / max(float(np.linalg.norm(query)), 1e-12)
    picked = maximal_marginal_relevance(q, nums, live.index.vectors[nums], k + MARGIN, diversity)
    return [Hit(n, s) for n, s in picked]


#: The reasons beside the shared topics: (the result, its topic vector) -> more keys of its ``reasons``.
Reasons = Callable[[Summary, np.ndarray], dict]


def hydrate(live: LiveIndex, hits: Sequence[Hit], k: int, topics_of: np.ndarray | None, reasons: Reasons) -> list[dict]:
    """Items for the hits (skipping ones deleted meanwhile), with score and reasons, at most ``k``.

    Each result's reasons are the topics it shares with ``topics_of`` (none when that is None)
    and what ``reasons`` adds.
    """
    index = live.index
    assert index is not None
    hits = [h for h in hits if h.num in index.ids]
    items = live.summaries([index.ids[h.num] for h in hits])
    kept = [(hit, item) for hit, item in zip(hits, items) if item is not None and item.status != Status.DELETED][:k]
    vectors = index.vectors[[hit.num for hit, _ in kept]]
    topics = shared_topics(topics_of, vectors, live.topics) if topics_of is not None else [[] for _ in kept]
    return [
        {**item.fields, "score": round(hit.score, 4), "reasons": {"topics": shared, **reasons(item, vector)}}
        for (hit, item), vector, shared in zip(kept, vectors, topics)
    ]


def similar_items(
    live: LiveIndex, item: Summary, num: int, k: int, filters: Filters, diversity: float
) -> list[dict]:
    """Items most like ``item`` (number ``num`` in the index; never itself) under ``filters``."""
    query = live.index.vector(num) if live.index is not None else None
    if query is None:
        return []
    filters = Filters(filters.kind, filters.category, filters.active_at, filters.exclude | {num})
    tags = set(item.tags)
    hits = ranked(live, query, k, filters, diversity)
    return hydrate(live, hits, k, query, lambda other, _: {"tags": [t for t in other.tags if t in tags]})
