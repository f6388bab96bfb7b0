"""Items: the hash per item (metadata, status, tags, vector), its stored features and the set of ids."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any

import numpy as np
import orjson

from recommender.store.connection import Part, Pipe

ITEM_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
#: The fields that decide eligibility (see recommender.ranking).
FILTER_FIELDS = ("kind", "category", "starts_at", "ends_at", "status")
#: Ids per SSCAN round trip when the whole catalog is read.
ID_PAGE = 1000
SUMMARY_FIELDS = ("title", "kind", "category", "url", "price", "starts_at", "ends_at", "status", "tags")


class Status(StrEnum):
    """Where an item stands: written and waiting for a worker, served, refused (with a reason), or gone."""

    QUEUED = "queued"
    INDEXED = "indexed"
    FAILED = "failed"
    DELETED = "deleted"


def valid_item_id(item_id: str) -> bool:
    """Item and user ids: 1-128 characters of ``[A-Za-z0-9._:-]`` (they go into Redis keys and URLs)."""
    return bool(ITEM_ID_RE.match(item_id))


def parse_timestamp(value: str) -> float:
    """ISO-8601 (``Z`` or an offset; naive means UTC) -> epoch seconds; ValueError if malformed."""
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def float32_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def float16_bytes(features: np.ndarray) -> bytes:
    """Features are stored at half precision: half the memory, and retrieval does not notice."""
    return np.asarray(features, dtype=np.float16).tobytes()


def from_float16(raw: bytes | None) -> np.ndarray | None:
    return np.frombuffer(raw, dtype=np.float16).astype(np.float32) if raw else None


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
    status: str = Status.QUEUED
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
            out["vector"] = float32_bytes(self.vector)
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

    @property
    def filter_fields(self) -> dict[str, str]:
        """The fields that decide eligibility (see recommender.ranking)."""
        return {f: str(getattr(self, f)) for f in FILTER_FIELDS}

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
        """From ``SUMMARY_FIELDS`` values as HMGET returns them."""
        title, kind, category, url, price, starts_at, ends_at, status, tags = (
            (v or b"").decode() for v in values)
        fields = {"id": item_id, "title": title, "kind": sys.intern(kind), "category": sys.intern(category),
                  "price": float(price) if price else None, "url": url or None,
                  "starts_at": starts_at or None, "ends_at": ends_at or None}
        return cls(item_id, status, fields, tuple(sys.intern(t) for t, _ in json.loads(tags or "[]")))

    @classmethod
    def of(cls, item: Item) -> "Summary":
        """From an item in memory, as Redis would give it back (bulk loads, benchmarks)."""
        stored = item.to_hash()
        return cls.from_values(item.id, [str(stored.get(f, "")).encode() for f in SUMMARY_FIELDS])

    def record(self) -> bytes:
        """This summary as an index version stores it (see ``recommender.columns``); the id is kept beside it."""
        return orjson.dumps([self.status, {k: v for k, v in self.fields.items() if k != "id"}, self.tags])

    @classmethod
    def from_record(cls, item_id: str, record: bytes | memoryview) -> "Summary":
        status, fields, tags = orjson.loads(record)  # k of them per answer: orjson, 5 times faster than json here
        return cls(item_id, status, {"id": item_id, **fields}, tuple(tags))

    @property
    def filter_fields(self) -> dict[str, str]:
        """The fields that decide eligibility (see recommender.ranking)."""
        f = self.fields
        return {"kind": f["kind"], "category": f["category"], "starts_at": f["starts_at"] or "",
                "ends_at": f["ends_at"] or "", "status": self.status}


class Items(Part):
    """Item hashes, stored features and the set of live ids."""

    def put(self, item: Item, catalog: Pipe | None = None) -> int:
        """Create or replace an item's metadata; returns its numeric id (stable across replaces).

        Two single-slot steps: the item's hash (one transaction), then its id into the catalog's set,
        queued on ``catalog`` when given (a catalog-slot transaction the caller executes). Rewriting
        the same item is idempotent, so a write cut between the steps is repaired by retrying it.
        """
        key = self.keys.item(item.id)
        item.updated_at = time.time()
        num_raw = self.r.hget(key, "num")
        if num_raw is None:  # HSETNX keeps the first number if two writers race on a new id
            self.r.hsetnx(key, "num", self.r.incr(self.keys.seq))
            num_raw = self.r.hget(key, "num")
        item.num = int(num_raw)
        with self._pipe(None) as pipe:
            pipe.hdel(key, "vector", "reason")
            pipe.hset(key, mapping=item.to_hash())
        with self._pipe(catalog) as pipe:
            pipe.sadd(self.keys.items, item.id)
        return item.num

    def put_many(self, items: Sequence[Item], features: Sequence[np.ndarray | None] | None = None) -> None:
        """Store many new items at once (bulk loads, benchmarks), with their stored features if given:
        one round trip per thousand items instead of four per item."""
        first = int(self.r.incrby(self.keys.seq, len(items))) - len(items) + 1
        pipe = self.r.pipeline(transaction=False)
        for offset, item in enumerate(items):
            item.num, item.updated_at = first + offset, time.time()
            pipe.hset(self.keys.item(item.id), mapping={**item.to_hash(), "num": item.num})
            pipe.sadd(self.keys.items, item.id)
            if features is not None and features[offset] is not None:
                pipe.set(self.keys.features(item.id), float16_bytes(features[offset]))
            if offset % 1000 == 999:
                pipe.execute()
        pipe.execute()

    def get(self, item_id: str) -> Item | None:
        raw = self.r.hgetall(self.keys.item(item_id))
        return Item.from_hash(raw) if raw else None

    def get_many(self, item_ids: Iterable[str]) -> list[Item | None]:
        pipe = self.r.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.hgetall(self.keys.item(item_id))
        return [Item.from_hash(raw) if raw else None for raw in pipe.execute()]

    def summaries(self, item_ids: Iterable[str]) -> list[Summary | None]:
        """What result lists show of these items, in one round trip; None for unknown ids."""
        pipe = self.r.pipeline(transaction=False)
        item_ids = list(item_ids)
        for item_id in item_ids:
            pipe.hmget(self.keys.item(item_id), SUMMARY_FIELDS)
        return [Summary.from_values(item_id, values) if any(v is not None for v in values) else None
                for item_id, values in zip(item_ids, pipe.execute())]

    def scan_ids(self, count: int = ID_PAGE) -> Iterator[list[str]]:
        """Every live id, a page per SSCAN round trip (unordered, and an id may come twice): Redis is never
        blocked by one reply the size of the catalog."""
        cursor = 0
        while True:
            cursor, page = self.r.sscan(self.keys.items, cursor, count=count)
            if page:
                yield [m.decode() for m in page]
            if not cursor:
                return

    def ids(self) -> list[str]:
        """Every live id, sorted (callers sample and chunk it reproducibly), read a page at a time."""
        return sorted({item_id for page in self.scan_ids() for item_id in page})

    def pages(self, count: int = ID_PAGE) -> Iterator[list[Item]]:
        """Every live item, a page of ids at a time (unordered, an item may come twice)."""
        for page in self.scan_ids(count):
            yield [item for item in self.get_many(page) if item is not None]

    def count(self) -> int:
        return int(self.r.scard(self.keys.items))

    def iter_items(self, batch: int = 500) -> Iterator[Item]:
        """Every item, fetched ``batch`` at a time."""
        ids = self.ids()
        for start in range(0, len(ids), batch):
            yield from (item for item in self.get_many(ids[start:start + batch]) if item is not None)

    def mark_indexed(
        self, item_id: str, tags: list[tuple[str, float]], vector: np.ndarray, version: int,
        features: np.ndarray | None, pipeline: Pipe | None = None,
    ) -> None:
        """Give an item its tags and the vector of ``version`` (and keep its features, when given)."""
        with self._pipe(pipeline) as pipe:
            pipe.hset(self.keys.item(item_id), mapping={
                "status": Status.INDEXED, "reason": "", "tags": json.dumps(tags), "vector": float32_bytes(vector),
                "version": version,
            })
            if features is not None:
                pipe.set(self.keys.features(item_id), float16_bytes(features))

    def mark_failed(self, item_id: str, reason: str, pipeline: Pipe | None = None) -> None:
        with self._pipe(pipeline) as pipe:
            pipe.hset(self.keys.item(item_id), mapping={"status": Status.FAILED, "reason": reason})

    def note_error(self, item_id: str, error: str) -> None:
        """Keep the latest indexing error on the item (its status stays queued while attempts remain)."""
        key = self.keys.item(item_id)
        if self.r.hget(key, "status") == Status.QUEUED.encode():
            self.r.hset(key, "reason", error)

    def delete(self, item_id: str) -> tuple[int, bool] | None:
        """Mark an item deleted (its vector and features go, in one item-slot transaction): its number and
        whether it was live before, None if there never was such an item. The catalog's side of a delete
        (the id set, the announcement) is :meth:`unlist`'s and the caller's, after this step, so that
        no settle can write the item in between; repeating both on a deleted item is harmless."""
        key = self.keys.item(item_id)
        num, status = self.r.hmget(key, ["num", "status"])
        if num is None:
            return None
        if status == Status.DELETED.encode():
            return int(num), False
        with self._pipe(None) as pipe:
            pipe.hset(key, mapping={"status": Status.DELETED, "updated_at": time.time()})
            pipe.hdel(key, "vector")
            pipe.delete(self.keys.features(item_id))
        return int(num), True

    def unlist(self, item_id: str, pipeline: Pipe | None = None) -> None:
        """Take a deleted item's id out of the catalog's set (catalog slot)."""
        with self._pipe(pipeline) as pipe:
            pipe.srem(self.keys.items, item_id)

    def existing(self, item_ids: list[str]) -> list[bool]:
        """Whether each item exists and is not deleted."""
        pipe = self.r.pipeline(transaction=False)
        for item_id in item_ids:
            pipe.hget(self.keys.item(item_id), "status")
        return [status not in (None, Status.DELETED.encode()) for status in pipe.execute()]

    def features_many(self, item_ids: list[str]) -> list[np.ndarray | None]:
        """Stored features (float32), None for items without them."""
        if not item_ids:
            return []
        pipe = self.r.pipeline(transaction=False)  # not MGET: the keys lie in many slots
        for item_id in item_ids:
            pipe.get(self.keys.features(item_id))
        return [from_float16(raw) for raw in pipe.execute()]
