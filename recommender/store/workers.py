"""Worker heartbeats: who is indexing, where, and how much it has done (for `vistas status`)."""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from recommender.store.connection import Part
from recommender.store.queue import INDEXERS

#: A worker that beat its heartbeat this recently counts as running.
WORKER_ALIVE_S = 15.0


class Workers(Part):
    """One JSON heartbeat per worker name, in one hash."""

    def heartbeat(self, name: str, info: dict[str, Any]) -> None:
        """Record that worker ``name`` is alive and what it has done (``seen`` is set here)."""
        self.r.hset(self.keys.workers, name, json.dumps({**info, "seen": time.time()}))

    def forget(self, name: str) -> None:
        """Remove a worker's heartbeat, and its group consumer unless it still holds messages
        (deleting a consumer drops its pending list: those messages would never be redelivered)."""
        self.r.hdel(self.keys.workers, name)
        for key in self.keys.queues:
            try:
                consumers = self.r.xinfo_consumers(key, INDEXERS)
            except redis.ResponseError:  # no stream or no group yet
                continue
            if any(c["name"].decode() == name and c["pending"] == 0 for c in consumers):
                self.r.xgroup_delconsumer(key, INDEXERS, name)

    def running(self, within_s: float | None = WORKER_ALIVE_S) -> list[dict[str, Any]]:
        """Workers' last heartbeats (``name`` added), newest first: those seen within ``within_s``
        (None: every one recorded)."""
        now = time.time()
        out = [{"name": k.decode(), **json.loads(v)} for k, v in self.r.hgetall(self.keys.workers).items()]
        if within_s is not None:
            out = [w for w in out if now - w["seen"] <= within_s]
        return sorted(out, key=lambda w: -w["seen"])

    def prune(self, older_than_s: float) -> None:
        """Forget heartbeats (and consumers) of workers not seen for ``older_than_s``: they are gone."""
        for worker in self.running(None):
            if time.time() - worker["seen"] > older_than_s:
                self.forget(worker["name"])
