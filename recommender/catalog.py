"""The item store in Redis. The key schema lives here and only here.

Keys (``P`` is the configured key prefix):

* ``P:item:<id>``     hash: metadata, status, tags, topic vector (see :class:`Item`)
* ``P:features:<id>`` string: pooled backbone features, float16 (for reindexing without a forward pass)
* ``P:items``         set of every item id
* ``P:seq``           counter that hands out the numeric ids FAISS needs
* ``P:nums``          hash numeric id -> item id
* ``P:version``       the index version the API should serve (an integer)
* ``P:representation`` the topic representation the next build uses, as ranked by ``vistas eval``
* ``P:changes``       stream of ``{op: upsert|delete, id, num}``, tailed by API processes
* ``P:ingest``        stream of ``{id}``: items waiting to be tagged and indexed by a worker
* ``P:user:<uid>:events`` list of JSON events ``{item, type, ts}``, newest first, capped
* ``P:popularity``    sorted set item id -> summed event weight (cold-start recommendations)
* ``P:map:<version>`` hash id -> float32 map row of an item placed on version's map after it was built
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import redis

ITEM_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
QUEUED, INDEXED, FAILED, DELETED = "queued", "indexed", "failed", "deleted"
UPSERT, DELETE = "upsert", "delete"  # operations on the changes stream
CHANGES_MAXLEN = 1_000_000


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
    def _nums_key(self) -> str:
        return f"{self.prefix}:nums"

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
        pipe.hset(self._nums_key, num, item.id)
        pipe.execute()
        item.num = num
        return num

    def get(self, item_id: str) -> Item | None:
        raw = self.r.hgetall(self._item_key(item_id))
        return Item.from_hash(raw) if raw else None

    def get_many(self, item_ids: Iterable[str]) -> list[Item | None]:
        pipe = self.r.pipeline()
        for item_id in item_ids:
            pipe.hgetall(self._item_key(item_id))
        return [Item.from_hash(raw) if raw else None for raw in pipe.execute()]

    SUMMARY_FIELDS = ("id", "title", "kind", "category", "url", "price", "starts_at", "ends_at", "tags", "status")

    def summaries(self, item_ids: Iterable[str]) -> list[Item | None]:
        """Items with only the fields a result list shows (no vector, attrs or image): cheaper than get_many."""
        pipe = self.r.pipeline()
        for item_id in item_ids:
            pipe.hmget(self._item_key(item_id), self.SUMMARY_FIELDS)
        out: list[Item | None] = []
        for values in pipe.execute():
            if values[0] is None:
                out.append(None)
            else:
                out.append(Item.from_hash({k.encode(): v for k, v in zip(self.SUMMARY_FIELDS, values) if v is not None}))
        return out

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
        pipe = self.r.pipeline()
        for item_id in item_ids:
            pipe.hmget(self._item_key(item_id), self.FILTER_FIELDS)
        return [
            {k: (v or b"").decode() for k, v in zip(self.FILTER_FIELDS, values)} for values in pipe.execute()
        ]

    def id_of_num(self, num: int) -> str | None:
        value = self.r.hget(self._nums_key, num)
        return value.decode() if value else None

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

    def delete(self, item_id: str) -> bool:
        """Mark an item deleted and tell every API process to drop it; False if it did not exist."""
        key = self._item_key(item_id)
        num = self.r.hget(key, "num")
        if num is None or self.r.hget(key, "status") == DELETED.encode():
            return False
        pipe = self.r.pipeline()
        pipe.hset(key, mapping={"status": DELETED, "updated_at": time.time()})
        pipe.hdel(key, "vector")
        pipe.srem(self._items_key, item_id)
        pipe.delete(self._features_key(item_id))
        pipe.zrem(self._popularity_key, item_id)
        pipe.execute()
        self.publish_change(DELETE, item_id, int(num))
        return True

    def existing(self, item_ids: list[str]) -> list[bool]:
        """Whether each item exists and is not deleted."""
        pipe = self.r.pipeline()
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

    def last_change_id(self) -> str:
        info = self.r.xrevrange(self.changes_key, count=1)
        return info[0][0].decode() if info else "0-0"

    def poll(self, stream_id: str, count: int = 1000) -> tuple[int, list[tuple[str, dict[str, str]]]]:
        """The current version and the changes after ``stream_id``, in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        pipe.get(self._version_key)
        pipe.xrange(self.changes_key, min=f"({stream_id}", count=count)
        version, entries = pipe.execute()
        return int(version) if version else 0, self._decode_changes(entries)

    @staticmethod
    def _decode_changes(entries: list) -> list[tuple[str, dict[str, str]]]:
        return [(eid.decode(), {k.decode(): v.decode() for k, v in data.items()}) for eid, data in entries]

    def changes_after(self, stream_id: str, count: int = 1000) -> list[tuple[str, dict[str, str]]]:
        return self._decode_changes(self.r.xrange(self.changes_key, min=f"({stream_id}", count=count))

    def ping(self) -> bool:
        return bool(self.r.ping())

    def clear(self) -> None:
        """Delete every key under this prefix (tests and `vistas ingest --reset`)."""
        for key in self.r.scan_iter(match=f"{self.prefix}:*", count=1000):
            self.r.delete(key)


def connect(url: str) -> redis.Redis:
    """A client with timeouts, so a dead Redis is an error, not a hang."""
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=30)
