"""What a recommender does: ``similar_items`` for an item, ``recommend`` for a user.

Both search the live index under the client's filters, optionally re-rank
for diversity, then hydrate the hits from Redis with the reasons behind each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from recommender.catalog import DELETED, Item
from recommender.index import LiveIndex
from recommender.ranking import Filters, maximal_marginal_relevance, shared_tags, shared_topics

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
    picked = maximal_marginal_relevance(q, nums, live.index.vectors(nums), k + MARGIN, diversity)
    return [Hit(n, s) for n, s in picked]


Reasons = Callable[[Item, np.ndarray | None], dict]


def hydrate(live: LiveIndex, hits: Sequence[Hit], k: int, reasons: Reasons) -> list[dict]:
    """Items for the hits (skipping ones deleted meanwhile), with score and reasons, at most ``k``."""
    assert live.index is not None
    items = live.summaries([live.index.ids[h.num] for h in hits])
    out = []
    for hit, item in zip(hits, items):
        if item is None or item.status == DELETED:
            continue
        out.append({**summary(item), "score": round(hit.score, 4), "reasons": reasons(item, live.index.vector(hit.num))})
        if len(out) == k:
            break
    return out


def summary(item: Item) -> dict:
    """The fields of an item a result list shows."""
    return {"id": item.id, "title": item.title, "kind": item.kind, "category": item.category,
            "price": item.price, "url": item.url or None, "starts_at": item.starts_at or None,
            "ends_at": item.ends_at or None}


def similar_items(
    live: LiveIndex, item: Item, query: np.ndarray, k: int, filters: Filters, diversity: float
) -> list[dict]:
    """Items most like ``item`` (never itself) under ``filters``."""
    filters = Filters(filters.kind, filters.category, filters.active_at, filters.exclude | {item.num})

    def reasons(other: Item, vector: np.ndarray | None) -> dict:
        return {"topics": shared_topics(query, vector, live.topics) if vector is not None else [],
                "tags": shared_tags(other.tags, item.tags)}

    return hydrate(live, ranked(live, query, k, filters, diversity), k, reasons)
