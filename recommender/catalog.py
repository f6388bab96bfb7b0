"""The item store in Redis. The key schema lives here and only here.

Keys (``P`` is the configured key prefix):

* ``P:item:<id>``     hash: metadata, status, tags, topic vector (see :class:`Item`)
* ``P:features:<id>`` string: pooled backbone features, float16 (for reindexing without a forward pass)
* ``P:items``         set of every item id
* ``P:seq``           counter that hands out the numeric ids FAISS needs
* ``P:version``       the index version the API should serve (an integer)
* ``P:representation`` the topic representation the next build uses, as ranked by ``vistas eval``
* ``P:changes``       stream of ``{op: upsert|delete, id, num}``, tailed by API processes
* ``P:ingest``        stream of ``{id}``: items waiting to be tagged and indexed by a worker
* ``P:retag``         stream of ``{id, job}``: photos a distributed reindex asks the workers to re-tag
  (both streams are read by the consumer group ``indexers``; see :meth:`Catalog.settle`)
* ``P:dead``          stream of ``{id, reason, attempts, stream, consumer}``: what the workers gave up on
* ``P:workers``       hash worker name -> JSON heartbeat ``{host, pid, device, seen, indexed, failed, ...}``
* ``P:model:<v>``     string: version ``v``'s topic model (joblib), for workers on machines without its directory
* ``P:reindex``       hash: the running or last reindex ``{job, phase, total, tagged, failed, skipped, ...}``
* ``P:reindex:lock``  string with a TTL: held by the one reindex that may run
* ``P:user:<uid>:events`` list of JSON events ``{item, type, ts}``, newest first, capped
* ``P:popularity``    sorted set item id -> summed event weight (cold-start recommendations)
* ``P:map:<version>`` hash id -> float32 map row of an item placed on version's map after it was built
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np
import redis

ITEM_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
QUEUED, INDEXED, FAILED, DELETED = "queued", "indexed", "failed", "deleted"
UPSERT, DELETE = "upsert", "delete"  # operations on the changes stream
CHANGES_MAXLEN = 1_000_000
#: Changes read per round trip; a full page means more may follow.
CHANGES_PAGE = 1000
#: Entries of the changes stream: (stream id, {op, id, num}).
Changes = list[tuple[str, dict[str, str]]]
INDEXERS = "indexers"  # the consumer group of indexer workers on the ingest and retag streams
INDEX, RETAG, FAIL, SKIP = "index", "retag", "fail", "skip"  # what settling a queued photo writes
SETTLED, GONE, LOST, STALE = "settled", "gone", "lost", "stale"  # what became of it (see Catalog.settle)
DEAD_MAXLEN = 100_000
SETTLE_CHUNK = 256
#: A worker that beat its heartbeat this recently counts as running.
WORKER_ALIVE_S = 15.0
ADOPT_CHUNK = 1000
INPUT_FIELDS = ("status", "num", "tags", "given_tags", "updated_at", "retag_job", "image", "version")


def valid_item_id(item_id: str) -> bool:
    return bool(ITEM_ID_RE.match(item_id))


def parse_timestamp(value: str) -> float:
    """ISO-8601 (``Z`` or an offset; naive means UTC) -> epoch seconds; ValueError if malformed."""
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


@dataclass
class Item:
    """One catalog item as stored; ``vector`` is the serving topic vector (float32)."""

    id: str
    title: str = ""
    kind: str = ""
    category: str = ""
    url: str = ""
    price: float | None = None
    starts_at: str = ""
    ends_at: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)
    image: str = ""
    given_tags: list[str] = field(default_factory=list)
    status: str = QUEUED
    reason: str = ""
    tags: list[tuple[str, float]] = field(default_factory=list)
    vector: np.ndarray | None = None
    version: int = 0
    num: int = 0
    updated_at: float = 0.0

    _JSON_FIELDS = ("attrs", "given_tags", "tags")

    def to_hash(self) -> dict[str, str | bytes]:
        """The Redis hash of this item (without ``num``, which Redis allocates)."""
        data = asdict(self)
        out: dict[str, str | bytes] = {}
        for key, value in data.items():
            if key in ("num", "vector"):
                continue
            if key in self._JSON_FIELDS:
                out[key] = json.dumps(value)
            elif value is None:
                out[key] = ""
            else:
                out[key] = str(value)
        if self.vector is not None:
            out["vector"] = np.asarray(self.vector, dtype=np.float32).tobytes()
        return out

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> "Item":
        data = {k.decode(): v for k, v in raw.items()}
        vector = data.pop("vector", b"")
        fields_: dict[str, Any] = {k: v.decode() for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in cls._JSON_FIELDS:
            if key in fields_:
                fields_[key] = json.loads(fields_[key])
        fields_["tags"] = [tuple(t) for t in fields_.get("tags", [])]
        fields_["price"] = float(fields_["price"]) if fields_.get("price") else None
        for key, kind in (("version", int), ("num", int), ("updated_at", float)):
            fields_[key] = kind(fields_[key]) if fields_.get(key) else kind()
        item = cls(**fields_)
        item.vector = np.frombuffer(vector, dtype=np.float32).copy() if vector else None
        return item

    def public(self) -> dict[str, Any]:
        """What clients see of an item (no internal numbers, no raw vector)."""
        return {
            "id": self.id, "title": self.title, "kind": self.kind, "category": self.category, "url": self.url,
            "price": self.price, "starts_at": self.starts_at or None, "ends_at": self.ends_at or None,
            "attrs": self.attrs, "status": self.status, "reason": self.reason or None,
            "tags": [{"tag": t, "score": s} for t, s in self.tags],
        }


@dataclass(frozen=True, slots=True)
class Summary:
    """What a result list shows of an item: every API process keeps one per served item, so it is lean.

    ``fields`` is the item's JSON in a result list; ``tags`` its tag names, best first.
    """

    id: str
    status: str
    fields: dict[str, Any]
    tags: tuple[str, ...]

    @classmethod
    def from_values(cls, item_id: str, values: Sequence[bytes | None]) -> "Summary":
        """From ``Catalog.SUMMARY_FIELDS`` values as HMGET returns them."""
        title, kind, category, url, price, starts_at, ends_at, status, tags = (
            (v or b"").decode() for v in values)
        fields = {"id": item_id, "title": title, "kind": sys.intern(kind), "category": sys.intern(category),
                  "price": float(price) if price else None, "url": url or None,
                  "starts_at": starts_at or None, "ends_at": ends_at or None}
        return cls(item_id, status, fields, tuple(sys.intern(t) for t, _ in json.loads(tags or "[]")))

    @property
    def filter_fields(self) -> dict[str, str]:
        """The fields that decide eligibility (see recommender.ranking)."""
        f = self.fields
        return {"kind": f["kind"], "category": f["category"], "starts_at": f["starts_at"] or "",
                "ends_at": f["ends_at"] or "", "status": self.status}


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

    op: str
    item_id: str
    num: int
    tags: list[tuple[str, float]] = field(default_factory=list)
    vector: np.ndarray | None = None
    features: np.ndarray | None = None
    reason: str = ""
    message: Message | None = None
    job: str = ""  # the reindex job a RETAG (or its FAIL) counts toward


def _stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


SETTLE_LUA = """
-- Settle queued photos one by one, each atomically: write the outcome, announce it on the changes
-- stream (failures also on the dead letters), count it for a reindex job, acknowledge the message.
-- 'skip' only acknowledges (and counts) a message whose item is gone.
-- KEYS: version, changes, dead, reindex; then per outcome: stream, item hash, features
-- ARGV: group, consumer, model version used, changes maxlen, dead maxlen;
--       then per outcome: op, message id ('' = none), item id, num, tags or reason, vector, features, job, attempts
local group, consumer, used, changes_max, dead_max = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local current = redis.call('GET', KEYS[1]) or '0'
local codes = {}
for i = 0, (#KEYS - 4) / 3 - 1 do
  local stream, item, feats = KEYS[5 + 3 * i], KEYS[6 + 3 * i], KEYS[7 + 3 * i]
  local op, msg, id, num, text, vector, features, job, attempts = unpack(ARGV, 6 + 9 * i, 14 + 9 * i)
  local code = 'settled'
  if msg ~= '' then
    local entry = redis.call('XPENDING', stream, group, msg, msg, 1)[1]
    if not entry or entry[2] ~= consumer then code = 'lost' end
  end
  if code == 'settled' and op == 'index' and used ~= current then code = 'stale' end
  if code == 'settled' then
    local status = redis.call('HGET', item, 'status')
    if op == 'skip' or not status or status == 'deleted' then
      code = 'gone'
    elseif op == 'fail' then
      redis.call('HSET', item, 'status', 'failed', 'reason', text)
      redis.call('HDEL', item, 'vector')
      redis.call('DEL', feats)
      redis.call('XADD', KEYS[3], 'MAXLEN', '~', dead_max, '*', 'id', id, 'reason', text, 'attempts', attempts,
                 'stream', stream, 'consumer', consumer)
      redis.call('XADD', KEYS[2], 'MAXLEN', '~', changes_max, '*', 'op', 'delete', 'id', id, 'num', num)
    else
      if op == 'index' then
        redis.call('HSET', item, 'status', 'indexed', 'reason', '', 'tags', text, 'vector', vector, 'version', current)
        redis.call('XADD', KEYS[2], 'MAXLEN', '~', changes_max, '*', 'op', 'upsert', 'id', id, 'num', num)
      else
        redis.call('HSET', item, 'tags', text, 'retag_job', job)
      end
      if features ~= '' then redis.call('SET', feats, features) else redis.call('DEL', feats) end
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

ADOPT_LUA = """
-- Write a new version's vectors into items that have not changed since the reindex read them.
-- KEYS: item hashes.  ARGV: version; then per item: updated_at as read, vector
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


class Catalog:
    """Items, vectors, the current-version pointer and the changes stream, in one Redis."""

    def __init__(self, client: redis.Redis, prefix: str):
        self.r = client
        self.prefix = prefix

    # -- keys --------------------------------------------------------------------------
    def _item_key(self, item_id: str) -> str:
        return f"{self.prefix}:item:{item_id}"

    def _features_key(self, item_id: str) -> str:
        return f"{self.prefix}:features:{item_id}"

    @property
    def _items_key(self) -> str:
        return f"{self.prefix}:items"

    @property
    def _seq_key(self) -> str:
        return f"{self.prefix}:seq"

    @property
    def _representation_key(self) -> str:
        return f"{self.prefix}:representation"

    @property
    def _version_key(self) -> str:
        return f"{self.prefix}:version"

    def _map_key(self, version: int) -> str:
        return f"{self.prefix}:map:{version}"

    @property
    def changes_key(self) -> str:
        return f"{self.prefix}:changes"

    @property
    def ingest_key(self) -> str:
        return f"{self.prefix}:ingest"

    @property
    def retag_key(self) -> str:
        return f"{self.prefix}:retag"

    @property
    def dead_key(self) -> str:
        return f"{self.prefix}:dead"

    @property
    def _workers_key(self) -> str:
        return f"{self.prefix}:workers"

    def _model_key(self, version: int) -> str:
        return f"{self.prefix}:model:{version}"

    @property
    def _reindex_key(self) -> str:
        return f"{self.prefix}:reindex"

    @property
    def _reindex_lock_key(self) -> str:
        return f"{self.prefix}:reindex:lock"

    # -- items -------------------------------------------------------------------------
    def put(self, item: Item) -> int:
        """Create or replace an item's metadata; returns its numeric id (stable across replaces)."""
        key = self._item_key(item.id)
        item.updated_at = time.time()
        num_raw = self.r.hget(key, "num")
        if num_raw is None:  # HSETNX keeps the first number if two writers race on a new id
            self.r.hsetnx(key, "num", self.r.incr(self._seq_key))
            num_raw = self.r.hget(key, "num")
        num = int(num_raw)
        pipe = self.r.pipeline()
        pipe.hdel(key, "vector", "reason")
        pipe.hset(key, mapping=item.to_hash())
        pipe.sadd(self._items_key, item.id)
        pipe.execute()
        item.num = num
        return num

    def put_many(self, items: Sequence[Item], features: Sequence[np.ndarray | None] | None = None) -> None:
        """Store many new items at once (bulk loads, benchmarks), with their stored features if given:
        one round trip per thousand items instead of four per item."""
        first = int(self.r.incrby(self._seq_key, len(items))) - len(items) + 1
        pipe = self.r.pipeline(transaction=False)
        for offset, item in enumerate(items):
            item.num, item.updated_at = first + offset, time.time()
            pipe.hset(self._item_key(item.id), mapping={**item.to_hash(), "num": item.num})
            pipe.sadd(self._items_key, item.id)
            if features is not None and features[offset] is not None:
                pipe.set(self._features_key(item.id), np.asarray(features[offset], dtype=np.float16).tobytes())
            if offset % 1000 == 999:
                pipe.execute()
        pipe.execute()

    def get(self, item_id: str) -> Item | None:
        raw = self.r.hgetall(self._item_key(item_id))
        return Item.from_hash(raw) if raw else None

    def get_many(self, item_ids: Iterable[str]) -> list[Item | None]:
        pipe = self.r.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.hgetall(self._item_key(item_id))
        return [Item.from_hash(raw) if raw else None for raw in pipe.execute()]

    SUMMARY_FIELDS = ("title", "kind", "category", "url", "price", "starts_at", "ends_at", "status", "tags")

    def summaries(self, item_ids: Iterable[str]) -> list[Summary | None]:
        """What result lists show of these items, in one round trip; None for unknown ids."""
        pipe = self.r.pipeline(transaction=False)
        item_ids = list(item_ids)
        for item_id in item_ids:
            pipe.hmget(self._item_key(item_id), self.SUMMARY_FIELDS)
        return [Summary.from_values(item_id, values) if any(v is not None for v in values) else None
                for item_id, values in zip(item_ids, pipe.execute())]

    def ids(self) -> list[str]:
        return sorted(m.decode() for m in self.r.smembers(self._items_key))

    def count(self) -> int:
        return int(self.r.scard(self._items_key))

    def iter_items(self, batch: int = 500) -> Iterator[Item]:
        """Every item, fetched ``batch`` at a time."""
        ids = self.ids()
        for start in range(0, len(ids), batch):
            yield from (item for item in self.get_many(ids[start:start + batch]) if item is not None)

    FILTER_FIELDS = ("kind", "category", "starts_at", "ends_at", "status")

    def filter_fields(self, item_ids: list[str]) -> list[dict[str, str]]:
        """The fields that decide eligibility (see recommender.ranking), for many items at once."""
        pipe = self.r.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.hmget(self._item_key(item_id), self.FILTER_FIELDS)
        return [
            {k: (v or b"").decode() for k, v in zip(self.FILTER_FIELDS, values)} for values in pipe.execute()
        ]

    def mark_indexed(
        self, item_id: str, tags: list[tuple[str, float]], vector: np.ndarray, version: int,
        features: np.ndarray | None,
    ) -> None:
        pipe = self.r.pipeline()
        pipe.hset(self._item_key(item_id), mapping={
            "status": INDEXED, "reason": "", "tags": json.dumps(tags),
            "vector": np.asarray(vector, dtype=np.float32).tobytes(), "version": version,
        })
        if features is not None:
            pipe.set(self._features_key(item_id), np.asarray(features, dtype=np.float16).tobytes())
        pipe.execute()

    def enqueue(self, item_id: str) -> str:
        """Ask the indexer workers to tag and index an item (already stored with ``put``)."""
        return self.r.xadd(self.ingest_key, {"id": item_id}).decode()

    def queue_length(self) -> int:
        return int(self.r.xlen(self.ingest_key))

    def delete(self, item_id: str) -> int | None:
        """Mark an item deleted and tell every API process to drop it; its number, None if there was no such item."""
        key = self._item_key(item_id)
        num, status = self.r.hmget(key, ["num", "status"])
        if num is None or status == DELETED.encode():
            return None
        pipe = self.r.pipeline()
        pipe.hset(key, mapping={"status": DELETED, "updated_at": time.time()})
        pipe.hdel(key, "vector")
        pipe.srem(self._items_key, item_id)
        pipe.delete(self._features_key(item_id))
        pipe.zrem(self._popularity_key, item_id)
        pipe.execute()
        self.publish_change(DELETE, item_id, int(num))
        return int(num)

    def existing(self, item_ids: list[str]) -> list[bool]:
        """Whether each item exists and is not deleted."""
        pipe = self.r.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.hget(self._item_key(item_id), "status")
        return [status not in (None, DELETED.encode()) for status in pipe.execute()]

    def mark_failed(self, item_id: str, reason: str) -> None:
        self.r.hset(self._item_key(item_id), mapping={"status": FAILED, "reason": reason})

    def features(self, item_id: str) -> np.ndarray | None:
        return self.features_many([item_id])[0]

    def features_many(self, item_ids: list[str]) -> list[np.ndarray | None]:
        raws = self.r.mget([self._features_key(i) for i in item_ids]) if item_ids else []
        return [np.frombuffer(raw, dtype=np.float16).astype(np.float32) if raw else None for raw in raws]

    # -- users -------------------------------------------------------------------------
    def _events_key(self, user_id: str) -> str:
        return f"{self.prefix}:user:{user_id}:events"

    @property
    def _popularity_key(self) -> str:
        return f"{self.prefix}:popularity"

    def add_events(self, user_id: str, events: list[dict[str, Any]], weights: list[float], cap: int) -> None:
        """Append a user's events (capped to the newest ``cap``) and count them toward popularity."""
        pipe = self.r.pipeline()
        pipe.lpush(self._events_key(user_id), *(json.dumps(e) for e in events))
        pipe.ltrim(self._events_key(user_id), 0, cap - 1)
        for event, weight in zip(events, weights):
            pipe.zincrby(self._popularity_key, weight, event["item"])
        pipe.execute()

    def user_events(self, user_id: str) -> list[dict[str, Any]]:
        """The user's kept events, newest first."""
        return [json.loads(e) for e in self.r.lrange(self._events_key(user_id), 0, -1)]

    def forget_user(self, user_id: str) -> None:
        self.r.delete(self._events_key(user_id))

    def popular(self, n: int) -> list[tuple[str, float]]:
        return [(m.decode(), s) for m, s in self.r.zrevrange(self._popularity_key, 0, n - 1, withscores=True)]

    # -- map positions of items added since a version was built -------------------------
    def set_map_rows(self, version: int, rows: dict[str, np.ndarray]) -> None:
        """Remember where items indexed after ``version`` was built sit on its map."""
        if rows:
            self.r.hset(self._map_key(version), mapping={
                item_id: np.asarray(row, dtype=np.float32).tobytes() for item_id, row in rows.items()
            })

    def map_rows(self, version: int) -> dict[str, np.ndarray]:
        """The rows :meth:`set_map_rows` stored for ``version`` (the map file holds the rest)."""
        raw = self.r.hgetall(self._map_key(version))
        return {k.decode(): np.frombuffer(v, dtype=np.float32).copy() for k, v in raw.items()}

    # -- versions and changes ----------------------------------------------------------
    def current_version(self) -> int:
        value = self.r.get(self._version_key)
        return int(value) if value else 0

    def set_current_version(self, version: int) -> None:
        self.r.set(self._version_key, version)

    def representation(self) -> str | None:
        value = self.r.get(self._representation_key)
        return value.decode() if value else None

    def set_representation(self, name: str) -> None:
        self.r.set(self._representation_key, name)

    def publish_change(self, op: str, item_id: str, num: int) -> str:
        """Tell every API process that an item's vector changed or the item went away."""
        return self.r.xadd(
            self.changes_key, {"op": op, "id": item_id, "num": num}, maxlen=CHANGES_MAXLEN, approximate=True
        ).decode()

    def first_change_id(self) -> str:
        info = self.r.xrange(self.changes_key, count=1)
        return info[0][0].decode() if info else "0-0"

    def changes_kept_after(self, stream_id: str) -> bool:
        """Whether the (capped) changes stream still holds every entry after ``stream_id``."""
        if not self.r.exists(self.changes_key):
            return True
        info = self.r.xinfo_stream(self.changes_key)
        trimmed = info.get("max-deleted-entry-id")  # Redis 7
        if trimmed is not None:
            return _stream_id(trimmed.decode()) <= _stream_id(stream_id)
        first = info.get("first-entry")
        return first is None or _stream_id(first[0].decode()) <= _stream_id(stream_id)

    def last_change_id(self) -> str:
        info = self.r.xrevrange(self.changes_key, count=1)
        return info[0][0].decode() if info else "0-0"

    def poll(self, stream_id: str) -> tuple[int, Changes]:
        """The current version and the changes after ``stream_id``, in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for command in self.poll_commands(stream_id):
            pipe.execute_command(*command)
        return self.poll_result(*pipe.execute())

    def poll_commands(self, stream_id: str) -> list[tuple[str, ...]]:
        """What a poll sends, for callers with a connection of their own (see recommender.changes)."""
        return [("GET", self._version_key),
                ("XRANGE", self.changes_key, f"({stream_id}", "+", "COUNT", str(CHANGES_PAGE))]

    @classmethod
    def poll_result(cls, version: bytes | None, entries: list) -> tuple[int, Changes]:
        """A poll's two replies as (version, changes)."""
        return int(version) if version else 0, cls._decode_changes(entries)

    @staticmethod
    def _decode_changes(entries: list) -> Changes:
        """XRANGE entries, as redis-py parses them (id, dict) or raw from a connection (id, [k, v, ...])."""
        changes = []
        for entry_id, data in entries:
            if not isinstance(data, dict):
                data = dict(zip(data[::2], data[1::2]))
            changes.append((entry_id.decode(), {k.decode(): v.decode() for k, v in data.items()}))
        return changes

    def changes_after(self, stream_id: str, count: int = CHANGES_PAGE) -> Changes:
        return self._decode_changes(self.r.xrange(self.changes_key, min=f"({stream_id}", count=count))

    def publish_upserts(self, items: Iterable[tuple[str, int]]) -> None:
        """Announce many vector changes at once (a reindex catching up)."""
        pipe = self.r.pipeline(transaction=False)
        for item_id, num in items:
            pipe.xadd(self.changes_key, {"op": UPSERT, "id": item_id, "num": num},
                      maxlen=CHANGES_MAXLEN, approximate=True)
        pipe.execute()

    def save_model(self, version: int, data: bytes) -> None:
        self.r.set(self._model_key(version), data)

    def model_bytes(self, version: int) -> bytes | None:
        return self.r.get(self._model_key(version))

    def drop_model(self, version: int) -> None:
        self.r.delete(self._model_key(version))

    # -- the indexing queue: streams read by the consumer group of indexer workers -----------
    @property
    def queue_keys(self) -> tuple[str, str]:
        """The streams workers read, most urgent first: new items before a reindex's re-tagging."""
        return self.ingest_key, self.retag_key

    def ensure_queues(self) -> None:
        """Create the consumer group on both streams (idempotent; needed again after Redis lost its data)."""
        for key in self.queue_keys:
            try:
                self.r.xgroup_create(key, INDEXERS, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def enqueue_retag(self, item_ids: Iterable[str], job: str) -> int:
        """Ask the workers to re-tag these items' photos for reindex ``job``; returns how many."""
        count = 0
        pipe = self.r.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.xadd(self.retag_key, {"id": item_id, "job": job})
            count += 1
            if count % 5000 == 0:
                pipe.execute()
        pipe.execute()
        return count

    def read_queue(self, consumer: str, count: int, block_ms: int | None, ingest: bool = True) -> list[Message]:
        """New messages for ``consumer`` (ingest first); waits up to ``block_ms`` when there are none.

        ``ingest=False`` reads only the retag stream (no topic model yet to index new items with).
        """
        keys = self.queue_keys if ingest else (self.retag_key,)
        messages = self._read_group(consumer, {key: ">" for key in keys}, count, None)
        if not messages and block_ms:
            messages = self._read_group(consumer, {key: ">" for key in keys}, count, block_ms)
        return messages

    def own_pending(self, consumer: str, count: int) -> list[Message]:
        """Messages already delivered to ``consumer`` and not settled (a restart under the same name)."""
        messages = self._read_group(consumer, {key: "0" for key in self.queue_keys}, count, None)
        return self._with_deliveries(messages)

    def _read_group(self, consumer: str, streams: dict[str, str], count: int, block_ms: int | None) -> list[Message]:
        try:
            reply = self.r.xreadgroup(INDEXERS, consumer, streams, count=count, block=block_ms)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self.ensure_queues()
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
        for key in self.queue_keys:
            try:
                reply = self.r.xautoclaim(key, INDEXERS, consumer, min_idle_ms, cursors.get(key, "0-0"), count=count)
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self.ensure_queues()
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

    def settle(self, outcomes: Sequence[Outcome], consumer: str = "", version: int = 0) -> list[str]:
        """Write each outcome, announce it and acknowledge its message, each atomically.

        One code per outcome: ``SETTLED``; ``GONE`` (the item was deleted: only acknowledged);
        ``LOST`` (another worker claimed the message meanwhile: nothing done, it settles it);
        ``STALE`` (an INDEX outcome computed with a topic model ``version`` that is no longer
        current: nothing done, transform again). A killed worker therefore leaves each message
        either fully settled or untouched, so a photo is never indexed twice or half.
        """
        if len(outcomes) > SETTLE_CHUNK:  # bounded script runs: Redis serves others in between
            return [code for start in range(0, len(outcomes), SETTLE_CHUNK)
                    for code in self.settle(outcomes[start:start + SETTLE_CHUNK], consumer, version)]
        if not outcomes:
            return []
        keys = [self._version_key, self.changes_key, self.dead_key, self._reindex_key]
        args: list[Any] = [INDEXERS, consumer, version, CHANGES_MAXLEN, DEAD_MAXLEN]
        for o in outcomes:
            m = o.message
            keys += [m.stream if m else self.ingest_key, self._item_key(o.item_id), self._features_key(o.item_id)]
            text = o.reason if o.op == FAIL else json.dumps(o.tags)
            vector = np.asarray(o.vector, dtype=np.float32).tobytes() if o.vector is not None else b""
            features = np.asarray(o.features, dtype=np.float16).tobytes() if o.features is not None else b""
            args += [o.op, m.id if m else "", o.item_id, o.num, text, vector, features, o.job or (m.job if m else ""),
                     m.deliveries if m else 1]
        return [code.decode() for code in self._settle_script(keys=keys, args=args)]

    def keep_claimed(self, consumer: str, messages: Sequence[Message]) -> None:
        """Reset the idle time of the messages ``consumer`` still holds, so that no other worker
        claims them while it is busy with a long batch (only a silent worker loses its messages)."""
        if messages:
            self._script("keep", KEEP_LUA)(keys=[m.stream for m in messages],
                                           args=[INDEXERS, consumer, *(m.id for m in messages)])

    def note_error(self, item_id: str, error: str) -> None:
        """Keep the latest indexing error on the item (its status stays queued while attempts remain)."""
        key = self._item_key(item_id)
        if self.r.hget(key, "status") == QUEUED.encode():
            self.r.hset(key, "reason", error)

    def dead_letters(self, count: int = 10) -> list[dict[str, str]]:
        """The latest dead letters, newest first."""
        return [{"at": mid.decode(), **{k.decode(): v.decode() for k, v in fields.items()}}
                for mid, fields in self.r.xrevrange(self.dead_key, count=count)]

    def queue_stats(self) -> dict[str, dict[str, int | None]]:
        """Per stream: ``waiting`` (not yet delivered; None if Redis cannot tell), ``pending``
        (delivered, not settled), ``consumers``; plus the dead letters' ``length``."""
        stats: dict[str, dict[str, int | None]] = {}
        for key in self.queue_keys:
            groups = self.r.xinfo_groups(key) if self.r.exists(key) else []
            group = next((g for g in groups if g["name"].decode() == INDEXERS), None)
            if group is None:
                stats[key] = {"waiting": self.r.xlen(key), "pending": 0, "consumers": 0}
            else:
                stats[key] = {"waiting": group.get("lag"), "pending": group["pending"], "consumers": group["consumers"]}
        stats[self.dead_key] = {"length": self.r.xlen(self.dead_key)}
        return stats

    def trim_queues(self) -> None:
        """Drop stream entries every worker is done with (delivered and settled), so streams stay small."""
        for key in self.queue_keys:
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
                keep_from = min(keep_from, oldest, key=_stream_id)
            self.r.xtrim(key, minid=keep_from, approximate=True)

    # -- worker heartbeats ---------------------------------------------------------------
    def heartbeat(self, name: str, info: dict[str, Any]) -> None:
        """Record that worker ``name`` is alive and what it has done (``seen`` is set here)."""
        self.r.hset(self._workers_key, name, json.dumps({**info, "seen": time.time()}))

    def forget_worker(self, name: str) -> None:
        """Remove a worker's heartbeat, and its group consumer unless it still holds messages
        (deleting a consumer drops its pending list: those messages would never be redelivered)."""
        self.r.hdel(self._workers_key, name)
        for key in self.queue_keys:
            try:
                consumers = self.r.xinfo_consumers(key, INDEXERS)
            except redis.ResponseError:  # no stream or no group yet
                continue
            if any(c["name"].decode() == name and c["pending"] == 0 for c in consumers):
                self.r.xgroup_delconsumer(key, INDEXERS, name)

    def workers(self, within_s: float | None = WORKER_ALIVE_S) -> list[dict[str, Any]]:
        """Workers' last heartbeats (``name`` added), newest first: those seen within ``within_s``
        (None: every one recorded)."""
        now = time.time()
        out = [{"name": k.decode(), **json.loads(v)} for k, v in self.r.hgetall(self._workers_key).items()]
        if within_s is not None:
            out = [w for w in out if now - w["seen"] <= within_s]
        return sorted(out, key=lambda w: -w["seen"])

    def prune_workers(self, older_than_s: float) -> None:
        """Forget heartbeats (and consumers) of workers not seen for ``older_than_s``: they are gone."""
        for worker in self.workers(None):
            if time.time() - worker["seen"] > older_than_s:
                self.forget_worker(worker["name"])

    # -- reindex bookkeeping ---------------------------------------------------------------
    def lock_reindex(self, job: str, ttl_s: int) -> str | None:
        """Take the reindex lock for ``job``; returns the job holding it when that is another one."""
        if self.r.set(self._reindex_lock_key, job, nx=True, ex=ttl_s):
            return None
        holder = self.r.get(self._reindex_lock_key)
        if holder is not None and holder.decode() == job:
            self.r.expire(self._reindex_lock_key, ttl_s)
            return None
        return holder.decode() if holder else self.lock_reindex(job, ttl_s)

    def unlock_reindex(self, job: str) -> None:
        if self.r.get(self._reindex_lock_key) == job.encode():
            self.r.delete(self._reindex_lock_key)

    def set_reindex_state(self, reset: bool = False, **fields: Any) -> None:
        """Record the reindex's progress (``reset`` starts a new record) for `vistas status`."""
        pipe = self.r.pipeline()
        if reset:
            pipe.delete(self._reindex_key)
        pipe.hset(self._reindex_key, mapping={k: str(v) for k, v in fields.items()})
        pipe.execute()

    def reindex_state(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.r.hgetall(self._reindex_key).items()}

    def indexing_inputs(self, item_ids: Sequence[str]) -> list[dict[str, Any]]:
        """What a reindex needs of each item: status, num, tags, given tags, updated_at, retag job, image,
        features (float32 or None). Missing items come back as None."""
        pipe = self.r.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.hmget(self._item_key(item_id), INPUT_FIELDS)
            pipe.get(self._features_key(item_id))
        replies = pipe.execute()
        out: list[dict[str, Any]] = []
        for item_id, values, feats in zip(item_ids, replies[::2], replies[1::2]):
            if values[0] is None:
                out.append(None)
                continue
            row = {k: (v or b"").decode() for k, v in zip(INPUT_FIELDS, values)}
            out.append({
                **row, "id": item_id, "num": int(row["num"] or 0), "tags": json.loads(row["tags"] or "[]"),
                "given_tags": json.loads(row["given_tags"] or "[]"),
                "features": np.frombuffer(feats, dtype=np.float16).astype(np.float32) if feats else None,
            })
        return out

    def adopt_vectors(self, version: int, rows: Sequence[tuple[str, str, np.ndarray]]) -> list[bool]:
        """Give items (id, updated_at as read, vector) their vectors of ``version``, marking them indexed,
        unless they were deleted, replaced (``updated_at`` moved) or already written with ``version``
        since the reindex read them. Returns which were written."""
        if len(rows) > ADOPT_CHUNK:
            return [flag for start in range(0, len(rows), ADOPT_CHUNK)
                    for flag in self.adopt_vectors(version, rows[start:start + ADOPT_CHUNK])]
        if not rows:
            return []
        keys = [self._item_key(item_id) for item_id, _, _ in rows]
        args: list[Any] = [version]
        for _, updated_at, vector in rows:
            args += [updated_at, np.asarray(vector, dtype=np.float32).tobytes()]
        return [bool(flag) for flag in self._adopt_script(keys=keys, args=args)]

    @property
    def _settle_script(self):
        return self._script("settle", SETTLE_LUA)

    @property
    def _adopt_script(self):
        return self._script("adopt", ADOPT_LUA)

    def _script(self, name: str, source: str):
        scripts = self.__dict__.setdefault("_scripts", {})
        if name not in scripts:
            scripts[name] = self.r.register_script(source)
        return scripts[name]

    def ping(self) -> bool:
        return bool(self.r.ping())

    def clear(self) -> None:
        """Delete every key under this prefix (tests and `vistas ingest --reset`)."""
        for key in self.r.scan_iter(match=f"{self.prefix}:*", count=1000):
            self.r.delete(key)


def connect(url: str) -> redis.Redis:
    """A client with timeouts, so a dead Redis is an error, not a hang."""
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=30)
