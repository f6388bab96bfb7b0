"""The changes stream: what every API process replays to keep its index exact between versions.

The stream is capped (``Settings.changes_maxlen``, approximate trimming), so a
reader that falls too far behind finds entries it needed trimmed away. Reads
for API processes therefore start *at* the last entry applied, inclusive:
while that entry is still there, nothing after it was trimmed (trimming takes
the oldest entries first), at no extra command. Only when it is gone does
:meth:`ChangeStream.kept_after` ask Redis whether a gap really opened.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import NamedTuple

import redis

from recommender.store.connection import Client, Part, Pipe, stream_id
from recommender.store.keys import Keys

#: Changes read per round trip; a full page means more may follow.
CHANGES_PAGE = 1000
#: Entries of the changes stream: (stream id, {op, id, num}).
Changes = list[tuple[str, dict[str, str]]]


class Change(StrEnum):
    """What happened to an item's vector: a new one to serve, or none any more."""

    UPSERT = "upsert"
    DELETE = "delete"


class Batch(NamedTuple):
    """Changes read after a position; ``suspect``: the entry at that position is gone, so entries
    right after it may have been trimmed too (:meth:`ChangeStream.kept_after` tells)."""

    changes: Changes
    suspect: bool


class StreamInfo(NamedTuple):
    """The stream's length, its oldest kept entry and the newest ever added (trimmed or not), and how many
    were ever added (None before Redis 7)."""

    length: int
    first: str
    last: str
    added: int | None


class ChangeStream(Part):
    """Announcing changes (every writer) and reading them (API processes, reindexes).

    ``maxlen`` caps the stream (the writers trim it as they add); it comes from settings.
    """

    def __init__(self, client: Client, keys: Keys, maxlen: int):
        super().__init__(client, keys)
        self.maxlen = maxlen

    def publish(self, op: Change, item_id: str, num: int, pipeline: Pipe | None = None) -> None:
        """Tell every API process that an item's vector changed or the item went away."""
        with self._pipe(pipeline) as pipe:
            pipe.xadd(self.keys.changes, {"op": op, "id": item_id, "num": num}, maxlen=self.maxlen,
                      approximate=True)

    def publish_upserts(self, items: Iterable[tuple[str, int]]) -> None:
        """Announce many vector changes at once (a reindex catching up)."""
        with self._pipe(None, transaction=False) as pipe:
            for item_id, num in items:
                self.publish(Change.UPSERT, item_id, num, pipe)

    def last_id(self) -> str:
        info = self.r.xrevrange(self.keys.changes, count=1)
        return info[0][0].decode() if info else "0-0"

    def position(self) -> str:
        """The id of the newest entry ever added (trimmed or not): reading after it misses nothing now."""
        info = self.info()
        return info.last if info else "0-0"

    def info(self) -> StreamInfo | None:
        """The stream's length and ends, None when there is no stream yet."""
        try:
            info = self.r.xinfo_stream(self.keys.changes)
        except redis.ResponseError:
            return None
        last, first = info["last-generated-id"].decode(), info.get("first-entry")
        added = info.get("entries-added")
        return StreamInfo(int(info["length"]), first[0].decode() if first else last, last,
                          int(added) if added is not None else None)

    def kept_after(self, after: str) -> bool:
        """Whether the (capped) changes stream still holds every entry after ``after``.

        Trimming takes the oldest entries, so it holds them when its oldest entry is not newer than
        ``after``, when nothing was added after ``after``, or (Redis 7) when nothing was ever trimmed;
        otherwise the entries right after ``after`` may be gone, and the answer is no. (Redis 7.0's
        ``max-deleted-entry-id`` would be exact, but only XDEL moves it, not trimming.)
        """
        info = self.info()
        if info is None or stream_id(info.last) <= stream_id(after):
            return True
        if info.length and stream_id(info.first) <= stream_id(after):
            return True
        return info.added is not None and info.added == info.length

    def after(self, after: str, count: int = CHANGES_PAGE) -> Changes:
        return decode_changes(self.r.xrange(self.keys.changes, min=f"({after}", count=count))

    def since(self, after: str) -> Batch:
        """A page of changes after ``after``, read from ``after`` itself to notice a trimmed gap (see the module)."""
        return read_batch(after, self.r.xrange(self.keys.changes, min=after, count=CHANGES_PAGE + 1))

    def poll(self, after: str) -> tuple[int, Batch]:
        """The current version and the changes after ``after``, in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for command in self.poll_commands(after):
            pipe.execute_command(*command)
        return poll_result(after, *pipe.execute())

    def poll_commands(self, after: str) -> list[tuple[str, ...]]:
        """What a poll sends, for callers with a connection of their own (see recommender.store.feed)."""
        return [("GET", self.keys.version), ("XRANGE", self.keys.changes, after, "+", "COUNT", str(CHANGES_PAGE + 1))]


def poll_result(after: str, version: bytes | None, entries: list) -> tuple[int, Batch]:
    """A poll's two replies as (version, changes after ``after``)."""
    return int(version) if version else 0, read_batch(after, entries)


def read_batch(after: str, entries: list) -> Batch:
    """XRANGE entries from ``after`` inclusive: the entries after it, and whether it was gone."""
    changes = decode_changes(entries)
    if changes and changes[0][0] == after:
        return Batch(changes[1:], False)
    return Batch(changes, after != "0-0" or bool(changes))


def decode_changes(entries: list) -> Changes:
    """XRANGE entries, as redis-py parses them (id, dict) or raw from a connection (id, [k, v, ...])."""
    changes = []
    for entry_id, data in entries:
        if not isinstance(data, dict):
            data = dict(zip(data[::2], data[1::2]))
        changes.append((entry_id.decode(), {k.decode(): v.decode() for k, v in data.items()}))
    return changes
