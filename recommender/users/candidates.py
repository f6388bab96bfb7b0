"""One user's recommendations without scoring the whole catalog: candidates drawn per source, every source
scored on their union only, and reasons for the final ``k`` only.

Why: scoring every source densely over 100k items cost 5.1 ms of a core per request (the dense matrices,
four z-scores over the catalog and the reasons' sparse slices); this path scores a few hundred to a few
thousand items (``bench/users_latency.py`` prints both in one run).

Candidates, each among the items the user may get (window open, unseen, allowed by the client's filters):

* ``als``: the top :data:`PER_SOURCE` of the folded-in user's factor scores (one dense product: 0.15 ms);
* ``knn``, ``sequence``: the top :data:`PER_SOURCE` of their sparse rows, items new since training included
  (they borrow their neighbours' scores, as in the dense path);
* ``content``: the nearest items to each of the user's strongest history items (:class:`ContentIndex`);
* ``trending``, ``popular``: the top :data:`PER_SOURCE` of the shared scores.

Invariant: the z-scores are the dense path's (:meth:`HybridModel.source_scores`): each source is normalised
by its mean and deviation over *every* item the user may get, not over the candidates. They are exact for
``als`` (from its dense scores) and for ``knn`` and ``sequence`` (the items outside their sparse rows score
0), and for ``content`` exact up to :data:`STAT_SAMPLE` items, estimated from a fixed sample of that many
beyond. So the blended top ``k`` is the dense one whenever it lies among the candidates. With fewer than
``k`` candidates every item the user may get is scored. ``vistas eval --users`` chooses the weights on these
same candidates (:meth:`CandidateServing.candidates`), each validation request as the API answers it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from recommender.users.config import SOURCES, History, Rec, power, weights_for

#: Candidates per source: at 200 the union held 99.9% of the dense top 10 at 100k items (``bench/users_latency.py``)
#: and all of it on catalogs within the exact limits below (``tests/test_candidates.py``).
PER_SOURCE = 200
#: The shared sources' best items, kept with their scores once a minute: filters rarely leave fewer than one in 8
#: of them allowed; when one does, the whole order is sorted (once that minute).
SHARED_HEAD = 8 * PER_SOURCE
#: Content candidates, shared among the history items queried (at least :data:`PER_QUERY_MIN` each).
CONTENT_CANDIDATES = 400
PER_QUERY_MIN = 20
#: History items that ask the content index, strongest first, one per IVF list (neighbours in one list overlap).
MAX_QUERIES = 8
#: Items over which content's mean and deviation are taken: all of them up to this many, a fixed sample beyond
#: (a few percent of error on the deviation, where the blend weights are chosen on a grid of factors of 2).
STAT_SAMPLE = 2048
#: Up to this many items content candidates come from an exact scan; beyond, from an IVF index (FAISS) of
#: ``sqrt(n)`` lists, :data:`NPROBE` of them visited (100k clustered items, 256 lists: recall@25 0.98 at 8, 0.85
#: at 4; an exact scan of 20 queries costs 1.4 ms there).
EXACT_MAX_ITEMS = 5_000
NPROBE = 8
PERSONAL = ("als", "knn", "sequence", "content")


class ContentIndex:
    """The nearest items in topic space to some of the catalog's own items (candidates, so approximate beyond
    :data:`EXACT_MAX_ITEMS` items). Not pickled: :meth:`HybridModel.load` rebuilds it (0.2 s at 100k items)."""

    def __init__(self, vectors: np.ndarray):
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        dim = vectors.shape[1]
        self.quantizer: faiss.Index | None = None
        if len(vectors) <= EXACT_MAX_ITEMS:
            self.index = faiss.IndexFlatIP(dim)
        else:
            self.quantizer = faiss.IndexFlatIP(dim)  # the IVF index does not own it: kept alive here
            self.index = faiss.IndexIVFFlat(self.quantizer, dim, int(np.sqrt(len(vectors))), faiss.METRIC_INNER_PRODUCT)
            self.index.train(vectors)
            self.index.nprobe = NPROBE
        self.lists = np.zeros(0, dtype=np.int64)
        self.add(vectors)

    @property
    def size(self) -> int:
        return len(self.lists)

    def add(self, vectors: np.ndarray) -> None:
        """Items appended to the model (indexed after training): they are candidates at once."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.index.add(vectors)
        lists = (self.quantizer.search(vectors, 1)[1][:, 0] if self.quantizer is not None
                 else np.arange(self.size, self.size + len(vectors)))
        self.lists = np.concatenate([self.lists, lists])

    def near(self, items: np.ndarray, vectors: np.ndarray, total: int) -> np.ndarray:
        """About ``total`` items nearest to ``items`` (strongest first; ``vectors``: theirs), shared among them;
        items in one IVF list have the same neighbours, so only the strongest of each (at most
        :data:`MAX_QUERIES`) asks."""
        _, first = np.unique(self.lists[items], return_index=True)
        asking = np.sort(first)[:MAX_QUERIES]
        k = min(max(PER_QUERY_MIN, total // len(asking)), self.size)
        _, found = self.index.search(np.ascontiguousarray(vectors[asking], dtype=np.float32), k)
        return np.unique(found[found >= 0])


def best_first(values: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` of ``np.argsort(-values, kind="stable")`` (ties by index), without sorting every item:
    a full sort of 100k scores cost 8 ms, twice for every minute a validation request of ``eval --users`` asks at."""
    if len(values) <= n:
        return np.argsort(-values, kind="stable")
    kth = np.partition(values, len(values) - n)[len(values) - n]  # the n-th largest
    above = np.flatnonzero(values > kth)
    pick = np.concatenate([above, np.flatnonzero(values == kth)[:n - len(above)]])
    return pick[np.lexsort((pick, -values[pick]))]


def _top(values: np.ndarray, among: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` positions of ``among`` with the largest ``values`` (``values`` aligned with ``among``)."""
    if len(among) <= n:
        return among
    return among[np.argpartition(-values, n - 1)[:n]]


def _top_valid(values: np.ndarray, valid: np.ndarray, n: int = PER_SOURCE) -> np.ndarray:
    """The ``n`` valid items with the largest ``values`` (dense over items), fewer when fewer are valid."""
    masked = np.where(valid, values, -np.inf)
    top = np.argpartition(-masked, min(n, len(masked)) - 1)[:n]
    return top[valid[top]]


def _gather(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stored entries of ``matrix[rows]``: (which of ``rows`` each is in, its position in the data). Read
    from the CSR arrays directly: scipy's slicing and products cost about 0.1 ms of overhead a call."""
    ptr = matrix.indptr
    lengths = ptr[rows + 1] - ptr[rows]
    total = int(lengths.sum())
    starts = np.repeat(ptr[rows] - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return np.repeat(np.arange(len(rows)), lengths), starts + np.arange(total)


def _weighted_rows(matrix: sp.csr_matrix, rows: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``weights @ matrix[rows]`` as (columns, values), the columns unique and sorted."""
    row_of, at = _gather(matrix, rows)
    columns, inverse = np.unique(matrix.indices[at], return_inverse=True)
    values = np.bincount(inverse, weights=matrix.data[at] * weights[row_of], minlength=len(columns))
    return columns, values.astype(np.float32)


def _stats(values: np.ndarray, count: int) -> tuple[float, float]:
    """Mean and deviation over ``count`` items of which ``values`` are the nonzero ones (the rest are 0)."""
    if count <= 0:
        return 0.0, 0.0
    v = values.astype(np.float64)
    mean = v.sum() / count
    return mean, float(np.sqrt(max(float(v @ v) / count - mean * mean, 0.0)))


def _z(values: np.ndarray, stat: tuple[float, float]) -> np.ndarray:
    mean, std = stat
    if std <= 1e-6:
        return np.zeros(len(values), dtype=np.float32)
    return ((values - mean) / std).astype(np.float32)


def _entries(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``matrix[rows][:, cols]`` as a dense array."""
    row_of, at = _gather(matrix, rows)
    indices = matrix.indices[at]
    out = np.zeros((len(rows), len(cols)), dtype=np.float32)
    order = np.argsort(cols)
    where = np.minimum(np.searchsorted(cols[order], indices), len(cols) - 1)
    hit = cols[order][where] == indices
    out[row_of[hit], order[where[hit]]] = matrix.data[at][hit]
    return out


class CandidateServing:
    """Mixed into :class:`recommender.users.hybrid.HybridModel`, which provides these attributes and the
    methods used here (``history``, ``eligible``, ``bucket``, ``dismiss_push``, ``_cold``, ``_shared_scores``)."""

    item_vectors: np.ndarray | None
    popularity: np.ndarray | None
    weights: dict[str, dict[str, float]]
    _content: ContentIndex | None = None
    _sample: tuple[int, np.ndarray] | None = None  # (items when drawn, the sample)

    def content_index(self) -> ContentIndex:
        """The content candidates' index, caught up with items added since it was built."""
        assert self.item_vectors is not None
        index = self._content
        if index is None or index.size > self.n_items:
            index = self._content = ContentIndex(self.item_vectors)
        elif index.size < self.n_items:
            index.add(self.item_vectors[index.size:])
        return index

    def _stat_sample(self) -> np.ndarray:
        """Every item up to :data:`STAT_SAMPLE`, else a fixed random sample of that many (seeded: reproducible)."""
        n = self.n_items
        if self._sample is None or self._sample[0] != n:
            self._sample = (n, np.arange(n) if n <= STAT_SAMPLE else np.sort(
                np.random.default_rng(0).choice(n, STAT_SAMPLE, replace=False)))
        return self._sample[1]

    def recommend(self, history_events: Sequence[Mapping], k: int, exclude: Iterable[int] = (),
                  now: float | None = None, allowed: np.ndarray | None = None) -> list[Rec]:
        """Top ``k`` items for one user, never a seen, dismissed or excluded item, each with its source.

        ``allowed``: a boolean mask over item indexes (a client's filters); items past its end are left out."""
        now = float(now if now is not None else time.time())
        m = self.n_items
        h = self.history(history_events, now)
        excluded = np.fromiter((int(i) for i in exclude), dtype=np.int64)
        h = replace(h, seen=np.union1d(h.seen, excluded[(excluded >= 0) & (excluded < m)]))
        drawn = self.candidates(h, now, k, allowed)
        if drawn is None:
            return []
        items, z = drawn
        w = weights_for(self.weights, self.bucket(h))
        scores = sum(w.get(s, 0.0) * z[s] for s in SOURCES)
        if len(h.dismissed):
            scores = scores - self.dismiss_push(h.dismissed, items)
        k = min(k, len(items))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return self._reasons(h, {s: z[s][top] for s in SOURCES}, w, items[top], scores[top])

    def candidates(self, h: History, now: float, k: int, allowed: np.ndarray | None = None
                   ) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
        """What one request scores: the union of every source's candidates among the items it may get (every
        such item when the union holds fewer than ``k``), and each source's z-scores at them; None when it may
        get nothing. ``vistas eval --users`` chooses the weights on exactly these, as the API answers."""
        m = self.n_items
        may = self.eligible(now)
        may[h.seen] = False
        count = int(np.count_nonzero(may))
        valid = may.copy()
        if allowed is not None:
            keep = np.zeros(m, dtype=bool)
            keep[:min(len(allowed), m)] = allowed[:m]
            valid &= keep
        if not valid.any() or k <= 0:
            return None
        shared = self._shared_scores(now)
        raw, stats, drawn = self._personal(h, may, count, valid)
        for s in ("trending", "popular"):
            head = shared[f"head:{s}"]
            head = head[valid[head]]
            if len(head) < PER_SOURCE:  # a narrow filter: the whole order, sorted once a minute when first needed
                if f"order:{s}" not in shared:
                    shared[f"order:{s}"] = np.argsort(-shared[s], kind="stable")
                order = shared[f"order:{s}"]
                head = order[valid[order]]
            drawn.append(head[:PER_SOURCE])
        items = np.unique(np.concatenate(drawn))
        if len(items) < k:
            items = np.flatnonzero(valid)
        return items, self._z_at(h, raw, stats, shared, items)

    def _personal(self, h: History, may: np.ndarray, count: int, valid: np.ndarray):
        """The history-driven sources' raw scores (dense over items for als, knn, sequence), their statistics
        over the items the user may get, and their candidates."""
        col, cfg = self.collaborative, self.config
        m = self.n_items
        raw: dict[str, np.ndarray] = {}
        stats: dict[str, tuple[float, float]] = {}
        drawn: list[np.ndarray] = []
        if not h.n_items:
            return raw, stats, drawn
        conf = sp.csr_matrix((h.confidence.astype(np.float32), h.items, [0, h.n_items]), shape=(1, m))
        als = col.als_scores(conf)[0]
        raw["als"] = als
        stats["als"] = _stats(als[may], count)
        drawn.append(_top_valid(als, valid))
        cold, _, lenders = self._cold()
        for s, matrix in (("knn", col.similarity), ("sequence", col.transitions)):
            nonzero, values = _weighted_rows(matrix, h.items, h.weights)
            dense = np.zeros(m, dtype=np.float32)
            dense[nonzero] = values
            if len(cold):  # new items borrow from known ones (they have no entries in the rows: disjoint sets)
                at, borrowed = _weighted_rows(lenders, nonzero, values)
                dense[cold[at]] = borrowed
                nonzero = np.concatenate([nonzero, cold[at]])
            raw[s] = dense
            inside = nonzero[may[nonzero]]
            stats[s] = _stats(dense[inside], count)
            pick = nonzero[valid[nonzero]]
            drawn.append(_top(dense[pick], pick, PER_SOURCE))
        strongest = np.argsort(-h.weights, kind="stable")[:cfg.content_history]
        near = self.content_index().near(h.items[strongest], self.item_vectors[h.items[strongest]], CONTENT_CANDIDATES)
        drawn.append(near[valid[near]])
        sample = self._stat_sample()
        inside = sample[may[sample]]
        stats["content"] = _stats(self._content_at(h, inside), len(inside))
        return raw, stats, drawn

    def _content_at(self, h: History, items: np.ndarray | slice) -> np.ndarray:
        """Content scores of ``items``: a soft maximum of their nearness to the strongest history items."""
        cfg = self.config
        strongest = np.argsort(-h.weights, kind="stable")[:cfg.content_history]
        weights = h.weights[strongest]
        sims = self.item_vectors[items] @ self.item_vectors[h.items[strongest]].T
        np.maximum(sims, 0.0, out=sims)
        return power(sims, cfg.content_power) @ (weights / weights.sum()).astype(np.float32)

    def _z_at(self, h: History, raw: Mapping[str, np.ndarray], stats: Mapping[str, tuple[float, float]],
              shared: Mapping[str, np.ndarray], items: np.ndarray) -> dict[str, np.ndarray]:
        z = {s: shared[s][items] for s in ("trending", "popular")}
        for s in PERSONAL:  # a user with no history has no personal signal
            if not h.n_items:
                z[s] = np.zeros(len(items), dtype=np.float32)
            elif s == "content":
                z[s] = _z(self._content_at(h, items), stats[s])
            else:
                z[s] = _z(raw[s][items], stats[s])
        return z

    def _reasons(self, h: History, z: Mapping[str, np.ndarray], w: Mapping[str, float], top: np.ndarray,
                 scores: np.ndarray) -> list[Rec]:
        """Per result, the source whose weighted z-score adds most and the history item behind a personal one."""
        col = self.collaborative
        contributions = np.stack([w.get(s, 0.0) * z[s] for s in SOURCES], axis=1)
        pulls: dict[str, np.ndarray] = {}
        out = []
        for r, item in enumerate(top.tolist()):
            best = int(np.argmax(contributions[r]))
            source, value = SOURCES[best], float(contributions[r, best])
            if col.interactions[item] == 0 and (source in ("knn", "sequence") or (
                    source in ("trending", "popular") and not self.popularity[item])):
                source = "content"  # those scores were borrowed from its nearest items in topic space
                value = float(contributions[r, SOURCES.index("content")])
            if not h.n_items or value <= 0:
                out.append(Rec(item, float(scores[r]), "trending" if source == "trending" and value > 0
                               else "popular", None))
                continue
            if source in ("trending", "popular"):
                out.append(Rec(item, float(scores[r]), source, None))
                continue
            if source not in pulls:
                if source == "content":
                    pull = self.item_vectors[h.items] @ self.item_vectors[top].T
                elif source == "als":  # the history item nearest in factor space
                    pull = col.item_factors[h.items] @ col.item_factors[top].T
                else:
                    pull = _entries(col.similarity if source == "knn" else col.transitions, h.items, top)
                pulls[source] = pull * h.weights[:, None]
            out.append(Rec(item, float(scores[r]), source, int(h.items[int(np.argmax(pulls[source][:, r]))])))
        return out
