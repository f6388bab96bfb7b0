"""How readable a topic model is, measured: what `vistas eval` prints next to retrieval quality.

* **NPMI coherence** of each topic's top-5 tags over the items' tag sets: for
  each pair, ``log(p(a, b) / (p(a) p(b))) / -log p(a, b)``, from -1 (never on
  the same item) through 0 (independent) to 1 (always together); a topic's
  score is the mean over its pairs. Reported as the mean over topics and the
  mean of the worst 5, since one incoherent topic is what a merchandiser sees.
* **distinct names**: the share of topics whose name no other topic has.
* **agreement**: the share of items whose top topic has at least one of the
  item's own top-5 tags among its top-5 (the reasons a shopper reads are
  that item's topic names).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from recommender.model.topics import TopicModel
from recommender.model.vocabulary import normalize_tag

TOP_N = 5
WORST = 5


@dataclass(frozen=True)
class Interpretability:
    npmi: float
    npmi_worst: float
    distinct_names: float
    agreement: float


def tag_sets(tags: Sequence[Sequence[tuple[str, float]]]) -> list[set[str]]:
    return [{normalize_tag(label) for label, _ in row} for row in tags]


def npmi(tag_lists: Sequence[Sequence[str]], items: Sequence[set[str]]) -> list[float]:
    """Each list's mean pairwise NPMI over the items' tag sets (0 for a list of fewer than two tags)."""
    n = max(len(items), 1)
    holders: dict[str, set[int]] = {}
    for row, labels in enumerate(items):
        for label in labels:
            holders.setdefault(label, set()).add(row)
    scores = []
    for labels in tag_lists:
        pairs = []
        for a, b in combinations(labels, 2):
            both = len(holders.get(a, set()) & holders.get(b, set())) / n
            if both == 0:
                pairs.append(-1.0)
            elif both == 1:
                pairs.append(1.0)
            else:
                pa, pb = len(holders[a]) / n, len(holders[b]) / n
                pairs.append(float(np.log(both / (pa * pb)) / -np.log(both)))
        scores.append(float(np.mean(pairs)) if pairs else 0.0)
    return scores


def measure(model: TopicModel, tags: Sequence[Sequence[tuple[str, float]]], vectors: np.ndarray) -> Interpretability:
    """The three measures of a fitted ``model`` whose serving ``vectors`` are these items'."""
    items = tag_sets(tags)
    tops = [[t for t, _ in topic.top_tags[:TOP_N]] for topic in model.topics]
    per_topic = npmi(tops, items)
    names = Counter(topic.name for topic in model.topics)
    own = [{normalize_tag(label) for label, _ in sorted(row, key=lambda kv: -kv[1])[:TOP_N]} for row in tags]
    top_topic = np.asarray(vectors).argmax(axis=1) if len(vectors) else np.zeros(0, dtype=int)
    agree = [bool(own[i] & set(tops[k])) for i, k in enumerate(top_topic) if own[i]]
    return Interpretability(
        npmi=float(np.mean(per_topic)) if per_topic else 0.0,
        npmi_worst=float(np.mean(sorted(per_topic)[:WORST])) if per_topic else 0.0,
        distinct_names=sum(1 for t in model.topics if names[t.name] == 1) / max(len(model.topics), 1),
        agreement=float(np.mean(agree)) if agree else 0.0,
    )
