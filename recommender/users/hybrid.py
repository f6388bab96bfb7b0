"""The hybrid user recommender: several candidate sources, one scored blend whose weights are data.

Sources, each z-normalised per user over the items the user may get (:meth:`HybridModel.source_scores`
scores every item, the reference; :meth:`HybridModel.recommend` scores candidates only and normalises the same
way, see :mod:`recommender.users.candidates`):

* ``als``: ALS factors (``implicit``), the user folded in from the request-time history;
* ``knn``: item-item cosine (co-occurrence) from the user's history items, recent ones weighing more;
* ``sequence``: what other users touched next after the user's recent items ("viewed next");
* ``content``: nearness in topic space to *each* history item (a soft maximum, ``sim ** content_power``),
  so a user with two interests (beach and ski) gets both, not the centroid between them;
* ``trending``: time-decayed popularity at ``now`` among items whose sale window is open;
* ``popular``: all-time popularity (what a bestseller list shows).

The blend is ``sum(weights[s] * z[s])``; the weights come from :func:`choose_weights`, a
time-ordered holdout on the catalog's own events (each user's last event), one set for thin
histories (at most ``THIN_ITEMS`` items), one for thin histories coming back after :data:`AWAY_S`
("away") and one for the rest, with :data:`DEFAULT_WEIGHTS` when there are too few events. Each
result carries the source that contributed most and, for the history-driven sources, the history
item that brought it ("because you viewed X").

A ``dismiss`` event removes the item for good and pushes down items like it by
``dismiss_penalty * max(0, cos - dismiss_floor) / (1 - dismiss_floor)`` (in z units of the blend).

Items are dense integer indexes into ``item_vectors``; callers map their string ids.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recommender.users.candidates import SHARED_HEAD, CandidateServing, best_first
from recommender.users.collaborative import DAY, DISMISS, EVENT_WEIGHTS, Collaborative, EventLog, confidence_matrix, decay
from recommender.users.config import (
    AWAY_S, DEFAULT_WEIGHTS, SHARED_TTL_S, SOURCES, THIN_ITEMS, HybridConfig, History, Rec, nearest, weights_for,
    zscore,
)


@dataclass
class HybridModel(CandidateServing):
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
    _cold_cache: tuple | None = field(default=None, repr=False)
    _shared_cache: dict = field(default_factory=dict, repr=False)
    _windowed: tuple | None = field(default=None, repr=False)

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
        self.collaborative = Collaborative(cfg).fit(matrix, events)
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
            sims, top = nearest(self.item_vectors[known], self.item_vectors[cold], m)
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

    def _cold(self) -> tuple[np.ndarray, sp.csr_matrix, sp.csr_matrix]:
        """The items without training interactions, their proxy rows, and those rows transposed (known item ->
        the new items that borrow from it: one user's sparse scores reach them without a pass over every new
        item); sliced once per proxy, not per request."""
        proxy = self._new_item_proxy()
        if self._cold_cache is None or self._cold_cache[0] is not proxy:
            cold = np.flatnonzero(np.diff(proxy.indptr))
            rows = proxy[cold]
            self._cold_cache = (proxy, cold, rows, rows.T.tocsr())
        return self._cold_cache[1:]

    def _shared_scores(self, now: float) -> dict[str, np.ndarray]:
        """The sources that do not depend on the user, z-scored over the items whose window is open at ``now``:
        computed once a minute (and after :meth:`observe` / :meth:`add_items`), then shared by every request.

        Reused only by requests at or after the moment they were computed at: a request never sees an event
        from after its own ``now`` (replays and evaluations ask in any order)."""
        key = (int(now // SHARED_TTL_S), len(self._trend_ts), self.n_items)
        cache = self._shared_cache
        if key in cache and cache[key][0] <= now:
            return cache[key][1]
        raw = {"trending": np.log1p(self.trending(now)), "popular": np.log1p(self.popularity)}
        proxy = self._new_item_proxy()
        if proxy.nnz:
            cold, _, _ = self._cold()
            no_events = cold[self.popularity[cold] == 0]
            for s in raw:
                values = raw[s].astype(np.float64, copy=True)
                values[no_events] = proxy[no_events] @ values
                raw[s] = values
        eligible = self.eligible(now)[None, :]
        out = {s: zscore(v[None, :], eligible)[0] for s, v in raw.items()}
        for s in raw:  # the best, for drawing candidates (:mod:`recommender.users.candidates`)
            out[f"head:{s}"] = best_first(out[s], SHARED_HEAD)
        if len(cache) > 256:
            cache.clear()
        cache[key] = (now, out)
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

    def rebind(self, vectors: np.ndarray) -> None:
        """New topic vectors for every item (a reindex refitted the topics, or items got their vector after
        training): content uses them, and the map from vectors to ALS factors is refitted for items without
        interactions."""
        assert self.collaborative is not None
        self.item_vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.collaborative.map_content(self.item_vectors)
        self._proxy = None
        self._shared_cache = {}
        self._content = None

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

    def __getstate__(self) -> dict:
        """Everything but the content candidates' FAISS index (rebuilt by :meth:`load`) and the shared scores
        (recomputed at the first request)."""
        return {**self.__dict__, "_content": None, "_shared_cache": {}}

    @staticmethod
    def load(path) -> "HybridModel":
        import joblib

        model = joblib.load(path)
        if not isinstance(model, HybridModel):
            raise TypeError(f"{path} does not hold a HybridModel")
        if model.n_items:
            model.content_index()  # built while loading, not at the first request
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
        idle = float(now - ts.max()) if len(ts) else 0.0
        return History(uniq, weights, np.log1p(confidence), np.array(sorted(dismissed), dtype=np.int64), seen, idle)

    def eligible(self, now: float) -> np.ndarray:
        """Items whose sale window is open at ``now`` (a fresh array: callers change it). Only the items with a
        bound are compared: a start of nan or -inf and an end of nan or inf is always open; (inf, -inf), an item
        not served, never is."""
        ok = np.ones(self.n_items, dtype=bool)
        windows = self.item_windows
        if windows is not None:
            if self._windowed is None or self._windowed[0] is not windows:
                starts, ends = windows[:, 0], windows[:, 1]
                rows = np.flatnonzero(~((np.isnan(starts) | (starts == -np.inf)) & (np.isnan(ends) | (ends == np.inf))))
                self._windowed = (windows, rows, windows[rows, 0], windows[rows, 1])
            _, rows, starts, ends = self._windowed
            ok[rows] = ~(starts > now) & ~(ends < now)
        return ok

    def trending(self, now: float) -> np.ndarray:
        """Time-decayed event weight per item at ``now``: only events strictly before ``now`` count."""
        assert self._trend_ts is not None
        h = self.config.trend_half_life_days * DAY
        lo = np.searchsorted(self._trend_ts, now - 12 * h, side="right")
        hi = np.searchsorted(self._trend_ts, now, side="left")
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
                content[u] = self._content_at(h, slice(None))
        raw["content"] = content
        # An item nobody has touched yet is new, not unpopular: the sources that need events score it
        # like its nearest items in topic space (:meth:`_new_item_proxy`), so content decides where it lands.
        cold, rows, _ = self._cold()
        if len(cold):
            for s in ("knn", "sequence"):
                raw[s][:, cold] = np.asarray((rows @ raw[s].T).T)
        out = {s: zscore(raw[s], eligible) for s in ("als", "knn", "sequence", "content")}
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

    def dismiss_push(self, dismissed: np.ndarray, items: np.ndarray | slice = slice(None)) -> np.ndarray:
        """How far each of ``items`` is pushed down for a user who dismissed ``dismissed`` (the closest counts)."""
        cfg = self.config
        sims = (self.item_vectors[items] @ self.item_vectors[dismissed].T).max(axis=1)
        return (cfg.dismiss_penalty * np.maximum(sims - cfg.dismiss_floor, 0.0) / (1.0 - cfg.dismiss_floor)
                ).astype(np.float32)

    def bucket(self, history: History) -> str:
        """Which weights blend for this history: "full", else "away" (back after :data:`AWAY_S`), else "thin"."""
        if history.n_items > THIN_ITEMS:
            return "full"
        return "away" if history.idle > AWAY_S else "thin"

    def blend(self, sources: Mapping[str, np.ndarray], buckets: Sequence[str],
              weights: Mapping[str, Mapping[str, float]] | None = None) -> np.ndarray:
        weights = weights or self.weights
        w = np.array([[weights_for(weights, b).get(s, 0.0) for s in SOURCES] for b in buckets], dtype=np.float32)
        total = sum(w[:, j:j + 1] * sources[s] for j, s in enumerate(SOURCES)) - sources["penalty"]
        return np.where(sources["eligible"], total, -np.inf)
