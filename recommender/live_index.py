"""The index version an API process serves, kept current from Redis: swapped in whole, caught up by the changes stream.

``recommender.index.TopicIndex`` is what a version holds; this module is how a process keeps one
live: the first version loads at the first request, later ones on a background thread while the
old one goes on answering, and every write made anywhere is applied before the next query.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recommender.columns import SummaryTable
from recommender.gaps import current_items, log_gap
from recommender.index import TopicIndex
from recommender.named_topics import TopicNames
from recommender.ranking import Eligibility, Filters
from recommender.store import Store
from recommender.store.changes import CHANGES_PAGE, Batch, Change
from recommender.store.feed import ChangeFeed
from recommender.store.items import Item, Status, Summary
from recommender.versions import VersionStore

log = logging.getLogger(__name__)


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

    def summaries(self, item_ids: list[str], nums: Sequence[int] | None = None) -> list[Summary | None]:
        """What result lists show of these items, from the served version's columns (kept exact by the changes
        stream): only items changed since the build, and those it lacks, cost a round trip, once. ``nums``, when
        the caller has them, are the items' numbers in the served index (a search's hits): no id is looked up."""
        served = self._served
        if served is None:
            return self.store.items.summaries(item_ids)
        if nums is None:
            nums = served.index.item_ids.base_nums_of(item_ids)  # an id the columns serve keeps their number
        return served.summaries.get_many(item_ids, nums, self.store.items.summaries)

    def search(self, query: np.ndarray, k: int, filters: Filters) -> list[tuple[int, float]]:
        """Top ``k`` eligible items for a query vector."""
        assert self._served is not None
        served = self._served
        return served.index.search(query, k, allowed=served.eligibility.base(filters), exclude=filters.exclude)

    def like(self, num: int, k: int, filters: Filters) -> list[tuple[int, float]]:
        """Top ``k`` eligible items like item ``num`` (its own vector's, see ``TopicIndex.like``)."""
        assert self._served is not None
        served = self._served
        return served.index.like(num, k, allowed=served.eligibility.base(filters), exclude=filters.exclude)
