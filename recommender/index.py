"""The index of topic vectors, and the live copy each API process serves.

A served version is memory-mapped from its files (``recommender.columns``), so an API
process is ready in milliseconds of load whatever the catalog's size, and the gunicorn
workers of a host share one copy through the page cache; what changed since the build
is a small overlay on top (see ``TopicIndex`` and ``LiveIndex``).

Vectors are L2-normalised, so inner product is cosine similarity. An exact
scan costs about a millisecond per 100k items, which caps an API process at
a few hundred answers a second; large versions therefore carry an HNSW graph
(recall@10 above 0.99 against the exact scan, see ``bench/api.py``), and the
exact scan is kept for small catalogs and narrow filters, where it is both
cheap and the only way to be sure of ``k`` answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from recommender import columns
from recommender.columns import VECTORS, ItemIds, SummaryTable
from recommender.gaps import current_items, log_gap
from recommender.named_topics import TopicNames
from recommender.ranking import EligibleSets, Eligibility, Filters
from recommender.store import Store
from recommender.store.changes import CHANGES_PAGE, Batch, Change
from recommender.store.feed import ChangeFeed
from recommender.store.items import Item, Status, Summary
from recommender.versions import FAISS_INDEX, VersionStore

log = logging.getLogger(__name__)
#: A version with fewer items is saved without a graph: its exact scan takes under 0.2 ms.
GRAPH_MIN_ITEMS = 20_000
#: Answers with at most this many eligible items are exact scans of just those items.
EXACT_MAX_ELIGIBLE = 10_000
#: Below this share of eligible items a graph walk meets mostly ineligible nodes: scan exactly instead.
GRAPH_MIN_SHARE = 0.05
#: HNSW links per node: 0.998 recall@10 at EF_SEARCH on 100k topic vectors, 256 bytes a node.
HNSW_M = 32
#: Candidates the graph walk keeps when every item is eligible; divided by the eligible share otherwise.
EF_SEARCH = 32
#: Graph hits asked beyond k, to cover stale nodes of items updated since the build.
GRAPH_EXTRA_HITS = 4


class TopicIndex:
    """Topic vectors by numeric id: an exact scan for small or narrow candidate sets, an HNSW graph beyond.

    Rows of ``vectors`` are indexed by the items' numeric ids, so a filter
    mask over nums selects rows directly. A version of at least
    ``GRAPH_MIN_ITEMS`` items is saved with an HNSW graph (FAISS, ids = nums)
    that answers a query in tens of microseconds where an exact scan of 100k
    items takes about a millisecond.

    A loaded index maps its version's files (``recommender.columns``): the vectors
    copy-on-write, the graph read-only (``IO_FLAG_MMAP_IFC``: an ``IndexIDMap`` over
    ``IndexHNSWFlat`` then holds 6 MB of private memory at 200k items where reading it
    took 80 MB; an ``IndexIDMap2`` adds its reverse map, 15 MB; ``IO_FLAG_MMAP`` maps
    nothing of either). A mapped graph cannot take new nodes, so items upserted since the
    load with another vector (``changed``) are scanned exactly beside every graph walk, graph
    hits are rescored from ``vectors`` (a changed item's node is stale) and deletes are masked
    out; the next version rebuilds the graph.
    """

    def __init__(self, dim: int, item_ids: ItemIds | None = None, vectors: np.ndarray | None = None):
        self.dim = dim
        self.item_ids = item_ids or ItemIds.empty()
        self.vectors = np.zeros((0, dim), dtype=np.float32) if vectors is None else vectors
        self.present = np.zeros(len(self.vectors), dtype=bool)
        self.present[self.item_ids.base_nums()] = True
        self.graph: faiss.IndexIDMap | None = None
        self.changed = np.zeros(0, dtype=np.int64)  # nums upserted since the load, sorted
        self.state, self._eligible = 0, EligibleSets()  # ``state`` moves whenever ``present`` does
        self.ids: Mapping[int, str] = self.item_ids.ids
        self.nums: Mapping[str, int] = self.item_ids.nums

    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, num: int) -> bool:
        return num in self.ids

    def _grow(self, top: int) -> None:
        """Room for ``top``: past a loaded version's headroom, a copy in this process's memory."""
        self.state += 1
        if top >= len(self.present):
            rows = max(top + 1, len(self.present) * 2, 1024)
            self.vectors, self.present = columns.padded(self.vectors, rows, 0), columns.padded(self.present, rows, False)

    def upsert(self, nums: np.ndarray, ids: list[str], vectors: np.ndarray) -> None:
        nums = np.asarray(nums, dtype=np.int64)
        if not len(nums):
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(nums), self.dim).copy()
        faiss.normalize_L2(vectors)
        self._grow(int(nums.max()))
        if self.graph is not None:  # the graph walk misses what moved: scan those exactly
            moved = np.any(self.vectors[nums] != vectors, axis=1)
            self.changed = np.union1d(self.changed, nums[moved])
        self.vectors[nums] = vectors
        self.present[nums] = True
        for num, item_id in zip(nums.tolist(), ids):
            self.item_ids.set(num, item_id)

    def remove(self, num: int) -> None:
        if self.item_ids.remove(num) is not None:
            self.state += 1
            self.present[num] = False
            self.vectors[num] = 0

    def vector(self, num: int) -> np.ndarray | None:
        return self.vectors[num] if num in self.ids else None
    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None,
               exclude: Collection[int] = ()) -> list[tuple[int, float]]:
        """Top ``k`` (num, cosine) pairs, best first, among nums where ``allowed`` is True, but ``exclude``.

        Exact whenever the graph could miss: no graph, few eligible items, or a
        filter so narrow that the graph walk would mostly meet ineligible nodes;
        a graph answer shorter than ``k`` is redone exactly, so filters never
        shorten an answer. ``allowed`` is read, never written (see ``EligibleSets``).
        """
        eligible, count, bits = self._eligible.of(allowed, self.present, self.state)
        excluded = np.array([n for n in exclude if 0 <= n < len(eligible) and eligible[n]], dtype=np.int64)
        count -= len(excluded)
        k = min(k, count)
        if k <= 0:
            return []
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, self.dim).copy()
        faiss.normalize_L2(q)
        share = count / max(len(self), 1)
        if self.graph is not None and count > EXACT_MAX_ELIGIBLE and share >= GRAPH_MIN_SHARE:
            hits = self._graph_search(q[0], k, eligible, bits, share, excluded)
            if len(hits) == k:
                return hits
        if len(excluded):
            eligible = eligible.copy()
            eligible[excluded] = False
        return self._exact_search(q[0], k, eligible)

    def _exact_search(self, q: np.ndarray, k: int, eligible: np.ndarray) -> list[tuple[int, float]]:
        nums = np.flatnonzero(eligible)
        scores = self.vectors[nums] @ q
        top = np.argpartition(scores, -k)[-k:] if k < len(nums) else np.arange(len(nums))
        return self._ranked(nums[top], scores[top], k)

    def _graph_search(self, q: np.ndarray, k: int, eligible: np.ndarray, bits: np.ndarray, share: float,
                      excluded: np.ndarray) -> list[tuple[int, float]]:
        assert self.graph is not None
        params = faiss.SearchParametersHNSW(
            sel=faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits)),  # n counts bytes
            efSearch=int(max(EF_SEARCH, 2 * k) / share),
        )
        _, found = self.graph.search(q.reshape(1, -1), k + GRAPH_EXTRA_HITS + len(excluded), params=params)
        nums = found[0][found[0] >= 0]  # distinct: one node per item
        if len(self.changed):
            changed = self.changed[self.changed < len(eligible)]
            nums = np.union1d(nums, changed[eligible[changed]])  # sorted, each num once
        for num in excluded.tolist():  # a few (the query item): a comparison each, not np.isin's sort
            nums = nums[nums != num]
        return self._ranked(nums, self.vectors[nums] @ q, k)

    @staticmethod
    def _ranked(nums: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
        order = np.argsort(-scores, kind="stable")[:k]
        return [(int(nums[i]), float(scores[i])) for i in order]

    def save(self, directory: Path, summaries: Sequence[Summary | None] = ()) -> None:
        """Write the version's columns: vectors, ids, an HNSW graph when the index is large enough to need one, and
        the items' ``summaries`` (what result lists show) with their filter fields (an item without one is never
        eligible)."""
        nums = np.fromiter(self.ids, dtype=np.int64, count=len(self))
        rows = columns.capacity(int(nums.max(initial=0)))
        columns.save(directory, VECTORS, columns.padded(self.vectors, rows, 0))  # removed rows are zero
        self.item_ids.save(directory)
        if len(self) >= GRAPH_MIN_ITEMS:
            graph = faiss.IndexIDMap(faiss.IndexHNSWFlat(self.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT))
            graph.add_with_ids(self.vectors[nums], nums)
            faiss.write_index(graph, str(directory / FAISS_INDEX))
        by_id = {s.id: s for s in summaries if s is not None}
        ordered = [by_id.get(self.ids[int(n)]) for n in nums]
        eligibility = Eligibility()
        for num, summary in zip(nums.tolist(), ordered):
            if summary is not None:
                eligibility.set(num, summary.filter_fields)
        eligibility.save(directory, rows)
        SummaryTable.save(directory, nums, ordered)

    @classmethod
    def load(cls, directory: Path) -> "TopicIndex":
        if not (directory / VECTORS).is_file():
            raise FileNotFoundError(f"{directory} holds no {VECTORS}: a version written before versions were "
                                    "columns; rebuild it with `vistas reindex --reuse-features`")
        vectors = columns.load(directory, VECTORS)
        self = cls(vectors.shape[1], ItemIds.load(directory), vectors)
        if (directory / FAISS_INDEX).is_file():
            self.graph = faiss.read_index(str(directory / FAISS_INDEX), faiss.IO_FLAG_MMAP_IFC)
        return self


@dataclass
class Served:
    """One loaded version with everything a request reads; swapped in as a whole."""

    version: int
    index: TopicIndex
    topics: list[dict]
    eligibility: Eligibility
    last_change: str  # the changes stream entry applied last
    summaries: SummaryTable  # the version's, kept exact by the changes stream
    gapped: bool = False  # changes it needed were trimmed from the stream: a reload from Redis replaces it


class LiveIndex:
    """The version an API process serves, kept current from Redis.

    ``sync`` runs before each query. It applies the changes stream (upserts,
    deletes) written since the snapshot, so items indexed after the version
    was built are served too, a delete made through any process is seen by
    every process, and the cached item summaries are never stale; when
    nothing changed, Redis has pushed nothing and it costs no round trip (see
    ``recommender.store.feed``). When the ``current`` pointer moves, the new version is loaded and
    caught up on a background thread while requests go on with the old one;
    the next ``sync`` swaps it in as a whole. A request therefore sees one
    version from start to end and never waits for a load (except the very
    first, when there is nothing to serve yet).
    """

    def __init__(self, store: Store, files: VersionStore):
        self.store = store
        self.files = files
        self._served: Served | None = None
        self._loaded: Served | None = None  # loaded in the background, waiting for the next sync
        self._loading = 0  # the version being loaded in the background
        self._missing = 0  # a current version whose directory is missing (logged once)
        self._lock = threading.RLock()
        self.feed = ChangeFeed(store.changes)
        self.names = TopicNames(store.versions)

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
        """The served version's topics, in vector column order, under the names merchandisers gave them."""
        return self.names.apply(self._served.topics) if self._served else []

    @property
    def eligibility(self) -> Eligibility:
        return self._served.eligibility if self._served else Eligibility()

    def sync(self) -> None:
        """Swap in a version loaded meanwhile, then catch up with Redis."""
        with self._lock:
            if self._loaded is not None:
                old, self._served, self._loaded = self.version, self._loaded, None
                log.info("now serving index version %d (was %d)", self.version, old)
                self.feed.expect_change()  # the new version caught up when it was loaded, not since
            if self._served is None:
                current, batch = self.store.versions.current(), Batch([], False)
            else:
                polled = self.feed.poll(self._served.last_change)
                if polled is None:
                    return
                current, batch = polled
            gapped = self._served is not None and self._served.gapped
            if current and (current != self.version or gapped) and current != self._loading:
                self.feed.expect_change()  # keep asking until that version is served
                if self._on_disk(current):
                    if self._served is None:
                        self._served = self._load(current)  # nothing to serve yet: load it now
                    else:
                        self._loading = current
                        threading.Thread(target=self._load_in_background, args=(current,), daemon=True,
                                         name=f"load-version-{current}").start()
            if self._served is not None:
                self._apply_changes(self._served, batch)

    def _load_in_background(self, version: int) -> None:
        try:
            loaded = self._load(version)
        except Exception:  # noqa: BLE001 - keep serving the old version; the next sync tries again
            log.exception("loading index version %d failed; still serving %d", version, self.version)
            loaded = None
        with self._lock:
            if loaded is not None and self.store.versions.current() == version:
                self._loaded = loaded
            self._loading = 0
            self.feed.expect_change()  # the next sync swaps, or looks at the pointer again

    def _on_disk(self, version: int) -> bool:
        if self.files.exists(version):
            return True
        if self._missing != version:
            log.error("index version %d is current in Redis but missing under %s", version, self.files.root)
            self._missing = version
        return False

    def _load(self, version: int) -> Served:
        """Map a version's files (no per-item work, no item read from Redis), caught up with the changes stream."""
        started = time.monotonic()
        path = self.files.path(version)
        manifest = self.files.manifest(version)
        index = TopicIndex.load(path)
        served = Served(version, index, self.files.topics(version), Eligibility.load(path),
                        manifest.get("changes_from", "0-0"), SummaryTable.load(path))
        if not self.store.changes.kept_after(served.last_change):  # changes it needs were trimmed away
            pages = current_items(self.store.items, index.ids, version, served.last_change)
            served.last_change = self.store.changes.position()  # before the items are read: nothing is missed
            served.summaries.forget_all()  # read again per request, like items changed since the build
            for page in pages:
                self._apply_items(served, page)
        self._apply_changes(served)
        log.info("loaded index version %d (%d items) in %.2fs", version, len(index), time.monotonic() - started)
        return served

    def _apply_changes(self, served: Served, batch: Batch | None = None) -> None:
        """Apply ``batch`` (as ``poll`` fetched it; fetched here when None), and any later changes, to ``served``."""
        batch = self.store.changes.since(served.last_change) if batch is None else batch
        while True:
            if batch.suspect and not served.gapped and not self.store.changes.kept_after(served.last_change):
                log_gap(served.version, served.last_change)
                served.gapped = True  # the next sync reloads it
            changes = batch.changes
            if not changes:
                break
            upserts = {}
            for stream_id, change in changes:
                num = int(change["num"])
                served.summaries.forget(change["id"])
                if change["op"] == Change.DELETE:
                    upserts.pop(num, None)
                    self._remove(served, num)
                else:
                    upserts[num] = change["id"]
                served.last_change = stream_id
            self._apply_items(served, list(zip(upserts, self.store.items.get_many(upserts.values()))))
            if len(changes) < CHANGES_PAGE:
                break
            batch = self.store.changes.since(served.last_change)

    def _apply_items(self, served: Served, items: list[tuple[int, Item | None]]) -> None:
        """Serve each item's vector when Redis has one of ``served``'s version; drop the deleted and unindexed."""
        nums, ids, vectors = [], [], []
        for num, item in items:
            if item is None or item.vector is None or item.status == Status.DELETED:
                self._remove(served, num)
            elif item.version == served.version:
                nums.append(num)
                ids.append(item.id)
                vectors.append(item.vector)
                served.eligibility.set(num, item.filter_fields)
        if nums:
            served.index.upsert(np.array(nums), ids, np.stack(vectors))

    @staticmethod
    def _remove(served: Served, num: int) -> None:
        served.index.remove(num)
        served.eligibility.drop(num)

    def position(self) -> tuple[int, str] | None:
        """The served version and the last change applied to it (what `vistas status` is told)."""
        return (self._served.version, self._served.last_change) if self._served else None

    def remove(self, num: int) -> None:
        """Drop an item from answers in this process now (DELETE does this before it returns)."""
        with self._lock:
            for served in (self._served, self._loaded):
                if served is not None:
                    self._remove(served, num)

    def summaries(self, item_ids: list[str]) -> list[Summary | None]:
        """What result lists show of these items, from the served version's columns (kept exact by the changes
        stream): only items changed since the build, and those it lacks, cost a round trip, once."""
        served = self._served
        if served is None:
            return self.store.items.summaries(item_ids)
        return served.summaries.get_many(item_ids, served.index.item_ids.base_nums_of, self.store.items.summaries)

    def search(self, query: np.ndarray, k: int, filters: Filters) -> list[tuple[int, float]]:
        """Top ``k`` eligible items for a query vector."""
        assert self._served is not None
        served = self._served
        return served.index.search(query, k, allowed=served.eligibility.base(filters), exclude=filters.exclude)
