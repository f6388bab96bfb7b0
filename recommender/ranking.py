"""Which items may be shown (eligibility), in what order (diversity), and why (reasons).

Eligibility is kept as dense per-item arrays indexed by the items' numeric
ids, so a filter over a million items is a few vectorised comparisons; the
resulting mask goes into the FAISS search itself (an ID selector), so
filters never make an answer shorter than ``k`` while ``k`` eligible items
exist, however many are filtered out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import faiss
import numpy as np

from recommender.catalog import DELETED, parse_timestamp


@dataclass(frozen=True)
class Filters:
    """What a client asked to restrict an answer to."""

    kind: str | None = None
    category: str | None = None
    active_at: float | None = None  # epoch seconds; None = any time
    exclude: frozenset[int] = field(default_factory=frozenset)  # numeric ids


def _time_or(value: str, default: float) -> float:
    try:
        return parse_timestamp(value) if value else default
    except ValueError:
        return default


class Eligibility:
    """Per-item filter fields as arrays: kind and category codes, sale window, presence."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {"": 0}
        self.kind = np.zeros(0, dtype=np.int32)
        self.category = np.zeros(0, dtype=np.int32)
        self.starts = np.zeros(0, dtype=np.float64)
        self.ends = np.zeros(0, dtype=np.float64)
        self.present = np.zeros(0, dtype=bool)

    def _code(self, value: str) -> int:
        return self._codes.setdefault(value, len(self._codes))

    def _grow(self, num: int) -> None:
        size = len(self.present)
        if num < size:
            return
        new = max(num + 1, size * 2, 1024)
        for name, fill in (("kind", 0), ("category", 0), ("starts", -math.inf), ("ends", math.inf), ("present", False)):
            old = getattr(self, name)
            grown = np.full(new, fill, dtype=old.dtype)
            grown[:size] = old
            setattr(self, name, grown)

    def set(self, num: int, fields: dict[str, str]) -> None:
        """Record an item's filter fields (from ``Catalog.filter_fields`` or an Item)."""
        self._grow(num)
        self.kind[num] = self._code(fields.get("kind", ""))
        self.category[num] = self._code(fields.get("category", ""))
        self.starts[num] = _time_or(fields.get("starts_at", ""), -math.inf)
        self.ends[num] = _time_or(fields.get("ends_at", ""), math.inf)
        self.present[num] = fields.get("status") != DELETED

    def drop(self, num: int) -> None:
        if num < len(self.present):
            self.present[num] = False

    def mask(self, filters: Filters) -> np.ndarray:
        """Boolean array over numeric ids: True where an item passes every filter."""
        keep = self.present.copy()
        for value, column in ((filters.kind, self.kind), (filters.category, self.category)):
            if value is not None:
                code = self._codes.get(value)
                if code is None:
                    return np.zeros_like(keep)
                keep &= column == code
        if filters.active_at is not None:
            keep &= (self.starts <= filters.active_at) & (filters.active_at < self.ends)
        excluded = [n for n in filters.exclude if n < len(keep)]
        keep[excluded] = False
        return keep


def id_selector(mask: np.ndarray) -> tuple[faiss.IDSelector, np.ndarray]:
    """A FAISS selector over numeric ids; keep the returned bits alive while searching."""
    bits = np.packbits(mask, bitorder="little")
    return faiss.IDSelectorBitmap(len(mask), faiss.swig_ptr(bits)), bits


def maximal_marginal_relevance(
    query: np.ndarray, nums: Sequence[int], vectors: np.ndarray, k: int, diversity: float
) -> list[tuple[int, float]]:
    """Greedy MMR: trade relevance to the query for dissimilarity to what is already chosen.

    ``diversity`` 0 keeps the relevance order; 1 picks the most different items.
    Returns (num, relevance) in the chosen order.
    """
    relevance = vectors @ query
    chosen: list[int] = []
    best_overlap = np.full(len(nums), -np.inf)
    available = np.ones(len(nums), dtype=bool)
    for _ in range(min(k, len(nums))):
        overlap = np.where(np.isfinite(best_overlap), best_overlap, 0.0)
        score = (1 - diversity) * relevance - diversity * overlap
        score[~available] = -np.inf
        pick = int(np.argmax(score))
        chosen.append(pick)
        available[pick] = False
        best_overlap = np.maximum(best_overlap, vectors @ vectors[pick])
    return [(int(nums[i]), float(relevance[i])) for i in chosen]


def shared_topics(a: np.ndarray, b: np.ndarray, topics: Sequence[dict], top: int = 3) -> list[dict]:
    """The topics that make two items similar: largest terms of their cosine."""
    contribution = a * b
    order = np.argsort(-contribution)[:top]
    return [
        {"id": int(i), "name": topics[i]["name"], "weight": round(float(contribution[i]), 4)}
        for i in order if contribution[i] > 1e-4
    ]


def shared_tags(a: Sequence[tuple[str, float]], b: Sequence[tuple[str, float]]) -> list[str]:
    theirs = {tag for tag, _ in b}
    return [tag for tag, _ in a if tag in theirs]
