"""The in-memory FAISS index of topic vectors, and the live copy each API process serves.

Vectors are L2-normalised, so inner product is cosine similarity. Exact
search (``IndexFlatIP``) costs about 30 multiply-adds per item: a million
items answer in a few milliseconds, so no approximate index is needed at
this dimension and size.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

import faiss
import numpy as np

from recommender.catalog import DELETE, DELETED, Catalog, Item
from recommender.ranking import Eligibility, Filters, id_selector
from recommender.versions import IDS, INDEX, VersionStore

log = logging.getLogger(__name__)
#: Item summaries cached per API process; past this many the cache starts over.
SUMMARY_CACHE_SIZE = 200_000


class TopicIndex:
    """FAISS inner-product index keyed by the items' numeric ids, with the id mapping beside it."""

    def __init__(self, dim: int):
        self.dim = dim
        self.faiss = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.ids: dict[int, str] = {}
        self.nums: dict[str, int] = {}

    def __len__(self) -> int:
        return self.faiss.ntotal

    def __contains__(self, num: int) -> bool:
        return num in self.ids

    def upsert(self, nums: np.ndarray, ids: list[str], vectors: np.ndarray) -> None:
        nums = np.asarray(nums, dtype=np.int64)
        present = np.array([n in self.ids for n in nums.tolist()], dtype=bool)
        if present.any():
            self.faiss.remove_ids(nums[present])
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(nums), self.dim)
        faiss.normalize_L2(vectors)
        self.faiss.add_with_ids(vectors, nums)
        self.ids.update(zip(nums.tolist(), ids))
        self.nums.update(zip(ids, nums.tolist()))

    def remove(self, num: int) -> None:
        item_id = self.ids.pop(num, None)
        if item_id is not None:
            self.nums.pop(item_id, None)
            self.faiss.remove_ids(np.array([num], dtype=np.int64))

    def vector(self, num: int) -> np.ndarray | None:
        if num not in self.ids:
            return None
        return self.faiss.reconstruct(num)

    def vectors(self, nums: list[int]) -> np.ndarray:
        return self.faiss.reconstruct_batch(np.asarray(nums, dtype=np.int64))

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top ``k`` (num, cosine) pairs, best first, among nums where ``allowed`` is True."""
        k = min(len(self), k)
        if k <= 0:
            return []
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim).copy()
        faiss.normalize_L2(q)
        if allowed is None:
            scores, nums = self.faiss.search(q, k)
        else:
            selector, _bits = id_selector(allowed)
            scores, nums = self.faiss.search(q, k, params=faiss.SearchParameters(sel=selector))
        return [(int(n), float(s)) for n, s in zip(nums[0], scores[0]) if n >= 0]

    def save(self, directory: Path) -> None:
        faiss.write_index(self.faiss, str(directory / INDEX))
        (directory / IDS).write_text(json.dumps(list(self.ids.items())))

    @classmethod
    def load(cls, directory: Path) -> "TopicIndex":
        index = faiss.read_index(str(directory / INDEX))
        self = cls(index.d)
        self.faiss = index
        self.ids = {int(n): i for n, i in json.loads((directory / IDS).read_text())}
        self.nums = {i: n for n, i in self.ids.items()}
        return self


class LiveIndex:
    """The version an API process serves, kept current from Redis.

    ``sync`` runs before each query and costs one round trip when nothing
    changed: it follows the ``current`` version pointer and applies the changes
    stream (upserts, deletes) written since the snapshot, so items indexed after
    the version was built are served too, a delete made through any process is
    seen by every process, and the cached item summaries are never stale.
    """

    def __init__(self, catalog: Catalog, store: VersionStore, sync_interval: float):
        self.catalog = catalog
        self.store = store
        self.sync_interval = sync_interval
        self.version = 0
        self.index: TopicIndex | None = None
        self.topics: list[dict] = []
        self.eligibility = Eligibility()
        self._summaries: dict[str, Item] = {}
        self._last_change = "0-0"
        self._last_sync = 0.0
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.index is not None

    def sync(self, force: bool = False) -> None:
        """Catch up with Redis (one round trip when nothing changed); rate-limited by ``sync_interval``."""
        now = time.monotonic()
        if not force and now - self._last_sync < self.sync_interval:
            return
        with self._lock:
            self._last_sync = now
            current, changes = self.catalog.poll(self._last_change)
            if current and current != self.version:
                self._load(current)
                changes = self.catalog.changes_after(self._last_change)
            if self.index is not None:
                self._apply_changes(changes)

    def _load(self, version: int) -> None:
        if not self.store.exists(version):
            log.error("index version %d is current in Redis but missing under %s", version, self.store.root)
            return
        started = time.monotonic()
        path = self.store.path(version)
        manifest = self.store.manifest(version)
        index = TopicIndex.load(path)
        eligibility = Eligibility()
        ids = list(index.ids.items())
        for start in range(0, len(ids), 5000):
            chunk = ids[start:start + 5000]
            for (num, _), fields in zip(chunk, self.catalog.filter_fields([i for _, i in chunk])):
                eligibility.set(num, fields)
        self.index, self.topics, self.version = index, self.store.topics(version), version
        self.eligibility = eligibility
        self._summaries = {}
        self._last_change = manifest.get("changes_from", "0-0")
        log.info("loaded index version %d (%d items) in %.2fs", version, len(index), time.monotonic() - started)

    def _apply_changes(self, changes: list[tuple[str, dict[str, str]]]) -> None:
        assert self.index is not None
        while changes:
            upserts = {}
            for stream_id, change in changes:
                num = int(change["num"])
                self._summaries.pop(change["id"], None)
                if change["op"] == DELETE:
                    upserts.pop(num, None)
                    self.remove(num)
                else:
                    upserts[num] = change["id"]
                self._last_change = stream_id
            self._apply_upserts(upserts)
            changes = self.catalog.changes_after(self._last_change)

    def _apply_upserts(self, upserts: dict[int, str]) -> None:
        assert self.index is not None
        items = self.catalog.get_many(upserts.values())
        nums, ids, vectors = [], [], []
        for num, item in zip(upserts, items):
            if item is None or item.vector is None or item.status == DELETED:
                self.remove(num)
            elif item.version == self.version:
                nums.append(num)
                ids.append(item.id)
                vectors.append(item.vector)
                self.eligibility.set(num, {f: str(getattr(item, f)) for f in self.catalog.FILTER_FIELDS})
        if nums:
            self.index.upsert(np.array(nums), ids, np.stack(vectors))

    def remove(self, num: int) -> None:
        """Drop an item from answers in this process now (DELETE does this before it returns)."""
        if self.index is not None:
            self.index.remove(num)
        self.eligibility.drop(num)

    def summaries(self, item_ids: list[str]) -> list[Item | None]:
        """Result-list fields of items, from this process's cache (kept exact by the changes stream)."""
        missing = [i for i in item_ids if i not in self._summaries]
        if missing:
            if len(self._summaries) + len(missing) > SUMMARY_CACHE_SIZE:
                self._summaries.clear()
            for item_id, item in zip(missing, self.catalog.summaries(missing)):
                if item is not None:
                    self._summaries[item_id] = item
        return [self._summaries.get(i) for i in item_ids]

    def search(self, query: np.ndarray, k: int, filters: Filters) -> list[tuple[int, float]]:
        """Top ``k`` eligible items for a query vector."""
        assert self.index is not None
        return self.index.search(query, k, allowed=self.eligibility.mask(filters))
