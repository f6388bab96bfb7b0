"""User events and affinity profiles.

A profile folds the topic vectors of the items a user touched into one
vector: each event weighs by its type (a purchase says more than a view) and
halves every ``half_life_days``. It shows a user their topic mixture
(``/profile``), and it ranks for them while no collaborative model is trained
(see ``Recommender.recommend``); a ``dismiss`` weighs nothing and keeps the
item out of their answers for good.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from recommender.index import TopicIndex
from recommender.users.collaborative import DAY, DISMISS, EVENT_WEIGHTS

__all__ = ["DAY", "DISMISS", "EVENT_WEIGHTS", "Profile", "build_profile", "decay", "profile_topics"]


@dataclass
class Profile:
    """A user's affinity: the topic vector, how much evidence it rests on, and per-item weights."""

    vector: np.ndarray | None
    strength: float
    item_weights: dict[str, float]
    purchased: set[str]
    views: Counter
    dismissed: set[str]


def decay(age_seconds: float, half_life_days: float) -> float:
    return 0.5 ** (max(age_seconds, 0.0) / (half_life_days * DAY))


def build_profile(events: list[dict], index: TopicIndex, now: float, half_life_days: float) -> Profile:
    """Fold ``events`` (newest first, as stored) into a profile over the items ``index`` serves."""
    item_weights: dict[str, float] = defaultdict(float)
    purchased: set[str] = set()
    views: Counter = Counter()
    dismissed: set[str] = set()
    for event in events:
        if event["type"] == DISMISS:
            dismissed.add(event["item"])
            continue
        item_weights[event["item"]] += EVENT_WEIGHTS[event["type"]] * decay(now - event["ts"], half_life_days)
        if event["type"] == "purchase":
            purchased.add(event["item"])
        elif event["type"] == "view":
            views[event["item"]] += 1
    for item_id in dismissed:  # a dismissed item says nothing about what the user wants (as in the hybrid)
        item_weights.pop(item_id, None)
    vector = np.zeros(index.dim, dtype=np.float32)
    for item_id, weight in item_weights.items():
        num = index.nums.get(item_id)
        if num is not None:
            vector += weight * index.vector(num)
    strength = float(sum(item_weights.values()))
    has_vector = bool(np.any(vector))
    return Profile(vector if has_vector else None, strength, dict(item_weights), purchased, views, dismissed)


def profile_topics(profile: Profile, topics: list[dict], top: int = 5) -> list[dict]:
    """The profile's strongest topics, named, as shares of its mixture."""
    if profile.vector is None:
        return []
    mixture = profile.vector / max(float(profile.vector.sum()), 1e-12)
    order = np.argsort(-mixture)[:top]
    return [{"id": topics[i]["id"], "name": topics[i]["name"], "weight": round(float(mixture[i]), 4)}
            for i in order if mixture[i] > 0]

