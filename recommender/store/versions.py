"""What Redis keeps about index versions: the pointer to the served one, the representation the
next build uses, each version's topic model (for workers without its directory), the map rows
of items placed on a version's map after it was built, and the names merchandisers gave topics. The versions' files are
:class:`recommender.versions.VersionStore`'s."""

from __future__ import annotations

import numpy as np

from recommender.store.connection import Part, Pipe
from recommender.store.items import float32_bytes


class Versions(Part):
    """The ``current`` pointer and the per-version records beside it."""

    def current(self) -> int:
        value = self.r.get(self.keys.version)
        return int(value) if value else 0

    def set_current(self, version: int, pipeline: Pipe | None = None) -> None:
        """Publish ``version``: every API process loads it and swaps it in between requests. A reindex
        flips through its lease instead (:meth:`recommender.store.reindex.Lease.flip`: only while it holds the lock)."""
        with self._pipe(pipeline) as pipe:
            pipe.set(self.keys.version, version)

    def representation(self) -> str | None:
        value = self.r.get(self.keys.representation)
        return value.decode() if value else None

    def set_representation(self, name: str) -> None:
        self.r.set(self.keys.representation, name)

    def save_model(self, version: int, data: bytes) -> None:
        self.r.set(self.keys.model(version), data)

    def model_bytes(self, version: int) -> bytes | None:
        return self.r.get(self.keys.model(version))

    def drop_model(self, version: int) -> None:
        self.r.delete(self.keys.model(version))

    def topic_names(self) -> dict[int, str]:
        """Topic id -> the name given with ``PUT /v1/topics/<id>`` (what the API shows instead of its own)."""
        return {int(k): v.decode() for k, v in self.r.hgetall(self.keys.topic_names).items()}

    def set_topic_name(self, topic_id: int, name: str) -> None:
        self.r.hset(self.keys.topic_names, str(topic_id), name)

    def drop_topic_names(self, topic_ids: list[int]) -> None:
        """Forget the names of topics a reindex did not keep (their ids are never handed out again)."""
        if topic_ids:
            self.r.hdel(self.keys.topic_names, *[str(i) for i in topic_ids])

    def set_map_rows(self, version: int, rows: dict[str, np.ndarray]) -> None:
        """Remember where items indexed after ``version`` was built sit on its map."""
        if rows:
            self.r.hset(self.keys.map(version), mapping={item_id: float32_bytes(row) for item_id, row in rows.items()})

    def map_rows(self, version: int) -> dict[str, np.ndarray]:
        """The rows :meth:`set_map_rows` stored for ``version`` (the map file holds the rest)."""
        raw = self.r.hgetall(self.keys.map(version))
        return {k.decode(): np.frombuffer(v, dtype=np.float32).copy() for k, v in raw.items()}
