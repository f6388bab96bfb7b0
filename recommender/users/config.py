"""The hybrid's vocabulary: its sources, hyperparameters, default blend weights, and the small array helpers
the model and its tuning share (kept apart so neither module passes 400 lines)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

SOURCES: tuple[str, ...] = ("als", "knn", "sequence", "content", "trending", "popular")
THIN_ITEMS = 5
THIN_FOLDS = 2
#: A thin history whose last event is longer ago than this at the request is "away": the user came back (a
#: session gap), and what they pick then follows what is selling more than their few items (its own weights).
AWAY_S = 3600.0
#: How long the user-independent scores (trending, popular) are reused, in seconds of ``now``.
SHARED_TTL_S = 60
#: The weight sets, one per kind of request (:meth:`HybridModel.bucket`).
BUCKETS = ("thin", "away", "full")
#: Used when the event log is too small to choose from (and as the search's starting point).
DEFAULT_WEIGHTS: dict[str, dict[str, float]] = {
    "thin": {"als": 0.5, "knn": 0.5, "sequence": 0.5, "content": 0.125, "trending": 1.0, "popular": 0.25},
    "away": {"als": 0.25, "knn": 0.25, "sequence": 0.25, "content": 0.125, "trending": 2.0, "popular": 0.25},
    "full": {"als": 0.5, "knn": 0.5, "sequence": 0.5, "content": 0.125, "trending": 0.25, "popular": 0.125},
}
#: Below either, :func:`choose_weights` keeps the defaults.
MIN_EVENTS = 2000
MIN_VALIDATION_USERS = 50
WEIGHT_GRID = (0.0, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0)


def nearest(base: np.ndarray, queries: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
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
    idle: float = 0.0  # seconds from the last positive event to the request (0 without any)

    @property
    def n_items(self) -> int:
        return len(self.items)


def weights_for(weights: Mapping[str, Mapping[str, float]], bucket: str) -> Mapping[str, float]:
    """A bucket's blend weights; "away" is "thin" in weights recorded before it existed."""
    return weights[bucket] if bucket in weights or bucket != "away" else weights["thin"]


def zscore(scores: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """Per-row z-score over eligible items; a constant row becomes zeros."""
    scores = np.asarray(scores, dtype=np.float32)
    w = eligible.astype(np.float32)
    count = np.maximum(w.sum(axis=1, keepdims=True), 1.0)
    mean = (scores * w).sum(axis=1, keepdims=True) / count
    centred = scores - mean
    std = np.sqrt((centred * centred * w).sum(axis=1, keepdims=True) / count)
    out = centred / np.where(std > 1e-6, std, np.inf)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def power(x: np.ndarray, p: float) -> np.ndarray:
    """``x ** p``, in place; powers of two by squaring (several times faster than ``np.power`` on a catalog)."""
    if p == 1:
        return x
    if p in (2, 4, 8, 16, 32):
        for _ in range(int(np.log2(p))):
            np.multiply(x, x, out=x)
        return x
    return np.power(x, p, out=x)
