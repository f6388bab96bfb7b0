"""The trained user model an API process serves, kept current, as :class:`recommender.live_index.LiveIndex`
keeps the index: when ``vistas train-users`` flips the user-model pointer, the new version is loaded on
a background thread while requests go on with the old one, and swapped in between two requests.

A served model is bound to the live index by item number (the model's item indexes *are* the catalog's
numeric ids): items indexed after training are added to it (content scores and ALS factors mapped from
their topic vectors) before the next answer, and a reindex's new topic vectors replace the old ones. Events
written after training reach it twice: the user's own, from their history read at request time; everyone's,
from the anonymous activity stream, folded into trending and popularity about once a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from recommender.live_index import LiveIndex
from recommender.store import Store
from recommender.users.collaborative import EventLog
from recommender.users.hybrid import HybridModel
from recommender.versions import VersionStore

log = logging.getLogger(__name__)
MODEL_FILE = "model.joblib"
#: The user-model versions live beside the index versions, under ``user-models/`` in the object store.
FOLDER = "user-models"
#: How often a process looks at the pointer and the activity stream (seconds).
CHECK_S = 1.0


class ServedModel:
    """One loaded user-model version and how far it has caught up (items, activity)."""

    def __init__(self, version: int, model: HybridModel, manifest: dict[str, Any]):
        self.version = version
        self.model = model
        self.manifest = manifest
        self.activity = str(manifest.get("activity_from", "0-0"))
        self.lock = threading.Lock()  # requests on threads share one model; binding and observing mutate it
        self._bound: tuple[int, int] = (int(manifest.get("index_version", 0)), -1)  # (index version, items)

    def bind(self, live: LiveIndex) -> None:
        """Catch the model's items up with the live index (cheap when nothing changed: two comparisons)."""
        index = live.index
        assert index is not None
        if self._bound == (live.version, len(index)):
            return
        model = self.model
        present = np.flatnonzero(index.present)
        top = int(present[-1]) + 1 if len(present) else 0
        if top > model.n_items:
            eligibility = live.eligibility
            nums = np.arange(model.n_items, top)
            windows = np.stack([_column(eligibility.starts, nums, -np.inf), _column(eligibility.ends, nums, np.inf)],
                               axis=1)
            model.add_items(index.vectors[nums], windows)
        vectors = index.vectors[:model.n_items]
        if self._bound[0] != live.version or self._filled_in(vectors):
            model.rebind(vectors)
        self._bound = (live.version, len(index))

    def _filled_in(self, vectors: np.ndarray) -> bool:
        """Items that had no vector at training and have one now (indexed by a worker since)."""
        known = self.model.item_vectors
        return bool(np.any(~known.any(axis=1) & vectors.any(axis=1)))

    def observe(self, store: Store, nums: dict[str, int]) -> None:
        """Fold the activity written since the model last looked into its trending and popularity."""
        entries = store.users.activity_after(self.activity)
        while entries:
            items = [nums.get(e["item"], -1) for _, e in entries]
            log_ = EventLog(np.zeros(len(entries)), items, [e["type"] for _, e in entries], [e["ts"] for _, e in entries])
            self.model.observe(log_)
            self.activity = entries[-1][0]
            entries = store.users.activity_after(self.activity)


def _column(values: np.ndarray, nums: np.ndarray, fill: float) -> np.ndarray:
    """``values[nums]``, ``fill`` where ``nums`` is past its end."""
    out = np.full(len(nums), fill, dtype=np.float64)
    inside = nums < len(values)
    out[inside] = values[nums[inside]]
    return out


class LiveUsers:
    """The user model this process serves (None until ``vistas train-users`` has published one)."""

    def __init__(self, store: Store, files: VersionStore, monotonic: Callable[[], float] = time.monotonic):
        self.store = store
        self.files = files
        self.monotonic = monotonic
        self._served: ServedModel | None = None
        self._loaded: ServedModel | None = None
        self._loading = 0
        self._checked = -np.inf
        self._lock = threading.RLock()

    @property
    def version(self) -> int:
        return self._served.version if self._served else 0

    def served(self, live: LiveIndex) -> ServedModel | None:
        """The model to answer this request with, bound to ``live``: a version loaded meanwhile is swapped in
        first; about once a second the pointer and the activity stream are read."""
        with self._lock:
            if self._loaded is not None:
                old, self._served, self._loaded = self.version, self._loaded, None
                log.info("now serving user model %d (was %d)", self.version, old)
            now = self.monotonic()
            if now - self._checked >= CHECK_S:
                self._checked = now
                self._check(live)
            served = self._served
        if served is not None:
            with served.lock:
                served.bind(live)
        return served

    def _check(self, live: LiveIndex) -> None:
        current = self.store.users.model_version()
        if current and current not in (self.version, self._loading) and self.files.exists(current):
            if self._served is None:
                self._served = self._load(current, live)  # nothing to serve yet: load it now
            else:
                self._loading = current
                threading.Thread(target=self._load_in_background, args=(current, live), daemon=True,
                                 name=f"load-user-model-{current}").start()
        served = self._served
        if served is not None and live.index is not None:
            with served.lock:
                served.observe(self.store, live.index.nums)

    def _load_in_background(self, version: int, live: LiveIndex) -> None:
        try:
            loaded = self._load(version, live)
        except Exception:  # noqa: BLE001 - keep serving the old model; the next check tries again
            log.exception("loading user model %d failed; still serving %d", version, self.version)
            loaded = None
        with self._lock:
            if loaded is not None and self.store.users.model_version() == version:
                self._loaded = loaded
            self._loading = 0

    def _load(self, version: int, live: LiveIndex) -> ServedModel:
        """Read a version from disk, bound to the live index and caught up with the activity stream."""
        started = time.monotonic()
        path = self.files.path(version)
        served = ServedModel(version, HybridModel.load(path / MODEL_FILE), self.files.manifest(version))
        if live.index is not None:
            served.bind(live)
            served.observe(self.store, live.index.nums)
        log.info("loaded user model %d (%d items) in %.2fs", version, served.model.n_items, time.monotonic() - started)
        return served
