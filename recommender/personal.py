"""The user verbs of :class:`recommender.recommender.Recommender`: ``recommend`` and ``also_viewed``.

With a trained user model served (``vistas train-users``, see ``recommender.users.live``), both come from
the hybrid: content (each of the user's interests), collaborative (ALS and co-occurrence), "viewed next",
trending inside sale windows and popularity, blended with the weights ``vistas eval --users`` chose.
Before any training they fall back to content: the user's affinity profile (one decayed centroid of topic
vectors) blended with popularity through ``alpha = strength / (strength + COLD_START_WEIGHT)``, and
``also`` to the items most like the one shown. Each result says which signal brought it
(``recommender.reasons``); a dismissed item never comes back, and items like it are pushed down.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import numpy as np

from recommender import reasons as why
from recommender.events import DISMISS, EVENT_WEIGHTS, build_profile
from recommender.index import TopicIndex
from recommender.live_index import LiveIndex
from recommender.ranking import MARGIN, Filters, Hit, shared_topics, unit
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.items import Summary, parse_timestamp
from recommender.users.config import HybridConfig
from recommender.users.live import LiveUsers, ServedModel

#: Decayed event weight at which a profile and popularity count equally (about 2 add-to-carts).
COLD_START_WEIGHT = 8.0
#: Without a trained model, a dismissed item's neighbours lose what the model's defaults would take.
DISMISS_PENALTY, DISMISS_FLOOR = HybridConfig.dismiss_penalty, HybridConfig.dismiss_floor


def _ends_at(item: Summary) -> float | None:
    value = item.fields.get("ends_at")
    return parse_timestamp(value) if value else None


def _strongest_types(events: Iterable[dict]) -> dict[str, str]:
    """Per history item, its weightiest event type (what "because you bought X" says)."""
    out: dict[str, str] = {}
    for e in events:
        if e["type"] != DISMISS and EVENT_WEIGHTS[e["type"]] > EVENT_WEIGHTS.get(out.get(e["item"], ""), -1.0):
            out[e["item"]] = e["type"]
    return out


def dismiss_push(index: TopicIndex, nums: Sequence[int], dismissed: Sequence[int]) -> np.ndarray:
    """How far each of ``nums`` is pushed down for a user who dismissed ``dismissed`` (the closest counts),
    in cosine units: ``penalty * max(0, cos - floor) / (1 - floor)``, as the trained model does in z units."""
    if not len(dismissed) or not len(nums):
        return np.zeros(len(nums), dtype=np.float32)
    sims = (index.vectors[list(nums)] @ index.vectors[list(dismissed)].T).max(axis=1)
    return DISMISS_PENALTY * np.maximum(sims - DISMISS_FLOOR, 0.0) / (1.0 - DISMISS_FLOOR)


class UserVerbs:
    """Mixed into ``Recommender``, which provides these attributes and ``_hydrate``."""

    store: Store
    live: LiveIndex
    index: TopicIndex
    settings: Settings
    clock: Callable[[], float]
    users: LiveUsers | None
    _hydrate: Callable[..., list[dict]]

    def served_model(self) -> ServedModel | None:
        return self.users.served(self.live) if self.users is not None else None

    def recommend(self, user_id: str, k: int, filters: Filters) -> list[dict]:
        """The user's top ``k`` under ``filters``, from the served user model, else from their profile."""
        events = self.store.users.events(user_id)
        served = self.served_model()
        if served is None:
            return self._by_profile(events, k, filters)
        return self._by_model(served, events, k, filters)

    def also_viewed(self, item_id: str, k: int, filters: Filters) -> list[dict] | None:
        """"Customers also viewed": the item's co-occurrence neighbours in the served user model, filled from
        the items most like it in topic space when it has too few (it is new, or no model is trained yet);
        None when the item is not served."""
        index = self.index
        num = index.nums.get(item_id)
        summary = self.live.summaries([item_id], [num])[0] if num is not None else None
        query = index.vector(num) if num is not None else None
        if summary is None or query is None:
            return None
        filters = filters.excluding([num])
        want = k + MARGIN
        served = self.served_model()
        hits: list[Hit] = []
        if served is not None and num < served.model.n_items:
            allowed = self.live.eligibility.mask(filters)
            with served.lock:
                row = served.model.collaborative.similarity[num]
            order = np.argsort(-row.data, kind="stable")
            for j, score in zip(row.indices[order].tolist(), row.data[order].tolist()):
                if score > 0 and j < len(allowed) and allowed[j] and j in index.ids:
                    hits.append(Hit(j, score))
                    if len(hits) >= want:
                        break
        collaborative = {h.num for h in hits}
        if len(hits) < want:
            hits += [Hit(n, s) for n, s in self.live.search(query, want + len(hits), filters)
                     if n not in collaborative][:want - len(hits)]
        because = ("no co-occurrence model yet" if served is None else
                   "too few viewed it with others yet" if collaborative else "no one has viewed it with others yet")

        def reasons(item: Summary, vector: np.ndarray, topics: list[dict]) -> dict:
            if index.nums.get(item.id) in collaborative:
                return why.reasons("collaborative", why.personal("collaborative", summary.fields["title"] or item_id),
                                   topics, [item_id])
            return why.reasons("content", why.similar(summary.fields["title"] or item_id, topics, because),
                               topics, [item_id])

        return self._hydrate(hits, k, query, reasons)

    # -- the trained hybrid ---------------------------------------------------------------
    def _by_model(self, served: ServedModel, events: list[dict], k: int, filters: Filters) -> list[dict]:
        index, now = self.index, self.clock()
        history = [{"item": index.nums[e["item"]], "type": e["type"], "ts": e["ts"]}
                   for e in events if e["item"] in index.nums]
        allowed = self.live.eligibility.mask(filters)
        with served.lock:
            recs = served.model.recommend(history, k + MARGIN, now=now, allowed=allowed)
        by_num = {r.item: r for r in recs}
        because_ids = {r.because: index.ids[r.because] for r in recs if r.because is not None and r.because in index.ids}
        titles = self._titles(because_ids.values())
        types = _strongest_types(events)
        has_history = bool(history)

        def reasons(item: Summary, vector: np.ndarray, _: list[dict]) -> dict:
            rec = by_num[index.nums[item.id]]
            source = why.FROM_MODEL[rec.source]
            because = because_ids.get(rec.because) if rec.because is not None else None
            if source == "trending":
                return why.reasons(source, why.trending(_ends_at(item), now))
            if source == "popular" or because is None:
                return why.reasons("popular", why.popular(has_history))
            topics = shared_topics(index.vectors[rec.because], vector[None, :], self.live.topics)[0]
            return why.reasons(source, why.personal(source, titles[because], types.get(because, "view"), topics),
                               topics, [because])

        return self._hydrate([Hit(r.item, r.score) for r in recs], k, None, reasons)

    # -- before any training: the affinity profile ---------------------------------------
    def _by_profile(self, events: list[dict], k: int, filters: Filters) -> list[dict]:
        """Affinity search blended with popularity: ``alpha = strength / (strength + COLD_START_WEIGHT)``."""
        profile = build_profile(events, self.index, self.clock(), self.settings.half_life_days)
        index = self.index
        skip = (profile.purchased | profile.dismissed
                | {i for i, n in profile.views.items() if n >= self.settings.seen_limit})
        filters = filters.excluding(index.nums[i] for i in skip if i in index.nums)
        allowed = self.live.eligibility.mask(filters)
        alpha = profile.strength / (profile.strength + COLD_START_WEIGHT) if profile.vector is not None else 0.0
        direction = unit(profile.vector) if profile.vector is not None else None
        want = k + MARGIN

        content: dict[int, float] = {}
        if profile.vector is not None:
            for num, sim in self.live.search(profile.vector, 3 * want, filters):
                content[num] = alpha * sim
        popular: dict[int, float] = {}
        ranked = [(index.nums[i], s) for i, s in self.store.users.popular(20 * want) if i in index.nums]
        ranked = [(n, s) for n, s in ranked if n < len(allowed) and allowed[n]]
        if ranked:
            top = ranked[0][1] or 1.0
            nums = [n for n, _ in ranked]
            similarity = index.vectors[nums] @ direction if direction is not None else np.zeros(len(nums))
            for (num, score), sim in zip(ranked, similarity.tolist()):
                content.setdefault(num, alpha * sim)
                popular[num] = (1 - alpha) * score / top
        fallback: set[int] = set()
        if len(content) < want:  # thin catalog signal: fill from the index so k eligible items always come back
            query = profile.vector if profile.vector is not None else np.ones(index.dim, dtype=np.float32)
            for num, sim in self.live.search(query, want + len(content), filters):
                if num not in content:
                    content[num] = alpha * sim
                    fallback.add(num)
        nums = list(content)
        dismissed = [index.nums[i] for i in profile.dismissed if i in index.nums]
        push = alpha * dismiss_push(index, nums, dismissed)
        scores = {n: content[n] + popular.get(n, 0.0) - float(p) for n, p in zip(nums, push)}
        hits = [Hit(n, s) for n, s in sorted(scores.items(), key=lambda kv: -kv[1])[:want]]
        if direction is None:
            return self._hydrate(hits, k, None, lambda item, vector, topics: why.reasons(
                "popular", why.FALLBACK if index.nums[item.id] in fallback else why.popular(False)))
        history = [(i, w) for i, w in profile.item_weights.items() if i in index.nums]
        weights = np.array([w for _, w in history], dtype=np.float32)
        pull = index.vectors[[index.nums[i] for i, _ in history]] * weights[:, None]
        types = _strongest_types(events)

        def reasons(item: Summary, vector: np.ndarray, topics: list[dict]) -> dict:
            num = index.nums[item.id]
            because = _because_of(history, pull, item.id, vector)
            if num in fallback or not because:
                return why.reasons("content", why.FALLBACK, topics, because)
            if popular.get(num, 0.0) > content[num]:
                return why.reasons("popular", why.popular(True), topics, because)
            title = self._titles([because[0]])[because[0]]
            return why.reasons("content", why.personal("content", title, types.get(because[0], "view"), topics),
                               topics, because)

        return self._hydrate(hits, k, direction, reasons)

    def _titles(self, item_ids: Iterable[str]) -> dict[str, str]:
        ids = list(item_ids)
        return {i: (s.fields["title"] if s is not None else "") or i for i, s in zip(ids, self.live.summaries(ids))}


def _because_of(history: list[tuple[str, float]], pull: np.ndarray, item_id: str, vector: np.ndarray) -> list[str]:
    """"Because you viewed ...": the history items that point here most (``pull``: their weighted vectors)."""
    scores = pull @ vector
    order = np.argsort(-scores, kind="stable")
    return [history[i][0] for i in order if scores[i] > 0 and history[i][0] != item_id][:3]
