"""A reindex's bookkeeping: the lock that lets one run, its progress record, what it reads of each
item, and the script that writes its vectors back only into items nobody changed meanwhile.

The lock cannot be stolen from a working reindex: it is renewed on a thread of its own while the
job runs (a long single step, the HNSW build or the NMF fit, does not starve it), and each taking
hands out a fencing token from a counter, kept in the lock's value. The pointer flip is a script
that flips only while the lock still holds this job's token, so a reindex that lost its lock (it
stalled past the TTL and another one took over) cannot publish.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import redis
from redis.commands.core import Script
from redis.exceptions import LockError
from redis.lock import Lock

from recommender.store.connection import Client, Part, Pipe
from recommender.store.items import float32_bytes, from_float16
from recommender.store.keys import Keys

log = logging.getLogger(__name__)
ADOPT_CHUNK = 1000
#: A lease is renewed this many times per TTL, so one or two failed renewals do not lose it.
RENEWALS_PER_TTL = 3
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


FLIP_LUA = """
-- Point KEYS[2] (the served version) at ARGV[2], only while KEYS[1] (the reindex lock) holds ARGV[1].
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""


class LockHeld(RuntimeError):
    """Another reindex holds the lock (``holder``: its job)."""

    def __init__(self, holder: str):
        super().__init__(f"reindex {holder} holds the lock")
        self.holder = holder


class Lease:
    """The reindex lock as one job holds it: ``job:token``, renewed every TTL/``RENEWALS_PER_TTL`` on a
    daemon thread until :meth:`release`. ``lost`` turns true once a renewal finds the lock gone or
    someone else's; the flip is refused from then on (and was refused by Redis before that anyway)."""

    def __init__(self, lock: Lock, flip: Script, version_key: str, job: str, token: int, ttl_s: float):
        self.job, self.token, self.value = job, token, f"{job}:{token}"
        self.lost = False
        self._lock, self._flip, self._version_key, self._ttl_s = lock, flip, version_key, ttl_s
        self._stop = threading.Event()
        threading.Thread(target=self._renew, daemon=True, name=f"renew-{self.value}").start()

    def _renew(self) -> None:
        while not self._stop.wait(self._ttl_s / RENEWALS_PER_TTL):
            try:
                self._lock.reacquire()
            except LockError:  # expired, or taken by another job: this one may not publish
                log.error("reindex %s lost its lock (token %d)", self.job, self.token)
                self.lost = True
                return
            except redis.RedisError as exc:  # Redis unreachable for a moment: the next renewal may get through
                log.warning("reindex %s could not renew its lock: %s", self.job, exc)

    def flip(self, version: int) -> bool:
        """Make ``version`` current, only while this lease still holds the lock; whether it did."""
        return not self.lost and bool(self._flip(keys=[self._lock.name, self._version_key],
                                                 args=[self.value, version]))

    def release(self) -> None:
        """Stop renewing and free the lock, if it is still this lease's."""
        self._stop.set()
        try:
            self._lock.release()
        except LockError:
            pass  # already expired or taken over: nothing of ours to free


class Reindexing(Part):
    """The reindex lock and state, and the item reads and writes only a reindex makes."""

    def __init__(self, client: Client, keys: Keys):
        super().__init__(client, keys)
        self._adopt_script = client.register_script(ADOPT_LUA)
        self._flip_script = client.register_script(FLIP_LUA)

    def lock(self, job: str, ttl_s: float) -> Lease:
        """Take the reindex lock for ``job`` under a new fencing token; :class:`LockHeld` when another job has it."""
        lock = Lock(self.r, self.keys.reindex_lock, timeout=ttl_s, thread_local=False)
        token = int(self.r.incr(self.keys.reindex_fence))
        if not lock.acquire(blocking=False, token=f"{job}:{token}"):
            holder = self.r.get(self.keys.reindex_lock)
            if holder is None:  # it expired in between: try again, with a newer token
                return self.lock(job, ttl_s)
            raise LockHeld(holder.decode().rpartition(":")[0])
        return Lease(lock, self._flip_script, self.keys.version, job, token, ttl_s)

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
