"""The Redis store, one module per concept (as rq keeps queue, job and worker apart):

* ``keys``: the whole key schema; ``connection``: the client and what the concepts share;
* ``items``: item hashes and features; ``users``: events and popularity;
* ``changes``: the stream API processes replay (``feed``: knowing when to read it);
* ``queue``: the ingest and retag streams and their consumer group; ``workers``: heartbeats;
* ``reindex``: the lock, the progress record and the reindex's own reads and writes;
* ``versions``: the ``current`` pointer and the per-version records beside it;
* ``replicas``: where each API process stands on the changes stream (for `vistas status`).

Each module owns its Lua script. :class:`Store` holds one of each on a client, and the few writes
that span concepts: each a few single-slot transactions (an item's or a user's slot, then the
catalog's), ordered so that a write cut between them is repaired by retrying it.
"""

from __future__ import annotations

from recommender.settings import Settings
from recommender.store.changes import Change, ChangeStream
from recommender.store.connection import Client, connect
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

    def __init__(self, client: Client, prefix: str, changes_maxlen: int = Settings.changes_maxlen):
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
        """Store an item for the workers to index: written, then announced (a replaced item leaves the
        APIs' answers until its new photo is indexed) and queued in one catalog transaction. The item
        is written first, so no worker can take the message before its photo is there; a write cut in
        between is repaired by submitting again. Returns its number."""
        pipe = self.r.pipeline()
        num = self.items.put(item, pipe)
        self.changes.publish(Change.UPSERT, item.id, num, pipe)
        self.queue.enqueue(item.id, pipe)
        pipe.execute()
        return num

    def delete_item(self, item_id: str) -> int | None:
        """Delete an item, then tell every API process to drop it in one catalog transaction; its number,
        None if there was no such item (or it was deleted already).

        Marking it deleted comes first, so that a worker settling it meanwhile finds it gone. Deleting a
        deleted item announces it again, so a delete cut between its two steps is completed by retrying it."""
        deleted = self.items.delete(item_id)
        if deleted is None:
            return None
        num, was_live = deleted
        pipe = self.r.pipeline()
        self.items.unlist(item_id, pipe)
        self.users.drop_item(item_id, pipe)
        self.changes.publish(Change.DELETE, item_id, num, pipe)
        pipe.execute()
        return num if was_live else None

    def ping(self) -> bool:
        return bool(self.r.ping())

    def clear(self) -> None:
        """Delete every key under this prefix (tests and `vistas ingest --reset`)."""
        for pattern in self.keys.patterns:  # a cluster client scans every node
            for key in self.r.scan_iter(match=pattern, count=1000):
                self.r.delete(key)
