"""A reindex's bookkeeping: the lock that lets one run, its progress record, what it reads of each
item, and the script that writes its vectors back only into items nobody changed meanwhile."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from recommender.store.connection import Client, Part, Pipe
from recommender.store.items import float32_bytes, from_float16
from recommender.store.keys import Keys

ADOPT_CHUNK = 1000
INPUT_FIELDS = ("status", "num", "tags", "given_tags", "updated_at", "retag_job", "image", "version")

ADOPT_LUA = """
-- Write a new version's vectors into items that have not changed since the reindex read them.
-- Each item is written or not on its own, so a reindex cut short is completed by adopting again.
-- KEYS: item hashes (one slot on a cluster).  ARGV: version; then per item: updated_at as read, vector
local version = ARGV[1]
local written = {}
for i = 1, #KEYS do
  local seen, vector = ARGV[2 * i], ARGV[2 * i + 1]
  local state = redis.call('HMGET', KEYS[i], 'status', 'version', 'updated_at')
  if state[1] and state[1] ~= 'deleted' and state[2] ~= version and state[3] == seen then
    redis.call('HSET', KEYS[i], 'status', 'indexed', 'reason', '', 'vector', vector, 'version', version)
    written[i] = 1
  else
    written[i] = 0
  end
end
return written
"""


class Reindexing(Part):
    """The reindex lock and state, and the item reads and writes only a reindex makes."""

    def __init__(self, client: Client, keys: Keys):
        super().__init__(client, keys)
        self._adopt_script = client.register_script(ADOPT_LUA)

    def lock(self, job: str, ttl_s: int) -> str | None:
        """Take the reindex lock for ``job``; returns the job holding it when that is another one."""
        key = self.keys.reindex_lock
        if self.r.set(key, job, nx=True, ex=ttl_s):
            return None
        holder = self.r.get(key)
        if holder is not None and holder.decode() == job:
            self.r.expire(key, ttl_s)
            return None
        return holder.decode() if holder else self.lock(job, ttl_s)

    def unlock(self, job: str) -> None:
        if self.r.get(self.keys.reindex_lock) == job.encode():
            self.r.delete(self.keys.reindex_lock)

    def set_state(self, reset: bool = False, pipeline: Pipe | None = None, **fields: Any) -> None:
        """Record the reindex's progress (``reset`` starts a new record) for `vistas status`."""
        with self._pipe(pipeline) as pipe:
            if reset:
                pipe.delete(self.keys.reindex)
            pipe.hset(self.keys.reindex, mapping={k: str(v) for k, v in fields.items()})

    def state(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.r.hgetall(self.keys.reindex).items()}

    def inputs(self, item_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """What a reindex needs of each item: status, num, tags, given tags, updated_at, retag job, image,
        features (float32 or None). Missing items come back as None."""
        pipe = self.r.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.hmget(self.keys.item(item_id), INPUT_FIELDS)
            pipe.get(self.keys.features(item_id))
        replies = pipe.execute()
        out: list[dict[str, Any] | None] = []
        for item_id, values, feats in zip(item_ids, replies[::2], replies[1::2]):
            if values[0] is None:
                out.append(None)
                continue
            row = {k: (v or b"").decode() for k, v in zip(INPUT_FIELDS, values)}
            out.append({
                **row, "id": item_id, "num": int(row["num"] or 0), "tags": json.loads(row["tags"] or "[]"),
                "given_tags": json.loads(row["given_tags"] or "[]"), "features": from_float16(feats),
            })
        return out

    def adopt(self, version: int, rows: Sequence[tuple[str, str, np.ndarray]]) -> list[bool]:
        """Give items (id, updated_at as read, vector) their vectors of ``version``, marking them indexed,
        unless they were deleted, replaced (``updated_at`` moved) or already written with ``version``
        since the reindex read them. Returns which were written. On a cluster that is one script per
        item (each has its own slot); on a single Redis, one per chunk."""
        if len(rows) > ADOPT_CHUNK:
            return [flag for start in range(0, len(rows), ADOPT_CHUNK)
                    for flag in self.adopt(version, rows[start:start + ADOPT_CHUNK])]
        if not rows:
            return []
        written = [False] * len(rows)
        for group in self._by_slot(self.keys.item(item_id) for item_id, _, _ in rows):  # one script per slot
            args: list[Any] = [version]
            for i in group:
                args += [rows[i][1], float32_bytes(rows[i][2])]
            flags = self._adopt_script(keys=[self.keys.item(rows[i][0]) for i in group], args=args)
            for i, flag in zip(group, flags):
                written[i] = bool(flag)
        return written
