"""The Redis store, one module per concept (as rq keeps queue, job and worker apart):

* ``keys``: the whole key schema; ``connection``: the client and what the concepts share;
* ``items``: item hashes and features; ``users``: events and popularity;
* ``changes``: the stream API processes replay (``feed``: knowing when to read it);
* ``queue``: the ingest and retag streams and their consumer group; ``workers``: heartbeats;
* ``reindex``: the lock, the progress record and the reindex's own reads and writes;
* ``versions``: the ``current`` pointer and the per-version records beside it;
* ``replicas``: where each API process stands on the changes stream (for `vistas status`).

Each module owns its Lua script. :class:`Store` holds one of each on a client, and the few writes
that span concepts, composed on one pipeline so they are atomic.
"""

from __future__ import annotations

import redis

from recommender.settings import Settings
from recommender.store.changes import Change, ChangeStream
from recommender.store.connection import connect
from recommender.store.items import Item, Items
from recommender.store.keys import Keys
from recommender.store.queue import Queue
from recommender.store.reindex import Reindexing
from recommender.store.replicas import Replicas
from recommender.store.users import Users
from recommender.store.versions import Versions
from recommender.store.workers import Workers


class Store:
    """Everything Vistas keeps in one Redis under one key prefix."""

    def __init__(self, client: redis.Redis, prefix: str, changes_maxlen: int = Settings.changes_maxlen):
        self.r = client
        self.keys = Keys(prefix)
        self.items = Items(client, self.keys)
        self.users = Users(client, self.keys)
        self.changes = ChangeStream(client, self.keys, changes_maxlen)
        self.queue = Queue(client, self.keys, changes_maxlen)
        self.workers = Workers(client, self.keys)
        self.reindex = Reindexing(client, self.keys)
        self.versions = Versions(client, self.keys)
        self.replicas = Replicas(client, self.keys)

    @classmethod
    def from_url(cls, url: str, prefix: str, changes_maxlen: int = Settings.changes_maxlen) -> "Store":
        return cls(connect(url), prefix, changes_maxlen)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Store":
        """The store the settings name, its writers trimming the changes stream as they say."""
        return cls.from_url(settings.redis_url_or_default, settings.key_prefix, settings.changes_maxlen)

    def submit(self, item: Item) -> int:
        """Store an item for the workers to index, in one step: written, announced (a replaced item
        leaves the APIs' answers until its new photo is indexed) and queued. Returns its number."""
        pipe = self.r.pipeline()
        num = self.items.put(item, pipe)
        self.changes.publish(Change.UPSERT, item.id, num, pipe)
        self.queue.enqueue(item.id, pipe)
        pipe.execute()
        return num

    def delete_item(self, item_id: str) -> int | None:
        """Delete an item and tell every API process to drop it, in one step; its number, None if
        there was no such item."""
        pipe = self.r.pipeline()
        num = self.items.delete(item_id, pipe)
        if num is None:
            return None
        self.users.drop_item(item_id, pipe)
        self.changes.publish(Change.DELETE, item_id, num, pipe)
        pipe.execute()
        return num

    def ping(self) -> bool:
        return bool(self.r.ping())

    def clear(self) -> None:
        """Delete every key under this prefix (tests and `vistas ingest --reset`)."""
        for key in self.r.scan_iter(match=self.keys.pattern, count=1000):
            self.r.delete(key)
