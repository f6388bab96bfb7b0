"""Which items may be shown (eligibility), in what order (diversity), and why (reasons).

Eligibility is kept as dense per-item arrays indexed by the items' numeric
ids, so a filter over a million items is a few vectorised comparisons; the
resulting mask goes into the search itself (the rows an exact scan reads,
or the graph walk's ID selector), so filters never make an answer shorter
than ``k`` while ``k`` eligible items exist, however many are filtered out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from recommender import columns
from recommender.store.items import Status, parse_timestamp

#: Filter masks cached per process (one per kind and category combination asked for).
MASK_CACHE_SIZE = 64
#: Eligible sets kept per index (each a mask and a bitmap: about 1.4 MB at a million items).
ELIGIBLE_CACHE_SIZE = 8
#: Extra hits fetched beyond k, to cover items deleted in another process moments ago.
MARGIN = 5
#: A version's eligibility: the kind and category codes' values, in code order (JSON), and one column per array.
CODES = "codes.json"
COLUMNS = {"kind": 0, "category": 0, "starts": -math.inf, "ends": math.inf, "present": False}  # name: fill


@dataclass(frozen=True)
class Hit:
    """One search result before hydration: the item's number and its score."""

    num: int
    score: float


@dataclass(frozen=True)
class Filters:
    """What a client asked to restrict an answer to."""

    kind: str | None = None
    category: str | None = None
    active_at: float | None = None  # epoch seconds; None = any time
    exclude: frozenset[int] = field(default_factory=frozenset)  # numeric ids

    def excluding(self, nums: Iterable[int]) -> "Filters":
        """The same filters, with these numeric ids left out too."""
        return replace(self, exclude=self.exclude | frozenset(nums))


def unit(x: np.ndarray) -> np.ndarray:
    """``x`` scaled to length 1 (each row, for a matrix); zero stays zero."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _time_or(value: str, default: float) -> float:
    try:
        return parse_timestamp(value) if value else default
    except ValueError:
        return default


class Eligibility:
    """Per-item filter fields as arrays: kind and category codes, sale window, presence.

    A served version's arrays are mapped from its files (``save``/``load``), copy-on-write:
    a change patches this process's pages, and a code first seen since the build is appended.

    A mask is cached per (kind, category, time filter or not) with the span
    of instants it holds for: between two consecutive sale-window boundaries
    every ``active_at`` gives the same mask, so a stream of ``active_at=now``
    queries computes it once per boundary crossed or change applied.
    """

    def __init__(self) -> None:
        self._codes: dict[str, int] = {"": 0}
        self.kind = np.zeros(0, dtype=np.int32)
        self.category = np.zeros(0, dtype=np.int32)
        self.starts = np.zeros(0, dtype=np.float64)
        self.ends = np.zeros(0, dtype=np.float64)
        self.present = np.zeros(0, dtype=bool)
        self._masks: dict[tuple[str | None, str | None, bool], tuple[float, float, np.ndarray]] = {}

    def _code(self, value: str) -> int:
        return self._codes.setdefault(value, len(self._codes))

    def save(self, directory: Path, rows: int) -> None:
        """Write the columns with ``rows`` rows (``columns.capacity``: room for the items indexed later)."""
        (directory / CODES).write_text(json.dumps(list(self._codes)))
        for name, fill in COLUMNS.items():
            columns.save(directory, f"{name}.npy", columns.padded(getattr(self, name), rows, fill))

    @classmethod
    def load(cls, directory: Path) -> "Eligibility":
        """The version's columns, mapped: changes patch pages of this process only."""
        self = cls()
        self._codes = {value: code for code, value in enumerate(json.loads((directory / CODES).read_text()))}
        for name in COLUMNS:
            setattr(self, name, columns.load(directory, f"{name}.npy"))
        return self

    def _grow(self, num: int) -> None:
        size = len(self.present)
        if num < size:
            return
        new = max(num + 1, size * 2, 1024)
        for name, fill in COLUMNS.items():
            old = getattr(self, name)
            grown = np.full(new, fill, dtype=old.dtype)
            grown[:size] = old
            setattr(self, name, grown)

    def set(self, num: int, fields: Mapping[str, str]) -> None:
        """Record an item's filter fields (from a ``Summary`` or an Item)."""
        self._grow(num)
        self._masks.clear()
        self.kind[num] = self._code(fields.get("kind", ""))
        self.category[num] = self._code(fields.get("category", ""))
        self.starts[num] = _time_or(fields.get("starts_at", ""), -math.inf)
        self.ends[num] = _time_or(fields.get("ends_at", ""), math.inf)
        self.present[num] = fields.get("status") != Status.DELETED

    def drop(self, num: int) -> None:
        if num < len(self.present):
            self._masks.clear()
            self.present[num] = False

    def mask(self, filters: Filters) -> np.ndarray:
        """Boolean array over numeric ids: True where an item passes every filter (a fresh array)."""
        keep = self.base(filters).copy()
        excluded = [n for n in filters.exclude if n < len(keep)]
        keep[excluded] = False
        return keep

    def base(self, filters: Filters) -> np.ndarray:
        """The mask for everything but ``exclude``: the same array while its answer holds (never write into it)."""
        return self._base_mask(filters.kind, filters.category, filters.active_at)

    def _base_mask(self, kind: str | None, category: str | None, at: float | None) -> np.ndarray:
        """The mask for everything but ``exclude``, from the cache while ``at`` stays in its span."""
        key = (kind, category, at is None)
        cached = self._masks.get(key)
        if cached is not None and (at is None or cached[0] <= at < cached[1]):
            return cached[2]
        keep = self.present.copy()
        for value, column in ((kind, self.kind), (category, self.category)):
            if value is not None:
                code = self._codes.get(value)
                if code is None:
                    return np.zeros_like(keep)
                keep &= column == code
        low, high = -math.inf, math.inf
        if at is not None:
            started = self.starts <= at
            ended = self.ends <= at
            keep &= started & ~ended
            # The mask holds from the last boundary at or before ``at`` until the next one after it.
            low = max(self.starts.max(initial=-math.inf, where=started), self.ends.max(initial=-math.inf, where=ended))
            high = min(self.starts.min(initial=math.inf, where=~started), self.ends.min(initial=math.inf, where=~ended))
        if len(self._masks) >= MASK_CACHE_SIZE:
            self._masks.clear()
        self._masks[key] = (low, high, keep)
        return keep


class EligibleSets:
    """What a search may return under a mask, with its count and the bitmap a graph walk takes, computed once
    per mask and index state instead of per query: at a million items those four passes over the arrays cost
    about 0.12 ms a query (``bench/scale.py``). Masks are taken by identity: :meth:`Eligibility.base` hands
    out the same array while its filters' answer holds, and nothing writes into one.

    The bitmap is None when every graph node is eligible: the walk then needs no selector, which costs a
    fifth of its time at a million items (an unfiltered ``similar`` with nothing deleted since the build)."""

    def __init__(self) -> None:
        self._sets: dict[int, tuple[np.ndarray | None, int, np.ndarray, int, np.ndarray | None]] = {}

    def of(self, allowed: np.ndarray | None, present: np.ndarray, state: int,
           nodes: np.ndarray | None = None) -> tuple[np.ndarray, int, np.ndarray | None]:
        """(eligible, count, little-endian bitmap) of ``allowed & present``; ``state`` changes whenever ``present``
        does; ``nodes``, the graph's items (the same at every call), decide whether a bitmap is needed."""
        cached = self._sets.get(id(allowed))
        if cached is not None and cached[0] is allowed and cached[1] == state:
            return cached[2], cached[3], cached[4]
        if allowed is None:
            eligible = present
        else:
            n = min(len(allowed), len(present))
            eligible = allowed[:n] & present[:n]
        m = min(len(eligible), 0 if nodes is None else len(nodes))
        whole = nodes is not None and not np.any(nodes[:m] & ~eligible[:m]) and not nodes[m:].any()
        if len(self._sets) >= ELIGIBLE_CACHE_SIZE or any(c[1] != state for c in self._sets.values()):
            self._sets.clear()
        entry = (allowed, state, eligible, int(np.count_nonzero(eligible)),
                 None if whole else np.packbits(eligible, bitorder="little"))
        self._sets[id(allowed)] = entry
        return entry[2], entry[3], entry[4]


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


def shared_topics(query: np.ndarray, vectors: np.ndarray, topics: Sequence[dict], top: int = 3) -> list[list[dict]]:
    """For each row of ``vectors``, the topics that make it similar to ``query``: the largest terms of their cosine."""
    contribution = vectors * query
    order = np.argsort(-contribution, axis=1)[:, :top]
    picked = contribution[np.arange(len(contribution))[:, None], order]
    rounded = np.round(picked.astype(np.float64), 4)  # float32 rounded would print as 0.12340000271797180
    return [
        [{"id": topics[i]["id"], "name": topics[i]["name"], "weight": r} for i, w, r in zip(row, ws, rs) if w > 1e-4]
        for row, ws, rs in zip(order.tolist(), picked.tolist(), rounded.tolist())
    ]
