"""The verbs of a recommender, as implicit names them: ``similar_items`` for an item,
``recommend`` for a user, ``search`` for a query vector (a photo's, see ``recommender.embed``).

Each searches the live index under the client's filters (optionally re-ranked for
diversity), then hydrates the hits from the process's item summaries with the reasons
behind each: the topics a result shares with the query, and the tags (items, photos) or
the history items (users) that brought it. The blueprints only parse, call and render.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

from recommender.events import build_profile
from recommender.index import LiveIndex
from recommender.ranking import Filters, maximal_marginal_relevance, shared_topics, unit
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.items import Status, Summary

#: Extra hits fetched beyond k, to cover items deleted in another process moments ago.
MARGIN = 5
#: Decayed event weight at which a profile and popularity count equally (about 2 add-to-carts).
COLD_START_WEIGHT = 8.0


@dataclass(frozen=True)
class Hit:
    num: int
    score: float


#: The reasons beside the shared topics: (the result, its topic vector) -> more keys of its ``reasons``.
Reasons = Callable[[Summary, np.ndarray], dict]


def _shared_tags(tags: Collection[str]) -> Reasons:
    return lambda item, _: {"tags": [t for t in item.tags if t in tags]}


class Recommender:
    """The verbs over one process's live index (caught up with Redis) and the store."""

    def __init__(self, store: Store, live: LiveIndex, settings: Settings, clock: Callable[[], float] = time.time):
        assert live.index is not None, "a ready index (see recommender.state.ready_index)"
        self.store = store
        self.live = live
        self.index = live.index
        self.settings = settings
        self.clock = clock  # what users' events decay to

    def similar_items(self, item_id: str, k: int, filters: Filters, diversity: float = 0.0) -> list[dict] | None:
        """Items most like ``item_id`` (never itself) under ``filters``; None when it is not served."""
        num = self.index.nums.get(item_id)
        summary = self.live.summaries([item_id])[0] if num is not None else None
        query = self.index.vector(num) if num is not None else None
        if summary is None or query is None:
            return None
        hits = self._ranked(query, k, filters.excluding([num]), diversity)
        return self._hydrate(hits, k, query, _shared_tags(set(summary.tags)))

    def search(self, vector: np.ndarray, k: int, filters: Filters, diversity: float = 0.0,
               tags: Collection[str] = ()) -> list[dict]:
        """Items most like a query vector; ``tags`` (the query's own) are the reasons' tags."""
        return self._hydrate(self._ranked(vector, k, filters, diversity), k, vector, _shared_tags(set(tags)))

    def recommend(self, user_id: str, k: int, filters: Filters) -> list[dict]:
        """Affinity search blended with popularity: ``alpha = strength / (strength + COLD_START_WEIGHT)``."""
        events = self.store.users.events(user_id)
        profile = build_profile(events, self.index, self.clock(), self.settings.half_life_days)
        index = self.index
        skip = profile.purchased | {i for i, n in profile.views.items() if n >= self.settings.seen_limit}
        filters = filters.excluding(index.nums[i] for i in skip if i in index.nums)
        allowed = self.live.eligibility.mask(filters)
        alpha = profile.strength / (profile.strength + COLD_START_WEIGHT) if profile.vector is not None else 0.0
        direction = unit(profile.vector) if profile.vector is not None else None
        want = k + MARGIN

        scores: dict[int, float] = {}
        if profile.vector is not None:
            for num, sim in self.live.search(profile.vector, 3 * want, filters):
                scores[num] = alpha * sim
        popular = [(index.nums[i], s) for i, s in self.store.users.popular(20 * want) if i in index.nums]
        popular = [(n, s) for n, s in popular if n < len(allowed) and allowed[n]]
        if popular:
            top = popular[0][1] or 1.0
            nums = [n for n, _ in popular]
            similarity = index.vectors[nums] @ direction if direction is not None else np.zeros(len(nums))
            for (num, score), sim in zip(popular, similarity.tolist()):
                scores[num] = scores.get(num, alpha * sim) + (1 - alpha) * score / top
        if len(scores) < want:  # thin catalog signal: fill from the index so k eligible items always come back
            fallback = profile.vector if profile.vector is not None else np.ones(index.dim, dtype=np.float32)
            for num, sim in self.live.search(fallback, want + len(scores), filters):
                scores.setdefault(num, alpha * sim)
        hits = [Hit(n, s) for n, s in sorted(scores.items(), key=lambda kv: -kv[1])[:want]]
        if direction is None:
            return self._hydrate(hits, k, None, lambda item, vector: {"popular": True, "because_of": []})
        history = [(i, w) for i, w in profile.item_weights.items() if i in index.nums]
        weights = np.array([w for _, w in history], dtype=np.float32)
        pull = index.vectors[[index.nums[i] for i, _ in history]] * weights[:, None]
        return self._hydrate(hits, k, direction, lambda item, vector: _because_of(history, pull, item.id, vector))

    def _ranked(self, query: np.ndarray, k: int, filters: Filters, diversity: float) -> list[Hit]:
        """Top ``k + MARGIN`` eligible items for ``query``, diversified when asked."""
        if diversity <= 0:
            return [Hit(n, s) for n, s in self.live.search(query, k + MARGIN, filters)]
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
        hits = [h for h in hits if h.num in index.ids]
        items = self.live.summaries([index.ids[h.num] for h in hits])
        kept = [(hit, item) for hit, item in zip(hits, items) if item is not None and item.status != Status.DELETED][:k]
        vectors = index.vectors[[hit.num for hit, _ in kept]]
        topics = shared_topics(topics_of, vectors, self.live.topics) if topics_of is not None else [[] for _ in kept]
        return [
            {**item.fields, "score": round(hit.score, 4), "reasons": {"topics": shared, **reasons(item, vector)}}
            for (hit, item), vector, shared in zip(kept, vectors, topics)
        ]


def _because_of(history: list[tuple[str, float]], pull: np.ndarray, item_id: str, vector: np.ndarray) -> dict:
    """"Because you viewed ...": the history items that point here most (``pull``: their weighted vectors).

    The shared topics ("coral reef, boats") are added by ``_hydrate``.
    """
    scores = pull @ vector
    order = np.argsort(-scores, kind="stable")
    because = [history[i][0] for i in order if scores[i] > 0 and history[i][0] != item_id][:3]
    return {"popular": False, "because_of": because}
