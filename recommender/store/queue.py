"""The indexing queue: the ingest and retag streams, read by one consumer group of indexer workers.

A worker settles each message it took (:meth:`Queue.settle`): the item is written, then the change
announced, a reindex's counter moved and the message acknowledged in one atomic catalog step; a
worker killed in between leaves the message to be settled again, which writes the same item.
Failures also land on the dead letters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import numpy as np
import redis

from recommender.store.connection import Client, Part, Pipe, stream_id
from recommender.store.items import float16_bytes, float32_bytes
from recommender.store.keys import Keys

INDEXERS = "indexers"  # the consumer group of indexer workers on the ingest and retag streams
DEAD_MAXLEN = 100_000
SETTLE_CHUNK = 256


class Op(StrEnum):
    """What settling a queued photo writes (see :class:`Outcome`)."""

    INDEX = "index"
    RETAG = "retag"
    FAIL = "fail"
    SKIP = "skip"


class Settled(StrEnum):
    """What became of an outcome (see :meth:`Queue.settle`)."""

    SETTLED = "settled"
    GONE = "gone"
    LOST = "lost"
    STALE = "stale"


@dataclass(frozen=True)
class Message:
    """One queued photo as a worker received it from the ingest or the retag stream."""

    stream: str
    id: str
    item_id: str
    job: str = ""  # the reindex job, for re-tagging
    deliveries: int = 1  # how many times it was handed to a worker, this time included

    @classmethod
    def parse(cls, stream: str, message_id: str, fields: dict[bytes, bytes] | None) -> "Message":
        """A message from its stream entry (a trimmed entry has no fields: empty item id)."""
        fields = fields or {}
        return cls(stream, message_id, fields.get(b"id", b"").decode(), fields.get(b"job", b"").decode())


@dataclass
class Outcome:
    """What to write for one item: INDEX (tags and vector), RETAG (tags and features only),
    FAIL (the reason; the item leaves the index and a dead letter records it) or SKIP (nothing:
    the item is gone; its message is only acknowledged)."""

    op: Op
    item_id: str
    num: int
    tags: list[tuple[str, float]] = field(default_factory=list)
    vector: np.ndarray | None = None
    features: np.ndarray | None = None
    reason: str = ""
    message: Message | None = None
    job: str = ""  # the reindex job a RETAG (or its FAIL) counts toward
    #: The item's ``updated_at`` as read before the work began (None: not checked). A write since (a PUT with a new
    #: photo, which queued its own message) makes the outcome GONE: a slower worker cannot undo a faster one's.
    seen: float | None = None


CATALOG_LUA = """
-- The catalog's half of settling queued photos (one slot: the pointer, the streams, the reindex record).
-- 'check': which outcomes may be written: 'lost' (another worker claimed the message since), 'stale' (an
--   index outcome computed with a model that is no longer current), else 'settled'. Writes nothing.
-- 'commit': for outcomes the item step wrote ('settled') or found gone ('gone'), unless lost or stale by
--   now: announce the change (failures also on the dead letters), count it for a reindex job, acknowledge.
-- KEYS: version, changes, dead, reindex; then per outcome: its stream
-- ARGV: mode, group, consumer, model version used, changes maxlen, dead maxlen;
--       then per outcome: op, message id ('' = none), item id, num, item step's code, reason, job, attempts
local mode, group, consumer, used, changes_max, dead_max = unpack(ARGV, 1, 6)
local current = redis.call('GET', KEYS[1]) or '0'
local codes = {}
for i = 0, #KEYS - 5 do
  local stream = KEYS[5 + i]
  local op, msg, id, num, code, reason, job, attempts = unpack(ARGV, 7 + 8 * i, 14 + 8 * i)
  if msg ~= '' then
    local entry = redis.call('XPENDING', stream, group, msg, msg, 1)[1]
    if not entry or entry[2] ~= consumer then code = 'lost' end
  end
  if code ~= 'lost' and op == 'index' and used ~= current then code = 'stale' end
  if mode == 'check' then
    if code ~= 'lost' and code ~= 'stale' then code = 'settled' end
  elseif code == 'settled' or code == 'gone' then
    if code == 'settled' and op == 'fail' then
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', dead_max, '*', 'id', id, 'reason', reason, 'attempts', attempts,
                 'stream', stream, 'consumer', consumer)
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', changes_max, '*', 'op', 'delete', 'id', id, 'num', num)
    elseif code == 'settled' and op == 'index' then
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', changes_max, '*', 'op', 'upsert', 'id', id, 'num', num)
    end
    if job ~= '' and redis.call('HGET', KEYS[4], 'job') == job then
      local counter = {settled = 'tagged', gone = 'skipped'}
      redis.call('HINCRBY', KEYS[4], op == 'fail' and code == 'settled' and 'failed' or counter[code], 1)
    end
    if msg ~= '' then redis.call('XACK', stream, group, msg) end
  end
  codes[i + 1] = code
end
return codes
"""

ITEM_LUA = """
-- The items' half of settling: write each outcome into its item, unless the item is gone (never written,
-- deleted, or written again since the outcome's worker read it) or the outcome is 'skip'. Returns 'settled' or
-- 'gone' per outcome. Writing the same outcome again writes the same values, so a settle retried after a crash
-- is idempotent.
-- KEYS: per outcome: item hash, features (one slot on a cluster: one item's, or several sharing one)
-- ARGV: model version used; then per outcome: op, tags or reason, vector, features, job, updated_at as read
--       ('' = not checked)
local used = ARGV[1]
local codes = {}
for i = 0, #KEYS / 2 - 1 do
  local item, feats = KEYS[1 + 2 * i], KEYS[2 + 2 * i]
  local op, text, vector, features, job, seen = unpack(ARGV, 2 + 6 * i, 7 + 6 * i)
  local state = redis.call('HMGET', item, 'status', 'updated_at')
  local status = state[1]
  local code = 'settled'
  if op == 'skip' or not status or status == 'deleted'
     or (seen ~= '' and (tonumber(state[2]) or 0) ~= tonumber(seen)) then
    code = 'gone'
  elseif op == 'fail' then
    redis.call('HSET', item, 'status', 'failed', 'reason', text)
    redis.call('HDEL', item, 'vector')
    redis.call('DEL', feats)
  else
    if op == 'index' then
      redis.call('HSET', item, 'status', 'indexed', 'reason', '', 'tags', text, 'vector', vector, 'version', used)
    else
      redis.call('HSET', item, 'tags', text, 'retag_job', job)
    end
    if features ~= '' then redis.call('SET', feats, features) else redis.call('DEL', feats) end
  end
  codes[i + 1] = code
end
return codes
"""

KEEP_LUA = """
-- Touch (XCLAIM JUSTID: idle reset, delivery count kept) the messages the consumer still owns.
-- KEYS: each message's stream.  ARGV: group, consumer, then the message ids
for i = 1, #KEYS do
  local entry = redis.call('XPENDING', KEYS[i], ARGV[1], ARGV[i + 2], ARGV[i + 2], 1)[1]
  if entry and entry[2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[i], ARGV[1], ARGV[2], 0, ARGV[i + 2], 'JUSTID')
  end
end
return 0
"""


class Queue(Part):
    """The ingest and retag streams and their consumer group; settling trims the changes stream to
    ``changes_maxlen`` entries as it announces."""

    def __init__(self, client: Client, keys: Keys, changes_maxlen: int):
        super().__init__(client, keys)
        self.changes_maxlen = changes_maxlen
        self._catalog_script = client.register_script(CATALOG_LUA)
        self._item_script = client.register_script(ITEM_LUA)
        self._keep_script = client.register_script(KEEP_LUA)

    def ensure(self) -> None:
        """Create the consumer group on both streams (idempotent; needed again after Redis lost its data)."""
        for key in self.keys.queues:
            try:
                self.r.xgroup_create(key, INDEXERS, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def enqueue(self, item_id: str, pipeline: Pipe | None = None) -> str | None:
        """Ask the indexer workers to tag and index an item (stored with ``Items.put``). Returns the
        message id, or None when queued on the caller's pipeline (its reply holds the id)."""
        if pipeline is not None:
            pipeline.xadd(self.keys.ingest, {"id": item_id})
            return None
        return self.r.xadd(self.keys.ingest, {"id": item_id}).decode()

    def enqueue_retag(self, item_ids: Iterable[str], job: str) -> int:
        """Ask the workers to re-tag these items' photos for reindex ``job``; returns how many."""
        count = 0
        pipe = self.r.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.xadd(self.keys.retag, {"id": item_id, "job": job})
            count += 1
            if count % 5000 == 0:
                pipe.execute()
        pipe.execute()
        return count

    def length(self) -> int:
        """Entries in the ingest stream."""
        return int(self.r.xlen(self.keys.ingest))

    def read(self, consumer: str, count: int, block_ms: int | None, ingest: bool = True) -> list[Message]:
        """New messages for ``consumer`` (ingest first); waits up to ``block_ms`` when there are none.

        ``ingest=False`` reads only the retag stream (no topic model yet to index new items with).
        """
        keys = self.keys.queues if ingest else (self.keys.retag,)
        messages = self._read_group(consumer, {key: ">" for key in keys}, count, None)
        if not messages and block_ms:
            messages = self._read_group(consumer, {key: ">" for key in keys}, count, block_ms)
        return messages

    def own_pending(self, consumer: str, count: int) -> list[Message]:
        """Messages already delivered to ``consumer`` and not settled (a restart under the same name)."""
        messages = self._read_group(consumer, {key: "0" for key in self.keys.queues}, count, None)
        return self._with_deliveries(messages)

    def _read_group(self, consumer: str, streams: dict[str, str], count: int, block_ms: int | None) -> list[Message]:
        try:
            reply = self.r.xreadgroup(INDEXERS, consumer, streams, count=count, block=block_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure()
            return []
        return [
            Message.parse(key.decode(), mid.decode(), fields)
            for key, entries in reply or [] for mid, fields in entries
        ]

    def claim_stale(self, consumer: str, min_idle_ms: int, count: int, cursors: dict[str, str]) -> list[Message]:
        """Take over messages whose worker has not settled them for ``min_idle_ms`` (it died).

        ``cursors`` remembers where each stream's scan of the pending entries stopped.
        """
        claimed: list[Message] = []
        for key in self.keys.queues:
            try:
                reply = self.r.xautoclaim(key, INDEXERS, consumer, min_idle_ms, cursors.get(key, "0-0"), count=count)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self.ensure()
                return []
            cursors[key] = reply[0].decode()
            claimed += [Message.parse(key, mid.decode(), fields) for mid, fields in reply[1]]
        return self._with_deliveries(claimed)

    def _with_deliveries(self, messages: list[Message]) -> list[Message]:
        if not messages:
            return []
        pipe = self.r.pipeline(transaction=False)
        for m in messages:
            pipe.xpending_range(m.stream, INDEXERS, min=m.id, max=m.id, count=1)
        counts = [rows[0]["times_delivered"] if rows else 1 for rows in pipe.execute()]
        return [replace(m, deliveries=int(n)) for m, n in zip(messages, counts)]

    def settle(self, outcomes: Sequence[Outcome], consumer: str = "", version: int = 0) -> list[Settled]:
        """Write each outcome, announce it and acknowledge its message.

        One code per outcome: ``SETTLED``; ``GONE`` (the item was deleted, or written again since the outcome's
        ``seen``, when its own message indexes the new photo: only acknowledged);
        ``LOST`` (another worker claimed the message meanwhile: it settles it); ``STALE`` (an INDEX
        outcome computed with a topic model ``version`` that is no longer current: transform again).

        Three single-slot steps, so that it runs on a Redis Cluster too: the catalog checks which
        outcomes may be written (nothing is written for a lost or stale one); the items are written
        (one script per slot); the catalog announces, counts and acknowledges, checking ownership and
        the model version again. A worker killed between the steps leaves its messages pending, so
        another worker settles them again: rewriting an item writes the same values, and a message is
        announced, counted and acknowledged once, atomically. An item written with a model that a
        reindex retired meanwhile is reported ``STALE`` and rewritten by the caller before anything
        announces it. A photo is therefore never indexed twice or half.
        """
        if len(outcomes) > SETTLE_CHUNK:  # bounded script runs: Redis serves others in between
            return [code for start in range(0, len(outcomes), SETTLE_CHUNK)
                    for code in self.settle(outcomes[start:start + SETTLE_CHUNK], consumer, version)]
        if not outcomes:
            return []
        codes = self._catalog("check", outcomes, [Settled.SETTLED] * len(outcomes), consumer, version)
        todo = [i for i, code in enumerate(codes) if code == Settled.SETTLED]
        written = self._write_items([outcomes[i] for i in todo], version)
        final = self._catalog("commit", [outcomes[i] for i in todo], written, consumer, version)
        for i, code in zip(todo, final):
            codes[i] = code
        return codes

    def _catalog(self, mode: str, outcomes: Sequence[Outcome], codes: Sequence[Settled], consumer: str,
                 version: int) -> list[Settled]:
        if not outcomes:
            return []
        keys = [self.keys.version, self.keys.changes, self.keys.dead, self.keys.reindex]
        args: list[Any] = [mode, INDEXERS, consumer, version, self.changes_maxlen, DEAD_MAXLEN]
        for o, code in zip(outcomes, codes):
            m = o.message
            keys.append(m.stream if m else self.keys.ingest)
            args += [o.op, m.id if m else "", o.item_id, o.num, code, o.reason if o.op == Op.FAIL else "",
                     o.job or (m.job if m else ""), m.deliveries if m else 1]
        return [Settled(code.decode()) for code in self._catalog_script(keys=keys, args=args)]

    def _write_items(self, outcomes: Sequence[Outcome], version: int) -> list[Settled]:
        codes = [Settled.GONE] * len(outcomes)
        for group in self._by_slot(self.keys.item(o.item_id) for o in outcomes):
            keys: list[str] = []
            args: list[Any] = [version]
            for o in (outcomes[i] for i in group):
                keys += [self.keys.item(o.item_id), self.keys.features(o.item_id)]
                text = o.reason if o.op == Op.FAIL else json.dumps(o.tags)
                vector = float32_bytes(o.vector) if o.vector is not None else b""
                features = float16_bytes(o.features) if o.features is not None else b""
                args += [o.op, text, vector, features, o.job or (o.message.job if o.message else ""),
                         "" if o.seen is None else repr(o.seen)]
            for i, code in zip(group, self._item_script(keys=keys, args=args)):
                codes[i] = Settled(code.decode())
        return codes

    def keep_claimed(self, consumer: str, messages: Sequence[Message]) -> None:
        """Reset the idle time of the messages ``consumer`` still holds, so that no other worker
        claims them while it is busy with a long batch (only a silent worker loses its messages)."""
        if messages:
            self._keep_script(keys=[m.stream for m in messages], args=[INDEXERS, consumer, *(m.id for m in messages)])

    def dead_letters(self, count: int = 10) -> list[dict[str, str]]:
        """The latest dead letters, newest first."""
        return [{"at": mid.decode(), **{k.decode(): v.decode() for k, v in fields.items()}}
                for mid, fields in self.r.xrevrange(self.keys.dead, count=count)]

    def stats(self) -> dict[str, dict[str, int | None]]:
        """Per stream: ``waiting`` (not yet delivered; None if Redis cannot tell), ``pending``
        (delivered, not settled), ``consumers``; plus the dead letters' ``length``."""
        stats: dict[str, dict[str, int | None]] = {}
        for key in self.keys.queues:
            groups = self.r.xinfo_groups(key) if self.r.exists(key) else []
            group = next((g for g in groups if g["name"].decode() == INDEXERS), None)
            if group is None:
                stats[key] = {"waiting": self.r.xlen(key), "pending": 0, "consumers": 0}
            else:
                stats[key] = {"waiting": group.get("lag"), "pending": group["pending"], "consumers": group["consumers"]}
        stats[self.keys.dead] = {"length": self.r.xlen(self.keys.dead)}
        return stats

    def trim(self) -> None:
        """Drop stream entries every worker is done with (delivered and settled), so streams stay small."""
        for key in self.keys.queues:
            try:
                groups = self.r.xinfo_groups(key)
            except redis.ResponseError:
                continue
            group = next((g for g in groups if g["name"].decode() == INDEXERS), None)
            if group is None:
                continue
            keep_from = group["last-delivered-id"].decode()
            if group["pending"]:
                oldest = self.r.xpending(key, INDEXERS)["min"].decode()
                keep_from = min(keep_from, oldest, key=stream_id)
            self.r.xtrim(key, minid=keep_from, approximate=True)
