"""The served topics under the names merchandisers gave them (``PUT /v1/topics/<id>``).

The names live in Redis (``P:topic-names``), not in the immutable version, so a
rename shows at once and outlives reindexes while the topic keeps its id. Every
answer that names topics (the topic list, an item's topics, the reasons of a
result, the map page) reads them through here: each process rereads the hash
at most every ``TTL_S`` seconds, and at once after a rename of its own.
"""

from __future__ import annotations

import threading
import time

from recommender.store.versions import Versions

#: How stale another process's rename may be, in seconds.
TTL_S = 1.0


class TopicNames:
    """A process's cached copy of the given names, applied to a version's topics."""

    def __init__(self, versions: Versions):
        self.versions = versions
        self._names: dict[int, str] = {}
        self._read_at = float("-inf")
        self._lock = threading.Lock()

    def names(self) -> dict[int, str]:
        with self._lock:
            if time.monotonic() - self._read_at >= TTL_S:
                self._names, self._read_at = self.versions.topic_names(), time.monotonic()
            return self._names

    def forget(self) -> None:
        """Reread on the next use (this process just renamed a topic)."""
        with self._lock:
            self._read_at = float("-inf")

    def apply(self, topics: list[dict]) -> list[dict]:
        """``topics`` with their given names; ``model_name`` keeps what the topic model called it."""
        given = self.names()
        if not given:
            return topics
        return [{**t, "name": given[t["id"]], "model_name": t["name"]} if t["id"] in given else t for t in topics]
