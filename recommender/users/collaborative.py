"""Collaborative signals learned from every user's events, with ``implicit``.

* :class:`EventLog`: typed, timestamped events as flat numpy arrays (users and
  items are dense integer indexes; the caller maps its string ids).
* :func:`confidence_matrix`: the user x item confidence matrix: each event
  weighs by its type and, optionally, halves every ``half_life_days``.
* :class:`Collaborative`: ALS (matrix factorisation) and item-item cosine
  (co-occurrence, K nearest items) fitted on that matrix; users who arrived
  after training are folded in at request time (``recalculate_user``), so a
  fresh event counts at once. Items without any interaction get ALS factors
  predicted from their content vector (:meth:`Collaborative.map_content`), so a
  new sale has collaborative scores on day one.

No matrix factorisation is written here: ``implicit`` does it.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recommender.users.config import HybridConfig

EVENT_WEIGHTS: dict[str, float] = {"view": 1.0, "click": 2.0, "add_to_cart": 4.0, "purchase": 8.0, "dismiss": 0.0}
DISMISS = "dismiss"
DAY = 86400.0


@dataclass
class EventLog:
    """Events as parallel arrays: user index, item index, event type, timestamp (type weight and dismissed derived)."""

    user: np.ndarray
    item: np.ndarray
    kind: np.ndarray
    ts: np.ndarray

    def __post_init__(self) -> None:
        self.user = np.asarray(self.user, dtype=np.int64)
        self.item = np.asarray(self.item, dtype=np.int64)
        self.kind = np.asarray(self.kind, dtype="<U12")
        self.ts = np.asarray(self.ts, dtype=np.float64)
        self.weight = np.array([EVENT_WEIGHTS[k] for k in self.kind.tolist()], dtype=np.float64)
        self.dismissed = self.kind == DISMISS

    @classmethod
    def from_records(cls, records: Iterable[tuple[int, int, str, float]]) -> "EventLog":
        """``(user index, item index, event type, unix ts)`` rows."""
        rows = list(records)
        return cls([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])

    def __len__(self) -> int:
        return len(self.user)

    def subset(self, mask: np.ndarray) -> "EventLog":
        return EventLog(self.user[mask], self.item[mask], self.kind[mask], self.ts[mask])


def decay(age_seconds: np.ndarray | float, half_life_days: float | None) -> np.ndarray | float:
    if not half_life_days:
        return np.ones_like(np.asarray(age_seconds, dtype=np.float64))
    return 0.5 ** (np.maximum(age_seconds, 0.0) / (half_life_days * DAY))


def confidence_matrix(
    log: EventLog, n_users: int, n_items: int, now: float, half_life_days: float | None = None, binary: bool = False
) -> sp.csr_matrix:
    """users x items: summed type weights (decayed when ``half_life_days``), then ``log1p``; dismissals count 0.

    ``binary`` gives 1 per touched (user, item), the textbook input of implicit ALS.
    """
    keep = ~log.dismissed
    w = log.weight[keep] * decay(now - log.ts[keep], half_life_days)
    m = sp.csr_matrix((w, (log.user[keep], log.item[keep])), shape=(n_users, n_items), dtype=np.float64)
    m.sum_duplicates()
    m.eliminate_zeros()
    m.data = np.ones_like(m.data) if binary else np.log1p(m.data)
    return m.astype(np.float32)


def transition_matrix(log: EventLog, n_items: int, window: int = 3, top_k: int = 100) -> sp.csr_matrix:
    """items x items: how often item j followed item i in a user's time-ordered events (within ``window``
    events, weighing ``1/distance``), divided by how often i was followed at all; each row keeps its ``top_k``.

    "Viewed next" is co-occurrence with an order: it carries the sessions that plain co-occurrence averages out."""
    keep = ~log.dismissed
    user, item, ts = log.user[keep], log.item[keep], log.ts[keep]
    order = np.lexsort((np.arange(len(user)), ts, user))
    user, item = user[order], item[order]
    rows, cols, vals = [], [], []
    for d in range(1, window + 1):
        same = user[d:] == user[:-d]
        rows.append(item[:-d][same])
        cols.append(item[d:][same])
        vals.append(np.full(int(same.sum()), 1.0 / d))
    r, c, v = (np.concatenate(x) if x else np.zeros(0) for x in (rows, cols, vals))
    keep = r != c
    m = sp.csr_matrix((v[keep], (r[keep].astype(np.int64), c[keep].astype(np.int64))), shape=(n_items, n_items))
    m.sum_duplicates()
    totals = np.asarray(m.sum(axis=1)).ravel()
    m = sp.diags(1.0 / np.maximum(totals, 1e-12)) @ m
    return _top_k_rows(m.tocsr(), top_k).astype(np.float32)


def _top_k_rows(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    indptr, indices, data = [0], [], []
    for i in range(m.shape[0]):
        lo, hi = m.indptr[i], m.indptr[i + 1]
        vals, cols = m.data[lo:hi], m.indices[lo:hi]
        if hi - lo > k:
            top = np.argpartition(-vals, k - 1)[:k]
            vals, cols = vals[top], cols[top]
        indices.append(cols)
        data.append(vals)
        indptr.append(indptr[-1] + len(cols))
    return sp.csr_matrix((np.concatenate(data) if data else [], np.concatenate(indices) if indices else [],
                          indptr), shape=m.shape)


@dataclass
class Collaborative:
    """ALS + item-item cosine on one confidence matrix. ``fit`` once per training job; score per request.

    Its hyperparameters are the model's (``config``), chosen by tuning: one place for each."""

    config: HybridConfig = field(default_factory=HybridConfig)
    num_threads: int = 1
    item_factors: np.ndarray | None = None
    similarity: sp.csr_matrix | None = None
    transitions: sp.csr_matrix | None = None
    interactions: np.ndarray | None = None  # per item: how many users touched it in training
    fit_seconds: float = 0.0
    _als: object = field(default=None, repr=False)

    def fit(self, matrix: sp.csr_matrix, log: EventLog | None = None) -> "Collaborative":
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.nearest_neighbours import CosineRecommender
        from implicit.utils import ParameterWarning

        start = time.perf_counter()
        cfg = self.config
        als = AlternatingLeastSquares(
            factors=cfg.factors, regularization=cfg.regularization, alpha=cfg.alpha,
            iterations=cfg.iterations, random_state=cfg.seed, num_threads=self.num_threads,
        )
        als.fit(matrix, show_progress=False)
        knn = CosineRecommender(K=cfg.knn_k, num_threads=self.num_threads)
        with warnings.catch_warnings():  # implicit converts an internal transpose and says so
            warnings.simplefilter("ignore", ParameterWarning)
            knn.fit(matrix, show_progress=False)
        self._als = als
        self.item_factors = np.ascontiguousarray(als.item_factors, dtype=np.float32)
        self.similarity = knn.similarity.tocsr().astype(np.float32)
        self.interactions = np.diff(matrix.tocsc().indptr).astype(np.int64)
        n_items = matrix.shape[1]
        self.transitions = (transition_matrix(log, n_items, cfg.sequence_window) if log is not None
                            else sp.csr_matrix((n_items, n_items), dtype=np.float32))
        self.fit_seconds = time.perf_counter() - start
        return self

    def map_content(self, item_vectors: np.ndarray, min_interactions: int = 5, ridge: float = 1.0) -> np.ndarray:
        """Ridge regression from content vectors to ALS item factors, fitted on items with
        ``min_interactions`` or more; items with none get their predicted factors (day-one scores).

        Returns the mapping matrix (dim x factors), so newly indexed items can be mapped later."""
        assert self.item_factors is not None and self.interactions is not None
        x = np.asarray(item_vectors, dtype=np.float64)
        known = self.interactions >= min_interactions
        if known.sum() < max(10, x.shape[1]):
            mapping = np.zeros((x.shape[1], self.item_factors.shape[1]))
        else:
            xk, yk = x[known], self.item_factors[known].astype(np.float64)
            mapping = np.linalg.solve(xk.T @ xk + ridge * np.eye(x.shape[1]), xk.T @ yk)
        cold = self.interactions == 0
        self.item_factors[cold] = (x[cold] @ mapping).astype(np.float32)
        self.mapping = mapping
        if self._als is not None:
            self._als.item_factors[cold] = self.item_factors[cold]
            self._als._YtY = None
        return mapping

    def user_factors(self, rows: sp.csr_matrix) -> np.ndarray:
        """Fold-in: the ALS factors of users given their confidence rows (one per user), without refitting."""
        assert self._als is not None
        n = rows.shape[0]
        return np.asarray(self._als.recalculate_user(np.arange(n), rows.tocsr()), dtype=np.float32).reshape(n, -1)

    def als_scores(self, rows: sp.csr_matrix) -> np.ndarray:
        assert self.item_factors is not None
        return self.user_factors(rows) @ self.item_factors.T

    def knn_scores(self, rows: sp.csr_matrix) -> np.ndarray:
        assert self.similarity is not None
        return np.asarray((rows @ self.similarity).todense(), dtype=np.float32)

    def sequence_scores(self, rows: sp.csr_matrix) -> np.ndarray:
        assert self.transitions is not None
        return np.asarray((rows @ self.transitions).todense(), dtype=np.float32)

    def nbytes(self) -> int:
        """Bytes of what serving needs: item factors, the K-nearest-items and "next" matrices, the YtY cache."""
        assert self.item_factors is not None and self.similarity is not None and self.transitions is not None
        sparse = sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in (self.similarity, self.transitions))
        return int(self.item_factors.nbytes + sparse + 4 * self.config.factors * self.config.factors)

    def bytes_per_million(self) -> dict[str, float]:
        """Model size per million items and per million users (users are folded in, never stored)."""
        assert self.item_factors is not None and self.similarity is not None
        n_items = self.item_factors.shape[0]
        per_item = self.nbytes() / max(n_items, 1)
        return {"per_million_items_mb": per_item, "per_million_users_mb": 0.0,
                "user_factors_if_stored_mb_per_million": 4.0 * self.config.factors}
