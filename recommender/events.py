"""User events and affinity profiles.

A profile folds the topic vectors of the items a user touched into one
vector: each event weighs by its type (a purchase says more than a view) and
halves every ``half_life_days``. Recommendations search with that vector,
blended with popularity while the history is thin (see ``recommend_for_user``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from recommender.store import Store
from recommender.index import LiveIndex
from recommender.ranking import Filters
from recommender.recommend import MARGIN, Hit, hydrate

EVENT_WEIGHTS = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0}
#: Decayed event weight at which a profile and popularity count equally (about 2 add-to-carts).
COLD_START_WEIGHT = 8.0
DAY = 86400.0


@dataclass
class Profile:
    """A user's affinity: the topic vector, how much evidence it rests on, and per-item weights."""

    vector: np.ndarray | None
    strength: float
    item_weights: dict[str, float]
    purchased: set[str]
    views: Counter


def decay(age_seconds: float, half_life_days: float) -> float:
    return 0.5 ** (max(age_seconds, 0.0) / (half_life_days * DAY))


def build_profile(events: list[dict], live: LiveIndex, now: float, half_life_days: float) -> Profile:
    assert live.index is not None
    item_weights: dict[str, float] = defaultdict(float)
    purchased: set[str] = set()
    views: Counter = Counter()
    for event in events:
        item_weights[event["item"]] += EVENT_WEIGHTS[event["type"]] * decay(now - event["ts"], half_life_days)
        if event["type"] == "purchase":
            purchased.add(event["item"])
        elif event["type"] == "view":
            views[event["item"]] += 1
    vector = np.zeros(live.index.dim, dtype=np.float32)
    for item_id, weight in item_weights.items():
        num = live.index.nums.get(item_id)
        if num is not None:
            vector += weight * live.index.vector(num)
    strength = float(sum(item_weights.values()))
    has_vector = bool(np.any(vector))
    return Profile(vector if has_vector else None, strength, dict(item_weights), purchased, views)


def profile_topics(profile: Profile, topics: list[dict], top: int = 5) -> list[dict]:
    if profile.vector is None:
        return []
    mixture = profile.vector / max(float(profile.vector.sum()), 1e-12)
    order = np.argsort(-mixture)[:top]
    return [{"id": int(i), "name": topics[i]["name"], "weight": round(float(mixture[i]), 4)}
            for i in order if mixture[i] > 0]


def recommend_for_user(
    store: Store, live: LiveIndex, profile: Profile, k: int, filters: Filters, seen_limit: int
) -> list[dict]:
    """Affinity search blended with popularity: ``alpha = strength / (strength + COLD_START_WEIGHT)``."""
    assert live.index is not None
    skip = profile.purchased | {i for i, n in profile.views.items() if n >= seen_limit}
    exclude = filters.exclude | {live.index.nums[i] for i in skip if i in live.index.nums}
    filters = Filters(filters.kind, filters.category, filters.active_at, frozenset(exclude))
    allowed = live.eligibility.mask(filters)
    alpha = profile.strength / (profile.strength + COLD_START_WEIGHT) if profile.vector is not None else 0.0
    unit = profile.vector / max(float(np.linalg.norm(profile.vector)), 1e-12) if profile.vector is not None else None
    want = k + MARGIN

    scores: dict[int, float] = {}
    if profile.vector is not None:
        for num, sim in live.search(profile.vector, 3 * want, filters):
            scores[num] = alpha * sim
    popular = [(live.index.nums[i], s) for i, s in store.users.popular(20 * want) if i in live.index.nums]
    popular = [(n, s) for n, s in popular if n < len(allowed) and allowed[n]]
    if popular:
        top = popular[0][1] or 1.0
        nums = [n for n, _ in popular]
        similarity = live.index.vectors[nums] @ unit if unit is not None else np.zeros(len(nums))
        for (num, score), sim in zip(popular, similarity.tolist()):
            scores[num] = scores.get(num, alpha * sim) + (1 - alpha) * score / top
    if len(scores) < want:  # thin catalog signal: fill from the index so k eligible items always come back
        fallback = profile.vector if profile.vector is not None else np.ones(live.index.dim, dtype=np.float32)
        for num, sim in live.search(fallback, want + len(scores), filters):
            scores.setdefault(num, alpha * sim)
    hits = [Hit(n, s) for n, s in sorted(scores.items(), key=lambda kv: -kv[1])[:want]]
    if unit is None:
        return hydrate(live, hits, k, None, lambda item, vector: {"popular": True, "because_of": []})
    history = [(i, w) for i, w in profile.item_weights.items() if i in live.index.nums]
    weights = np.array([w for _, w in history], dtype=np.float32)
    pull = live.index.vectors[[live.index.nums[i] for i, _ in history]] * weights[:, None]
    return hydrate(live, hits, k, unit, lambda item, vector: _because_of(history, pull, item.id, vector))


def _because_of(history: list[tuple[str, float]], pull: np.ndarray, item_id: str, vector: np.ndarray) -> dict:
    """"Because you viewed ...": the history items that point here most (``pull``: their weighted vectors).

    The shared topics ("coral reef, boats") are added by ``hydrate``.
    """
    scores = pull @ vector
    order = np.argsort(-scores, kind="stable")
    because = [history[i][0] for i in order if scores[i] > 0 and history[i][0] != item_id][:3]
    return {"popular": False, "because_of": because}
