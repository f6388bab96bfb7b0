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
from dataclasses import dataclass, field
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


@dataclass
class Served:
    """One loaded version with everything a request reads; swapped in as a whole."""

    version: int
    index: TopicIndex
    topics: list[dict]
    eligibility: Eligibility
    last_change: str  # the changes stream entry applied last
    summaries: dict[str, Item] = field(default_factory=dict)  # result-list fields, kept exact by the changes


Changes = list[tuple[str, dict[str, str]]]


class LiveIndex:
    """The version an API process serves, kept current from Redis.

    ``sync`` runs before each query and costs one round trip when nothing
    changed: it applies the changes
    stream (upserts, deletes) written since the snapshot, so items indexed
    after the version was built are served too, a delete made through any
    process is seen by every process, and the cached item summaries are never
    stale. When the ``current`` pointer moves, the new version is loaded and
    caught up on a background thread while requests go on with the old one;
    the next ``sync`` swaps it in as a whole. A request therefore sees one
    version from start to end and never waits for a load (except the very
    first, when there is nothing to serve yet).
    """

    def __init__(self, catalog: Catalog, store: VersionStore):
        self.catalog = catalog
        self.store = store
        self._served: Served | None = None
        self._loaded: Served | None = None  # loaded in the background, waiting for the next sync
        self._loading = 0  # the version being loaded in the background
        self._missing = 0  # a current version whose directory is missing (logged once)
        self._lock = threading.RLock()

    @property
    def ready(self) -> bool:
        return self._served is not None

    @property
    def version(self) -> int:
        return self._served.version if self._served else 0

    @property
    def index(self) -> TopicIndex | None:
        return self._served.index if self._served else None

    @property
    def topics(self) -> list[dict]:
        return self._served.topics if self._served else []

    @property
    def eligibility(self) -> Eligibility:
        return self._served.eligibility if self._served else Eligibility()

    def sync(self) -> None:
        """Swap in a version loaded meanwhile, then catch up with Redis."""
        with self._lock:
            if self._loaded is not None:
                old, self._served, self._loaded = self.version, self._loaded, None
                log.info("now serving index version %d (was %d)", self.version, old)
            if self._served is None:
                current, changes = self.catalog.current_version(), []
            else:
                current, changes = self.catalog.poll(self._served.last_change)
            if current and current not in (self.version, self._loading) and self._on_disk(current):
                if self._served is None:
                    self._served = self._load(current)  # nothing to serve yet: load it now
                else:
                    self._loading = current
                    threading.Thread(target=self._load_in_background, args=(current,), daemon=True,
                                     name=f"load-version-{current}").start()
            if self._served is not None:
                self._apply_changes(self._served, changes)

    def _load_in_background(self, version: int) -> None:
        try:
            loaded = self._load(version)
        except Exception:  # noqa: BLE001 - keep serving the old version; the next sync tries again
            log.exception("loading index version %d failed; still serving %d", version, self.version)
            loaded = None
        with self._lock:
            if loaded is not None and self.catalog.current_version() == version:
                self._loaded = loaded
            self._loading = 0

    def _on_disk(self, version: int) -> bool:
        if self.store.exists(version):
            return True
        if self._missing != version:
            log.error("index version %d is current in Redis but missing under %s", version, self.store.root)
            self._missing = version
        return False

    def _load(self, version: int) -> Served:
        """Read a version from disk, with its items' filter fields, caught up with the changes stream."""
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
        served = Served(version, index, self.store.topics(version), eligibility, manifest.get("changes_from", "0-0"))
        self._apply_changes(served)
        log.info("loaded index version %d (%d items) in %.2fs", version, len(index), time.monotonic() - started)
        return served

    def _apply_changes(self, served: Served, changes: Changes | None = None) -> None:
        """Apply ``changes`` (already fetched), then any later ones, to ``served``."""
        if not changes:
            changes = self.catalog.changes_after(served.last_change)
        while changes:
            upserts = {}
            for stream_id, change in changes:
                num = int(change["num"])
                served.summaries.pop(change["id"], None)
                if change["op"] == DELETE:
                    upserts.pop(num, None)
                    self._remove(served, num)
                else:
                    upserts[num] = change["id"]
                served.last_change = stream_id
            self._apply_upserts(served, upserts)
            changes = self.catalog.changes_after(served.last_change)

    def _apply_upserts(self, served: Served, upserts: dict[int, str]) -> None:
        items = self.catalog.get_many(upserts.values())
        nums, ids, vectors = [], [], []
        for num, item in zip(upserts, items):
            if item is None or item.vector is None or item.status == DELETED:
                self._remove(served, num)
            elif item.version == served.version:
                nums.append(num)
                ids.append(item.id)
                vectors.append(item.vector)
                served.eligibility.set(num, {f: str(getattr(item, f)) for f in self.catalog.FILTER_FIELDS})
        if nums:
            served.index.upsert(np.array(nums), ids, np.stack(vectors))

    @staticmethod
    def _remove(served: Served, num: int) -> None:
        served.index.remove(num)
        served.eligibility.drop(num)

    def remove(self, num: int) -> None:
        """Drop an item from answers in this process now (DELETE does this before it returns)."""
        with self._lock:
            for served in (self._served, self._loaded):
                if served is not None:
                    self._remove(served, num)

    def summaries(self, item_ids: list[str]) -> list[Item | None]:
        """Result-list fields of items, from this process's cache (kept exact by the changes stream)."""
        served = self._served
        if served is None:
            return self.catalog.summaries(item_ids)
        cache = served.summaries
        missing = [i for i in item_ids if i not in cache]
        if missing:
            if len(cache) + len(missing) > SUMMARY_CACHE_SIZE:
                cache.clear()
            for item_id, item in zip(missing, self.catalog.summaries(missing)):
                if item is not None:
                    cache[item_id] = item
        return [cache.get(i) for i in item_ids]

    def search(self, query: np.ndarray, k: int, filters: Filters) -> list[tuple[int, float]]:
        """Top ``k`` eligible items for a query vector."""
        assert self._served is not None
        return self._served.index.search(query, k, allowed=self._served.eligibility.mask(filters))
