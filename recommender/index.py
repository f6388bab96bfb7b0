"""The index of topic vectors a version holds (the live copy each API process serves: ``recommender.live_index``).

A served version is memory-mapped from its files (``recommender.columns``), so an API
process is ready in milliseconds of load whatever the catalog's size, and the gunicorn
workers of a host share one copy through the page cache; what changed since the build
is a small overlay on top (see ``TopicIndex``).

Vectors are L2-normalised, so inner product is cosine similarity. An exact
scan costs about a millisecond per 100k items, which caps an API process at
a few hundred answers a second; large versions therefore carry an HNSW graph
(recall@10 above 0.99 against the exact scan, see ``bench/api.py``), and the
exact scan is kept for small catalogs and narrow filters, where it is both
cheap and the only way to be sure of ``k`` answers. The items like an item
(``similar``) are read from that item's row of nearest items, which the build
found once by walking the graph wider (``TopicIndex.like``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

import faiss
import numpy as np

from recommender import columns
from recommender.columns import NEIGHBOURS, VECTORS, ItemIds, SummaryTable
from recommender.ranking import EligibleSets, Eligibility
from recommender.store.items import Summary
from recommender.versions import FAISS_INDEX
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
#: Nearest items a graph version keeps per item, found by the build's own walk (at ``NEIGHBOURS_EF``): the items
#: like an item (``similar``) are read from its row, not walked for, while the row holds ``k`` eligible ones. A walk
#: was the largest part of a ``similar`` request at 1M items (cache misses over the graph).
NEIGHBOURS_KEPT = 32
#: The build's walk for the rows is wider than a query's: it runs once per item, and an error would stay.
NEIGHBOURS_EF = 64
#: Items whose rows the build finds in one batch (a parallel search: the build's OpenMP threads).
NEIGHBOURS_CHUNK = 20_000
#: Items whose summaries ``TopicIndex.save`` reads (one pipelined read from Redis) and writes at a time.
SAVE_CHUNK = 5000
#: What ``TopicIndex.save`` reads summaries through: the summary of each id, None for none (``Items.summaries``).
SummarySource = Callable[[Sequence[str]], Sequence[Summary | None]]


class TopicIndex:
    """Topic vectors by numeric id: an exact scan for small or narrow candidate sets, an HNSW graph beyond.

    Rows of ``vectors`` are indexed by the items' numeric ids, so a filter
    mask over nums selects rows directly. A version of at least
    ``GRAPH_MIN_ITEMS`` items is saved with an HNSW graph (FAISS, ids = nums)
    that answers a query in tens of microseconds where an exact scan of 100k
    items takes about a millisecond, and with each item's ``NEIGHBOURS_KEPT``
    nearest items (``neighbours``, by numeric id), which answer ``like``.

    A loaded index maps its version's files (``recommender.columns``): the vectors
    copy-on-write, the graph read-only (``IO_FLAG_MMAP_IFC``: an ``IndexIDMap`` over
    ``IndexHNSWFlat`` then holds 6 MB of private memory at 200k items where reading it
    took 80 MB; an ``IndexIDMap2`` adds its reverse map, 15 MB; ``IO_FLAG_MMAP`` maps
    nothing of either). A mapped graph cannot take new nodes, so items upserted since the
    load with another vector (``changed``) are scanned exactly beside every graph walk, graph
    hits are then rescored from ``vectors`` (a changed item's node is stale; with nothing changed
    the walk's own scores stand) and deletes are masked out; the next version rebuilds the graph.
    """

    def __init__(self, dim: int, item_ids: ItemIds | None = None, vectors: np.ndarray | None = None):
        self.dim = dim
        self.item_ids = item_ids or ItemIds.empty()
        self.vectors = np.zeros((0, dim), dtype=np.float32) if vectors is None else vectors
        self.present = np.zeros(len(self.vectors), dtype=bool)
        self.present[self.item_ids.base_nums()] = True
        self.graph: faiss.IndexIDMap | None = None
        self.nodes: np.ndarray | None = None  # by numeric id: True for the graph's items (``present`` at the load)
        self.neighbours: np.ndarray | None = None  # by numeric id: the build's nearest items (see ``like``)
        self.changed = np.zeros(0, dtype=np.int64)  # nums upserted since the load, sorted
        self.state, self._eligible = 0, EligibleSets()  # ``state`` moves whenever ``present`` does
        self._walks: dict[int, faiss.SearchParametersHNSW] = {}  # by efSearch, for walks without a selector
        self.ids: Mapping[int, str] = self.item_ids.ids
        self.nums: Mapping[str, int] = self.item_ids.nums

    @classmethod
    def built(cls, nums: np.ndarray, ids: Sequence[str], vectors: np.ndarray) -> "TopicIndex":
        """A version's index as a build makes it: the id columns and the vectors sized as ``save`` writes them, so a
        5M-item build holds arrays, not a dict entry per item (``upsert`` is for the changes since)."""
        nums = np.asarray(nums, dtype=np.int64)
        grid = np.zeros((columns.capacity(int(nums.max(initial=0))), vectors.shape[1]), dtype=np.float32)
        grid[nums] = vectors
        faiss.normalize_L2(grid)  # zero rows stay zero
        return cls(vectors.shape[1], ItemIds.of(nums, ids), grid)

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
        eligible, count, bits = self._eligible.of(allowed, self.present, self.state, self.nodes)
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

    def like(self, num: int, k: int, allowed: np.ndarray | None = None,
             exclude: Collection[int] = ()) -> list[tuple[int, float]]:
        """``search`` for the vector of item ``num`` (never the item itself), answered from its row of build-time
        neighbours when it can be.

        The row holds the build's nearest items, so while at least ``k`` of them are still eligible and unchanged,
        no other unchanged item can beat those (as far as the build's walk found them): the answer is the best ``k``
        of them and of the eligible items changed since the load (rescored from ``vectors``). An item changed since,
        or a row that cannot fill ``k`` (narrow filters, many deletes), walks the graph as ``search`` does.
        """
        vector = self.vector(num)
        if vector is None:
            return []
        rows = self.neighbours
        stale = len(self.changed) > 0 and _within(self.changed, num)
        if rows is None or num >= len(rows) or k > NEIGHBOURS_KEPT or stale:
            return self.search(vector, k, allowed, {*exclude, num})
        eligible, _, _ = self._eligible.of(allowed, self.present, self.state, self.nodes)
        nums = rows[num]
        nums = nums[(nums >= 0) & (nums < len(eligible))]
        nums = nums[eligible[nums]]
        if exclude:
            nums = nums[_kept(nums, exclude)]
        if len(self.changed):
            nums = nums[~np.isin(nums, self.changed)]
        if len(nums) < k:
            return self.search(vector, k, allowed, {*exclude, num})
        if len(self.changed):
            changed = self._changed_among(eligible)
            nums = np.concatenate([nums, changed[_kept(changed, {*exclude, num})]])
        return self._ranked(nums, self.vectors[nums] @ vector, k)

    def _exact_search(self, q: np.ndarray, k: int, eligible: np.ndarray) -> list[tuple[int, float]]:
        nums = np.flatnonzero(eligible)
        scores = self.vectors[nums] @ q
        top = np.argpartition(scores, -k)[-k:] if k < len(nums) else np.arange(len(nums))
        return self._ranked(nums[top], scores[top], k)

    def _graph_search(self, q: np.ndarray, k: int, eligible: np.ndarray, bits: np.ndarray | None, share: float,
                      excluded: np.ndarray) -> list[tuple[int, float]]:
        """The graph walk, under a selector of ``bits`` unless they are None (every node eligible). Its scores are
        the answer's unless items changed since the load: their nodes are stale, so every hit is rescored then."""
        assert self.graph is not None
        ef = int(max(EF_SEARCH, 2 * k) / share)
        if bits is None:  # one set of parameters per ef: making one costs a tenth of a 1M-item walk
            params = self._walks.get(ef) or self._walks.setdefault(ef, faiss.SearchParametersHNSW(efSearch=ef))
        else:
            params = faiss.SearchParametersHNSW(sel=faiss.IDSelectorBitmap(len(bits), faiss.swig_ptr(bits)),
                                                efSearch=ef)  # n counts bytes
        scores, found = self.graph.search(q.reshape(1, -1), k + GRAPH_EXTRA_HITS + len(excluded), params=params)
        hit = found[0] >= 0  # distinct: one node per item
        nums, scores = found[0][hit], scores[0][hit]
        if len(self.changed):
            nums = np.union1d(nums, self._changed_among(eligible))  # sorted, each num once
            scores = self.vectors[nums] @ q
        if len(excluded):
            keep = _kept(nums, excluded.tolist())
            nums, scores = nums[keep], scores[keep]
        return self._ranked(nums, scores, k)

    def _changed_among(self, eligible: np.ndarray) -> np.ndarray:
        """The items upserted since the load that ``eligible`` admits (scanned beside every answer)."""
        changed = self.changed[self.changed < len(eligible)]
        return changed[eligible[changed]]

    @staticmethod
    def _ranked(nums: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
        order = np.argsort(-scores, kind="stable")[:k]
        return list(zip(nums[order].tolist(), scores[order].tolist()))

    def save(self, directory: Path, summaries: SummarySource = lambda ids: [None] * len(ids)) -> None:
        """Write the version's columns: vectors, ids, an HNSW graph when the index is large enough to need one, and
        the items' summaries (what result lists show; ``summaries`` reads them, ``SAVE_CHUNK`` ids a call) with their
        filter fields (an item without one is never eligible). Nothing per item is held whole (see ``built``)."""
        nums = np.sort(np.fromiter(self.ids, dtype=np.int64, count=len(self)))
        top = int(nums.max(initial=0))
        rows = columns.capacity(top)
        vectors = self.vectors if len(self.vectors) == rows else columns.padded(self.vectors, rows, 0)
        columns.save(directory, VECTORS, vectors)  # removed rows are zero
        self.item_ids.save(directory)
        if len(self) >= GRAPH_MIN_ITEMS:
            graph = faiss.IndexIDMap(faiss.IndexHNSWFlat(self.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT))
            graph.add_with_ids(self.vectors[nums], nums)
            faiss.write_index(graph, str(directory / FAISS_INDEX))
            self._save_neighbours(directory, graph, nums)
            del graph
        eligibility = Eligibility()
        with SummaryTable.writing(directory, top) as add:
            for start in range(0, len(nums), SAVE_CHUNK):
                chunk = nums[start:start + SAVE_CHUNK]
                found = summaries([self.ids[n] for n in chunk.tolist()])
                for num, summary in zip(chunk.tolist(), found):
                    if summary is not None:
                        eligibility.set(num, summary.filter_fields)
                add(chunk, found)
        eligibility.save(directory, rows)

    def _save_neighbours(self, directory: Path, graph: faiss.Index, nums: np.ndarray) -> None:
        """Each item's ``NEIGHBOURS_KEPT`` nearest other items as the graph finds them, by numeric id up to the
        largest (``like``; items indexed later walk), written a chunk of numbers at a time."""
        rows, params = int(nums.max()) + 1, faiss.SearchParametersHNSW(efSearch=NEIGHBOURS_EF)
        dtype = np.dtype(np.int32 if rows < 2**31 else np.int64)  # 128 bytes a row
        with columns.appended(directory, NEIGHBOURS, dtype) as write:
            for start in range(0, rows, NEIGHBOURS_CHUNK):
                block = np.full((min(NEIGHBOURS_CHUNK, rows - start), NEIGHBOURS_KEPT), -1, dtype=np.int64)
                here = nums[(nums >= start) & (nums < start + len(block))]
                if len(here):
                    _, found = graph.search(self.vectors[here], NEIGHBOURS_KEPT + 1, params=params)
                    others = found != here[:, None]  # the item itself, wherever the walk put it
                    order = np.argsort(~others, axis=1, kind="stable")[:, :NEIGHBOURS_KEPT]  # others first, in order
                    block[here - start] = np.where(np.take_along_axis(others, order, axis=1),
                                                   np.take_along_axis(found, order, axis=1), -1)
                write(block.reshape(-1))

    @classmethod
    def load(cls, directory: Path) -> "TopicIndex":
        if not (directory / VECTORS).is_file():
            raise FileNotFoundError(f"{directory} holds no {VECTORS}: a version written before versions were "
                                    "columns; rebuild it with `vistas reindex --reuse-features`")
        vectors = columns.load(directory, VECTORS)
        self = cls(vectors.shape[1], ItemIds.load(directory), vectors)
        if (directory / FAISS_INDEX).is_file():
            self.graph = faiss.read_index(str(directory / FAISS_INDEX), faiss.IO_FLAG_MMAP_IFC)
            self.nodes = self.present.copy()
        if (directory / NEIGHBOURS).is_file():
            self.neighbours = columns.load(directory, NEIGHBOURS).reshape(-1, NEIGHBOURS_KEPT)
        return self


def _within(sorted_nums: np.ndarray, num: int) -> bool:
    """Whether ``num`` is in an ascending array (a binary search, not a pass over it)."""
    at = int(np.searchsorted(sorted_nums, num))
    return at < len(sorted_nums) and int(sorted_nums[at]) == num


def _kept(nums: np.ndarray, exclude: Collection[int]) -> np.ndarray:
    """Which of ``nums`` are not in ``exclude``: a comparison each for a few (the query item), np.isin's sort past."""
    if len(exclude) > 8:
        return ~np.isin(nums, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))
    keep = np.ones(len(nums), dtype=bool)
    for num in exclude:
        keep &= nums != num
    return keep
