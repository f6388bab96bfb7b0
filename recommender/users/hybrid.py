"""The hybrid user recommender: several candidate sources, one scored blend whose weights are data.

Sources, each scored over every eligible item and z-normalised per user:

* ``als``: ALS factors (``implicit``), the user folded in from the request-time history;
* ``knn``: item-item cosine (co-occurrence) from the user's history items, recent ones weighing more;
* ``sequence``: what other users touched next after the user's recent items ("viewed next");
* ``content``: nearness in topic space to *each* history item (a soft maximum, ``sim ** content_power``),
  so a user with two interests (beach and ski) gets both, not the centroid between them;
* ``trending``: time-decayed popularity at ``now`` among items whose sale window is open;
* ``popular``: all-time popularity (what a bestseller list shows).

The blend is ``sum(weights[s] * z[s])``; the weights come from :func:`choose_weights`, a
time-ordered holdout on the catalog's own events (each user's last event), one set for thin
histories (at most ``THIN_ITEMS`` items) and one for the rest, with :data:`DEFAULT_WEIGHTS` when
there are too few events. Each result carries the source that contributed most and, for the
history-driven sources, the history item that brought it ("because you viewed X").

A ``dismiss`` event removes the item for good and pushes down items like it by
``dismiss_penalty * max(0, cos - dismiss_floor) / (1 - dismiss_floor)`` (in z units of the blend).

Items are dense integer indexes into ``item_vectors``; callers map their string ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from recommender.users.collaborative import (
    DAY, DISMISS, EVENT_WEIGHTS, Collaborative, EventLog, confidence_matrix, decay,
)

SOURCES: tuple[str, ...] = ("als", "knn", "sequence", "content", "trending", "popular")
THIN_ITEMS = 5
THIN_FOLDS = 2
#: How long the user-independent scores (trending, popular) are reused, in seconds of ``now``.
SHARED_TTL_S = 60
BUCKETS = ("thin", "full")
#: Used when the event log is too small to choose from (and as the search's starting point).
DEFAULT_WEIGHTS: dict[str, dict[str, float]] = {
    "thin": {"als": 0.5, "knn": 0.5, "sequence": 0.5, "content": 0.125, "trending": 1.0, "popular": 0.25},
    "full": {"als": 0.5, "knn": 0.5, "sequence": 0.5, "content": 0.125, "trending": 0.25, "popular": 0.125},
}
#: Below either, :func:`choose_weights` keeps the defaults.
MIN_EVENTS = 2000
MIN_VALIDATION_USERS = 50
WEIGHT_GRID = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0)


def _nearest(base: np.ndarray, queries: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``m`` inner products of each query among ``base`` rows: (sims, positions in base)."""
    try:
        import faiss
    except ImportError:  # exact numpy, in chunks
        sims_out, top_out = [], []
        for start in range(0, len(queries), 1024):
            sims = queries[start:start + 1024] @ base.T
            top = np.argpartition(-sims, m - 1, axis=1)[:, :m]
            sims_out.append(np.take_along_axis(sims, top, axis=1))
            top_out.append(top)
        return np.vstack(sims_out), np.vstack(top_out)
    index = faiss.IndexFlatIP(base.shape[1])
    index.add(np.ascontiguousarray(base, dtype=np.float32))
    sims, top = index.search(np.ascontiguousarray(queries, dtype=np.float32), m)
    return sims, top


class Rec(NamedTuple):
    """One recommendation: item index, blended score, the source that brought it, the history item behind it."""

    item: int
    score: float
    source: str
    because: int | None


@dataclass
class HybridConfig:
    """Hyperparameters (chosen on the validation holdout by :func:`choose_config`)."""

    factors: int = 32
    regularization: float = 0.05
    iterations: int = 15
    alpha: float = 2.0
    knn_k: int = 50
    sequence_window: int = 3
    #: History recency: an event's weight halves every ``history_half_life_days`` and every ``recent_events`` later events.
    history_half_life_days: float | None = 30.0
    recent_events: float | None = 10.0
    trend_half_life_days: float = 3.0
    content_power: float = 4.0
    #: Content looks at the user's strongest (recent, weighty) history items only: a bounded cost per request.
    content_history: int = 20
    #: A dismissed item's neighbours lose ``dismiss_penalty * max(0, cos - floor) / (1 - floor)`` (z units);
    #: items less alike than ``dismiss_floor`` lose nothing.
    dismiss_penalty: float = 1.0
    dismiss_floor: float = 0.5
    seed: int = 0


@dataclass
class History:
    """One user's request-time history, as arrays (see :meth:`HybridModel.history`)."""

    items: np.ndarray
    weights: np.ndarray  # type weight x recency
    confidence: np.ndarray  # type weight x time decay only (the ALS fold-in row)
    dismissed: np.ndarray
    seen: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.items)


def _z(scores: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Per-row z-score over eligible items; a constant row becomes zeros."""
    scores = np.asarray(scores, dtype=np.float32)
    w = eligible.astype(np.float32)
    count = np.maximum(w.sum(axis=1, keepdims=True), 1.0)
    mean = (scores * w).sum(axis=1, keepdims=True) / count
    centred = scores - mean
    std = np.sqrt((centred * centred * w).sum(axis=1, keepdims=True) / count)
    out = centred / np.where(std > 1e-6, std, np.inf)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def _power(x: np.ndarray, p: float) -> np.ndarray:
    """``x ** p``, in place; powers of two by squaring (several times faster than ``np.power`` on a catalog)."""
    if p == 1:
        return x
    if p in (2, 4, 8, 16, 32):
        for _ in range(int(np.log2(p))):
            np.multiply(x, x, out=x)
        return x
    return np.power(x, p, out=x)


@dataclass
class HybridModel:
    config: HybridConfig = field(default_factory=HybridConfig)
    weights: dict[str, dict[str, float]] = field(default_factory=lambda: {b: dict(w) for b, w in DEFAULT_WEIGHTS.items()})
    weights_chosen: bool = False
    collaborative: Collaborative | None = None
    item_vectors: np.ndarray | None = None
    item_windows: np.ndarray | None = None  # (n_items, 2): starts_at, ends_at (nan = open)
    popularity: np.ndarray | None = None
    fit_seconds: float = 0.0
    _trend_ts: np.ndarray | None = None
    _trend_item: np.ndarray | None = None
    _trend_w: np.ndarray | None = None
    _proxy: sp.csr_matrix | None = field(default=None, repr=False)
    _shared_cache: dict = field(default_factory=dict, repr=False)

    # -- training ---------------------------------------------------------------------
    def fit(
        self, events: EventLog, item_vectors: np.ndarray, item_windows: np.ndarray | None = None,
        now: float | None = None, n_users: int | None = None,
    ) -> "HybridModel":
        """Fit the collaborative model and the popularity counts on ``events`` (weights are left as they are:
        set them from :func:`choose_weights`)."""
        start = time.perf_counter()
        cfg = self.config
        self.item_vectors = np.asarray(item_vectors, dtype=np.float32)
        n_items = len(self.item_vectors)
        self.item_windows = None if item_windows is None else np.asarray(item_windows, dtype=np.float64)
        n_users = int(n_users if n_users is not None else (events.user.max() + 1 if len(events) else 0))
        now = float(now if now is not None else (events.ts.max() if len(events) else time.time()))
        matrix = confidence_matrix(events, max(n_users, 1), n_items, now)
        self.collaborative = Collaborative(
            factors=cfg.factors, regularization=cfg.regularization, iterations=cfg.iterations,
            alpha=cfg.alpha, knn_k=cfg.knn_k, sequence_window=cfg.sequence_window, seed=cfg.seed,
        ).fit(matrix, events)
        self.collaborative.map_content(self.item_vectors)
        keep = ~events.dismissed
        self.popularity = np.bincount(events.item[keep], weights=events.weight[keep], minlength=n_items)
        order = np.argsort(events.ts[keep], kind="stable")
        self._trend_ts = events.ts[keep][order]
        self._trend_item = events.item[keep][order]
        self._trend_w = events.weight[keep][order]
        self._proxy = None
        self._shared_cache = {}
        self._new_item_proxy()
        self.fit_seconds = time.perf_counter() - start
        return self

    def _new_item_proxy(self, neighbours: int = 10) -> sp.csr_matrix:
        """items x items: for each item without training interactions, its ``neighbours`` nearest items
        that have some (FAISS inner product on the unit topic vectors), weighted by cosine, rows summing
        to 1; empty rows for the others. Built at fit, extended by :meth:`add_items`."""
        assert self.collaborative is not None and self.item_vectors is not None
        cached = self._proxy
        if cached is not None and cached.shape[0] == self.n_items:
            return cached
        n = self.n_items
        interactions = self.collaborative.interactions
        known = np.flatnonzero(interactions > 0)
        done = 0 if cached is None else cached.shape[0]
        cold = np.flatnonzero(interactions[done:] == 0) + done
        rows, cols, vals = [], [], []
        if len(known) and len(cold):
            m = min(neighbours, len(known))
            sims, top = _nearest(self.item_vectors[known], self.item_vectors[cold], m)
            w = np.maximum(sims, 1e-6)
            w /= w.sum(axis=1, keepdims=True)
            rows, cols, vals = np.repeat(cold, m), known[top].ravel(), w.ravel()
        new = sp.csr_matrix((vals, (rows, cols)), shape=(n, n)) if len(rows) else sp.csr_matrix((n, n))
        if cached is not None and done:
            old = sp.csr_matrix((cached.data, cached.indices, np.concatenate(
                [cached.indptr, np.full(n - done, cached.indptr[-1])])), shape=(n, n))
            new = old + new
        self._proxy = new.tocsr()
        return self._proxy

    def _cold_rows(self) -> np.ndarray:
        proxy = self._new_item_proxy()
        return np.flatnonzero(np.diff(proxy.indptr))

    def _shared_scores(self, now: float) -> dict[str, np.ndarray]:
        """The sources that do not depend on the user, z-scored over the items whose window is open at ``now``:
        computed once a minute (and after :meth:`observe` / :meth:`add_items`), then shared by every request."""
        key = (int(now // SHARED_TTL_S), len(self._trend_ts), self.n_items)
        cache = self._shared_cache
        if key in cache:
            return cache[key]
        raw = {"trending": np.log1p(self.trending(now)), "popular": np.log1p(self.popularity)}
        proxy = self._new_item_proxy()
        if proxy.nnz:
            cold = self._cold_rows()
            no_events = cold[self.popularity[cold] == 0]
            for s in raw:
                values = raw[s].astype(np.float64, copy=True)
                values[no_events] = proxy[no_events] @ values
                raw[s] = values
        eligible = self.eligible(now)[None, :]
        out = {s: _z(v[None, :], eligible)[0] for s, v in raw.items()}
        if len(cache) > 256:
            cache.clear()
        cache[key] = out
        return out

    def also(self, item: int, k: int, exclude: Iterable[int] = ()) -> list[Rec]:
        """"Customers also viewed": the item's co-occurrence neighbours (source ``knn``, ``because`` = the item),
        filled from its nearest items in topic space (source ``content``) when it has too few or none."""
        assert self.collaborative is not None and self.item_vectors is not None
        skip = {int(item), *(int(i) for i in exclude)}
        row = self.collaborative.similarity[item]
        order = np.argsort(-row.data, kind="stable")
        out = [Rec(int(j), float(v), "knn", int(item)) for j, v in zip(row.indices[order], row.data[order])
               if int(j) not in skip and v > 0][:k]
        if len(out) < k:
            taken = skip | {r.item for r in out}
            sims = self.item_vectors @ self.item_vectors[item]
            for j in np.argsort(-sims, kind="stable"):
                if len(out) >= k:
                    break
                if int(j) not in taken:
                    out.append(Rec(int(j), float(sims[j]), "content", int(item)))
        return out

    def observe(self, events: EventLog) -> None:
        """Events that arrived after training: they count in trending and popularity at once (the personal
        sources read the request-time history, so they need nothing)."""
        assert self.popularity is not None and self._trend_ts is not None
        keep = ~events.dismissed & (events.item < self.n_items) & (events.item >= 0)
        self.popularity = self.popularity + np.bincount(events.item[keep], weights=events.weight[keep],
                                                        minlength=self.n_items)
        ts = np.concatenate([self._trend_ts, events.ts[keep]])
        order = np.argsort(ts, kind="stable")
        self._trend_ts = ts[order]
        self._trend_item = np.concatenate([self._trend_item, events.item[keep]])[order]
        self._trend_w = np.concatenate([self._trend_w, events.weight[keep]])[order]

    def add_items(self, vectors: np.ndarray, windows: np.ndarray | None = None) -> np.ndarray:
        """Items indexed after training: they get content scores and ALS factors mapped from their vectors.

        Returns their new item indexes."""
        assert self.collaborative is not None and self.item_vectors is not None and self.popularity is not None
        vectors = np.asarray(vectors, dtype=np.float32)
        first = len(self.item_vectors)
        col = self.collaborative
        self.item_vectors = np.vstack([self.item_vectors, vectors])
        col.item_factors = np.vstack([col.item_factors, (vectors @ col.mapping).astype(np.float32)])
        col._als.item_factors = col.item_factors
        col._als._YtY = None
        n = len(self.item_vectors)
        grow = lambda m: sp.csr_matrix((m.data, m.indices, np.concatenate([m.indptr, np.full(len(vectors), m.indptr[-1])])),
                                       shape=(n, n))
        col.similarity, col.transitions = grow(col.similarity), grow(col.transitions)
        col.interactions = np.concatenate([col.interactions, np.zeros(len(vectors), dtype=np.int64)])
        self.popularity = np.concatenate([self.popularity, np.zeros(len(vectors))])
        if self.item_windows is not None or windows is not None:
            old = self.item_windows if self.item_windows is not None else np.full((first, 2), np.nan)
            new = np.asarray(windows, dtype=np.float64) if windows is not None else np.full((len(vectors), 2), np.nan)
            self.item_windows = np.vstack([old, new])
        return np.arange(first, n)

    def card(self) -> dict:
        """What to record beside the model (JSON-ready): hyperparameters, blend weights, whether they were chosen."""
        from dataclasses import asdict

        col = self.collaborative
        return {"config": asdict(self.config), "weights": self.weights, "weights_chosen": self.weights_chosen,
                "items": self.n_items, "fit_seconds": round(self.fit_seconds, 3),
                "bytes": col.nbytes() if col is not None else 0}

    def save(self, path) -> None:
        import joblib

        joblib.dump(self, path)

    @staticmethod
    def load(path) -> "HybridModel":
        import joblib

        model = joblib.load(path)
        if not isinstance(model, HybridModel):
            raise TypeError(f"{path} does not hold a HybridModel")
        return model

    @property
    def n_items(self) -> int:
        return 0 if self.item_vectors is None else len(self.item_vectors)

    # -- request-time inputs -----------------------------------------------------------
    def history(self, events: Sequence[Mapping], now: float) -> History:
        """``events``: dicts with ``item`` (index), ``type`` and ``ts``, any order (items out of range are ignored)."""
        cfg = self.config
        rows = sorted((e for e in events if 0 <= int(e["item"]) < self.n_items), key=lambda e: e["ts"])
        dismissed = {int(e["item"]) for e in rows if e["type"] == DISMISS}
        positive = [e for e in rows if e["type"] != DISMISS and int(e["item"]) not in dismissed]
        items = np.array([int(e["item"]) for e in positive], dtype=np.int64)
        base = np.array([EVENT_WEIGHTS[e["type"]] for e in positive], dtype=np.float64)
        ts = np.array([float(e["ts"]) for e in positive], dtype=np.float64)
        timed = base * decay(now - ts, cfg.history_half_life_days) if len(ts) else base
        position = np.arange(len(items))[::-1].astype(np.float64)  # 0 = the latest event
        recency = 0.5 ** (position / cfg.recent_events) if cfg.recent_events else np.ones(len(items))
        uniq, inverse = np.unique(items, return_inverse=True)
        weights = np.bincount(inverse, weights=timed * recency, minlength=len(uniq)) if len(uniq) else np.zeros(0)
        confidence = np.bincount(inverse, weights=timed, minlength=len(uniq)) if len(uniq) else np.zeros(0)
        seen = np.array(sorted(set(uniq.tolist()) | dismissed), dtype=np.int64)
        return History(uniq, weights, np.log1p(confidence), np.array(sorted(dismissed), dtype=np.int64), seen)

    def eligible(self, now: float) -> np.ndarray:
        ok = np.ones(self.n_items, dtype=bool)
        if self.item_windows is not None:
            starts, ends = self.item_windows[:, 0], self.item_windows[:, 1]
            ok &= ~(starts > now) & ~(ends < now)
        return ok

    def trending(self, now: float) -> np.ndarray:
        """Time-decayed event weight per item at ``now`` (events after ``now`` do not count)."""
        assert self._trend_ts is not None
        h = self.config.trend_half_life_days * DAY
        lo, hi = np.searchsorted(self._trend_ts, [now - 12 * h, now], side="right")
        ages = now - self._trend_ts[lo:hi]
        w = self._trend_w[lo:hi] * 0.5 ** (ages / h)
        return np.bincount(self._trend_item[lo:hi], weights=w, minlength=self.n_items)

    # -- scoring -----------------------------------------------------------------------
    def source_scores(self, histories: Sequence[History], nows: Sequence[float]) -> dict[str, np.ndarray]:
        """Per source, a (users x items) matrix of z-scores; ineligible and seen items are -inf in ``"mask"``."""
        assert self.collaborative is not None and self.item_vectors is not None and self.popularity is not None
        n, m = len(histories), self.n_items
        col, cfg = self.collaborative, self.config
        eligible = np.stack([self.eligible(t) for t in nows]) if n else np.zeros((0, m), dtype=bool)
        for u, h in enumerate(histories):
            eligible[u, h.seen] = False
        counts = np.array([h.n_items for h in histories])
        indptr = np.concatenate([[0], np.cumsum(counts)])
        indices = np.concatenate([h.items for h in histories]) if n else np.zeros(0, dtype=np.int64)
        conf = sp.csr_matrix((np.concatenate([h.confidence for h in histories]).astype(np.float32), indices, indptr),
                             shape=(n, m))
        recent = sp.csr_matrix((np.concatenate([h.weights for h in histories]).astype(np.float32), indices, indptr),
                               shape=(n, m))
        raw: dict[str, np.ndarray] = {}
        raw["als"] = col.als_scores(conf)
        raw["knn"] = col.knn_scores(recent)
        raw["sequence"] = col.sequence_scores(recent)
        content = np.zeros((n, m), dtype=np.float32)
        for u, h in enumerate(histories):
            if h.n_items:
                strongest = np.argsort(-h.weights, kind="stable")[:cfg.content_history]
                items, weights = h.items[strongest], h.weights[strongest]
                sims = self.item_vectors @ self.item_vectors[items].T
                np.maximum(sims, 0.0, out=sims)
                sims = _power(sims, cfg.content_power)
                content[u] = sims @ (weights / weights.sum()).astype(np.float32)
        raw["content"] = content
        # An item nobody has touched yet is new, not unpopular: the sources that need events score it
        # like its nearest items in topic space (:meth:`_new_item_proxy`), so content decides where it lands.
        proxy = self._new_item_proxy()
        if proxy.nnz:
            cold = self._cold_rows()
            for s in ("knn", "sequence"):
                raw[s][:, cold] = np.asarray((proxy[cold] @ raw[s].T).T)
        out = {s: _z(raw[s], eligible) for s in ("als", "knn", "sequence", "content")}
        shared = [self._shared_scores(t) for t in nows]
        for s in ("trending", "popular"):
            out[s] = np.stack([x[s] for x in shared]) if n else np.zeros((0, m), dtype=np.float32)
        for u, h in enumerate(histories):  # a user with no history has no personal signal
            if not h.n_items:
                for s in ("als", "knn", "sequence", "content"):
                    out[s][u] = 0.0
        penalty = np.zeros((n, m), dtype=np.float32)
        if cfg.dismiss_penalty:
            for u, h in enumerate(histories):
                if len(h.dismissed):
                    penalty[u] = self.dismiss_push(h.dismissed)
        out["penalty"] = penalty
        out["eligible"] = eligible
        return out

    def dismiss_push(self, dismissed: np.ndarray) -> np.ndarray:
        """How far each item is pushed down for a user who dismissed ``dismissed`` (the closest one counts)."""
        cfg = self.config
        sims = (self.item_vectors @ self.item_vectors[dismissed].T).max(axis=1)
        return (cfg.dismiss_penalty * np.maximum(sims - cfg.dismiss_floor, 0.0) / (1.0 - cfg.dismiss_floor)
                ).astype(np.float32)

    def bucket(self, history: History) -> str:
        return "thin" if history.n_items <= THIN_ITEMS else "full"

    def blend(self, sources: Mapping[str, np.ndarray], buckets: Sequence[str],
              weights: Mapping[str, Mapping[str, float]] | None = None) -> np.ndarray:
        weights = weights or self.weights
        w = np.array([[weights[b].get(s, 0.0) for s in SOURCES] for b in buckets], dtype=np.float32)
        total = sum(w[:, j:j + 1] * sources[s] for j, s in enumerate(SOURCES)) - sources["penalty"]
        return np.where(sources["eligible"], total, -np.inf)

    def recommend(self, history_events: Sequence[Mapping], k: int, exclude: Iterable[int] = (),
                  now: float | None = None) -> list[Rec]:
        """Top ``k`` items for one user, never a seen, dismissed or excluded item, each with its source."""
        now = float(now if now is not None else time.time())
        h = self.history(history_events, now)
        excluded = np.fromiter((int(i) for i in exclude), dtype=np.int64)
        excluded = excluded[(excluded >= 0) & (excluded < self.n_items)]
        h = replace(h, seen=np.union1d(h.seen, excluded))
        sources = self.source_scores([h], [now])
        bucket = self.bucket(h)
        scores = self.blend(sources, [bucket])[0]
        k = min(k, int(np.isfinite(scores).sum()))
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        cache: dict[str, np.ndarray] = {}
        return [Rec(int(i), float(scores[i]), *self._reason(h, sources, bucket, int(i), top, cache)) for i in top]

    def _reason(self, h: History, sources: Mapping[str, np.ndarray], bucket: str, item: int,
                top: np.ndarray, cache: dict[str, np.ndarray]) -> tuple[str, int | None]:
        """The source whose weighted z-score adds most, and the history item behind a personal source
        (``cache``: per source, history x ``top`` pulls, computed once for all the results)."""
        w = self.weights[bucket]
        contributions = {s: w.get(s, 0.0) * float(sources[s][0, item]) for s in SOURCES}
        source = max(contributions, key=contributions.get)
        new = self.collaborative.interactions[item] == 0
        if new and (source in ("knn", "sequence") or (source in ("trending", "popular") and not self.popularity[item])):
            source = "content"  # those scores were borrowed from its nearest items in topic space
        if not h.n_items or contributions[source] <= 0:
            return ("popular" if source != "trending" or contributions[source] <= 0 else "trending"), None
        if source in ("trending", "popular"):
            return source, None
        kind = source
        if kind not in cache:
            if kind == "content":
                pull = self.item_vectors[h.items] @ self.item_vectors[top].T
            elif kind == "als":  # the history item nearest in factor space
                f = self.collaborative.item_factors
                pull = f[h.items] @ f[top].T
            else:
                m = self.collaborative.similarity if kind == "knn" else self.collaborative.transitions
                pull = np.asarray(m[h.items][:, top].todense())
            cache[kind] = pull * h.weights[:, None]
        column = int(np.flatnonzero(top == item)[0])
        return source, int(h.items[int(np.argmax(cache[kind][:, column]))])


# -- evaluation and the choice of weights ------------------------------------------------
def rank_of(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each row's target position as (items scored strictly higher, other items tied with it), shape (n, 2).

    A target that is not finite (seen, ineligible, not returned) counts as ranked last."""
    rows = np.arange(len(targets))
    target = scores[rows, targets]
    better = (scores > target[:, None]).sum(axis=1)
    ties = (scores == target[:, None]).sum(axis=1) - 1
    finite = np.isfinite(target)
    return np.stack([np.where(finite, better, scores.shape[1]), np.where(finite, ties, 0)], axis=1)


def hit_ndcg(ranks: np.ndarray, k: int = 10) -> tuple[float, float]:
    """HR@k and NDCG@k, expected under random tie-breaking (a method gains nothing from ties).

    ``ranks``: (better, ties) rows from :func:`rank_of`, or plain 0-based ranks."""
    ranks = np.asarray(ranks)
    if ranks.ndim == 1:
        ranks = np.stack([ranks, np.zeros_like(ranks)], axis=1)
    better, ties = ranks[:, 0].astype(np.int64), ranks[:, 1].astype(np.int64)
    gains = 1.0 / np.log2(np.arange(k) + 2.0)
    cum = np.concatenate([[0.0], np.cumsum(gains)])  # cum[j]: gain of positions < j
    lo = np.minimum(better, k)
    hi = np.minimum(better + ties + 1, k)  # positions [better, better + ties] are equally likely
    span = ties + 1
    hit = (hi - lo) / span
    ndcg = (cum[hi] - cum[lo]) / span
    return float(hit.mean()), float(ndcg.mean())


def split_last(events: EventLog, min_events: int = 3) -> tuple[EventLog, dict[int, int], dict[int, float]]:
    """Time-ordered holdout: each user's last non-dismiss event (users with ``min_events`` or more).

    Returns (the other events, user -> held-out item, user -> ts of the held-out event)."""
    order = np.lexsort((np.arange(len(events)), events.ts, events.user))
    held = np.zeros(len(events), dtype=bool)
    targets: dict[int, int] = {}
    at: dict[int, float] = {}
    users, starts, counts = np.unique(events.user[order], return_index=True, return_counts=True)
    for user, start, count in zip(users.tolist(), starts.tolist(), counts.tolist()):
        rows = order[start:start + count]
        rows = rows[~events.dismissed[rows]]
        if len(rows) >= min_events:
            last = rows[-1]
            held[last] = True
            targets[user] = int(events.item[last])
            at[user] = float(events.ts[last])
    return events.subset(~held), targets, at


def user_histories(events: EventLog, users: Iterable[int], first: int | None = None) -> dict[int, list[dict]]:
    """Per user, their events as dicts (time order), cut to the first ``first`` when given."""
    wanted = set(users)
    out: dict[int, list[dict]] = {u: [] for u in wanted}
    order = np.lexsort((np.arange(len(events)), events.ts))
    for j in order:
        u = int(events.user[j])
        if u in wanted:
            out[u].append({"item": int(events.item[j]), "type": str(events.kind[j]), "ts": float(events.ts[j])})
    if first is not None:
        out = {u: h[:first] for u, h in out.items()}
    return out


def first_events(events: EventLog, users: set[int], first: int) -> np.ndarray:
    """Mask of the events of ``users`` that are among their first ``first`` (time order, as ``user_histories``)."""
    order = np.lexsort((np.arange(len(events)), events.ts))
    counts: dict[int, int] = {}
    keep = np.zeros(len(events), dtype=bool)
    for j in order[np.isin(events.user[order], list(users))]:
        u = int(events.user[j])
        c = counts.get(u, 0)
        keep[j] = c < first
        counts[u] = c + 1
    return keep


def search_weights(model: HybridModel, sources: Mapping[str, np.ndarray], targets: np.ndarray, bucket: str,
                   start: Mapping[str, float], rounds: int = 3, k: int = 10) -> tuple[dict[str, float], float]:
    """Coordinate ascent over :data:`WEIGHT_GRID` maximising NDCG@k (HR@k breaks ties)."""
    weights = dict(start)
    buckets = [bucket] * len(targets)

    def value(w: Mapping[str, float]) -> tuple[float, float]:
        hr, ndcg = hit_ndcg(rank_of(model.blend(sources, buckets, {bucket: w}), targets), k)
        return ndcg, hr

    best = value(weights)
    for _ in range(rounds):
        improved = False
        for s in SOURCES:
            for g in WEIGHT_GRID:
                if g == weights[s]:
                    continue
                trial = {**weights, s: g}
                if not any(trial.values()):
                    continue
                v = value(trial)
                if v > best:
                    best, weights, improved = v, trial, True
        if not improved:
            break
    return weights, best[0]


@dataclass
class Choice:
    weights: dict[str, dict[str, float]]
    chosen: bool
    validation: dict[str, dict[str, float]]
    users: int
    reason: str = ""


def choose_weights(
    events: EventLog, item_vectors: np.ndarray, item_windows: np.ndarray | None = None,
    config: HybridConfig | None = None, n_users: int | None = None, k: int = 10, max_users: int = 5000,
    seed: int = 0,
) -> Choice:
    """The blend's weights from a time-ordered holdout of ``events``, per bucket, always predicting the event
    that follows a history: ``full``, each user's last event from all before it; ``thin``, each user's event
    number ``THIN_ITEMS + 1`` from the ``THIN_ITEMS`` before it.

    Falls back to :data:`DEFAULT_WEIGHTS` under :data:`MIN_EVENTS` events or :data:`MIN_VALIDATION_USERS` users."""
    defaults = {b: dict(w) for b, w in DEFAULT_WEIGHTS.items()}
    if len(events) < MIN_EVENTS:
        return Choice(defaults, False, {}, 0, f"{len(events)} events < {MIN_EVENTS}")
    train, targets, at = split_last(events)
    if len(targets) < MIN_VALIDATION_USERS:
        return Choice(defaults, False, {}, len(targets), f"{len(targets)} validation users < {MIN_VALIDATION_USERS}")
    users = sorted(targets)
    if len(users) > max_users:
        users = sorted(np.random.default_rng(seed).choice(users, max_users, replace=False).tolist())
    config = config or HybridConfig()
    result: dict[str, dict[str, float]] = {}
    validation: dict[str, dict[str, float]] = {}
    whole = user_histories(train, users)
    # full: each user's whole history -> the held-out last event, one model on all the other events
    model = HybridModel(config).fit(train, item_vectors, item_windows, n_users=n_users)
    nows = [max(e["ts"] for e in whole[u]) for u in users]
    parts = [(model, model.source_scores([model.history(whole[u], t) for u, t in zip(users, nows)], nows),
              np.array([targets[u] for u in users]))]
    searched = {"full": parts}
    # thin: the first THIN_ITEMS events -> the event right after them; in each of THIN_FOLDS folds the
    # fold's users are cut to those events in training too, so no model has seen more of them
    thin_users = [u for u in users if len(whole[u]) > THIN_ITEMS]
    folds = np.random.default_rng(seed).permutation(len(thin_users)) % THIN_FOLDS
    searched["thin"] = []
    if len(thin_users) >= MIN_VALIDATION_USERS:
        for f in range(THIN_FOLDS):
            fold = [u for u, g in zip(thin_users, folds.tolist()) if g == f]
            cut = set(fold)
            keep = ~np.isin(train.user, fold) | first_events(train, cut, THIN_ITEMS)
            fold_model = HybridModel(config).fit(train.subset(keep), item_vectors, item_windows, n_users=n_users)
            raw = {u: whole[u][:THIN_ITEMS] for u in fold}
            nows = [raw[u][-1]["ts"] for u in fold]
            hist = [fold_model.history(raw[u], t) for u, t in zip(fold, nows)]
            searched["thin"].append((fold_model, fold_model.source_scores(hist, nows),
                                     np.array([whole[u][THIN_ITEMS]["item"] for u in fold])))
    for bucket in ("full", "thin"):
        if not searched[bucket]:
            result[bucket] = defaults[bucket]
            continue
        sources = {key: np.concatenate([p[1][key] for p in searched[bucket]]) for key in searched[bucket][0][1]}
        t = np.concatenate([p[2] for p in searched[bucket]])
        w, _ = search_weights(model, sources, t, bucket, defaults[bucket], k=k)
        hr, ndcg = hit_ndcg(rank_of(model.blend(sources, [bucket] * len(t), {bucket: w}), t), k)
        result[bucket], validation[bucket] = w, {"hr": hr, "ndcg": ndcg, "users": float(len(t))}
    return Choice(result, True, validation, len(users))


#: What :func:`tune` tries, one parameter at a time, from :class:`HybridConfig`'s defaults.
TUNE_SPACE: dict[str, tuple] = {
    "recent_events": (3.0, 5.0, None),
    "sequence_window": (1, 5),
    "trend_half_life_days": (1.0, 14.0),
    "history_half_life_days": (7.0, None),
    "regularization": (0.01, 0.5),
    "alpha": (1.0, 8.0),
    "knn_k": (100,),
}
# content_power stays 4 by design, not by search: a soft maximum over the history items, so each interest
# pulls its own neighbours (1 would be the centroid). MovieLens genres are too coarse to measure the difference
# (validation NDCG moves by 0.002 between 1, 4 and 16); tests/test_hybrid.py shows it on two interests.


def tune(events: EventLog, item_vectors: np.ndarray, space: Mapping[str, Sequence] | None = None,
         base: HybridConfig | None = None, log: Callable[[str], None] | None = None,
         **kwargs) -> tuple[HybridConfig, Choice, list[tuple[dict, float]]]:
    """Hyperparameters by coordinate search on the validation holdout of :func:`choose_weights`: each parameter
    of ``space`` in turn, keeping a value when it raises the mean validation NDCG@10 of the two buckets."""
    space = TUNE_SPACE if space is None else space
    best_cfg = base or HybridConfig()

    def score(c: Choice) -> float:
        return float(np.mean([v["ndcg"] for v in c.validation.values()])) if c.validation else -1.0

    best = choose_weights(events, item_vectors, config=best_cfg, **kwargs)
    tried = [({}, score(best))]
    if not best.chosen:
        return best_cfg, best, tried
    for name, values in space.items():
        for value in values:
            cfg = replace(best_cfg, **{name: value})
            choice = choose_weights(events, item_vectors, config=cfg, **kwargs)
            tried.append(({name: value}, score(choice)))
            if log:
                log(f"  {name}={value}: validation NDCG@10 {score(choice):.4f} (best {score(best):.4f})")
            if score(choice) > score(best):
                best_cfg, best = cfg, choice
    return best_cfg, best, tried
