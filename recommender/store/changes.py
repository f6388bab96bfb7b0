"""The changes stream: what every API process replays to keep its index exact between versions."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


from recommender.store.connection import Part, Pipe, stream_id

CHANGES_MAXLEN = 1_000_000
#: Changes read per round trip; a full page means more may follow.
CHANGES_PAGE = 1000
#: Entries of the changes stream: (stream id, {op, id, num}).
Changes = list[tuple[str, dict[str, str]]]


class Change(StrEnum):
    """What happened to an item's vector: a new one to serve, or none any more."""

    UPSERT = "upsert"
    DELETE = "delete"


class ChangeStream(Part):
    """Announcing changes (every writer) and reading them (API processes, reindexes)."""

    def publish(self, op: Change, item_id: str, num: int, pipeline: Pipe | None = None) -> None:
        """Tell every API process that an item's vector changed or the item went away."""
        with self._pipe(pipeline) as pipe:
            pipe.xadd(self.keys.changes, {"op": op, "id": item_id, "num": num}, maxlen=CHANGES_MAXLEN,
                      approximate=True)

    def publish_upserts(self, items: Iterable[tuple[str, int]]) -> None:
        """Announce many vector changes at once (a reindex catching up)."""
        with self._pipe(None, transaction=False) as pipe:
            for item_id, num in items:
                self.publish(Change.UPSERT, item_id, num, pipe)

    def last_id(self) -> str:
        info = self.r.xrevrange(self.keys.changes, count=1)
        return info[0][0].decode() if info else "0-0"

    def kept_after(self, after: str) -> bool:
        """Whether the (capped) changes stream still holds every entry after ``after``."""
        if not self.r.exists(self.keys.changes):
            return True
        info = self.r.xinfo_stream(self.keys.changes)
        trimmed = info.get("max-deleted-entry-id")  # Redis 7
        if trimmed is not None:
            return stream_id(trimmed.decode()) <= stream_id(after)
        first = info.get("first-entry")
        return first is None or stream_id(first[0].decode()) <= stream_id(after)

    def after(self, after: str, count: int = CHANGES_PAGE) -> Changes:
        return decode_changes(self.r.xrange(self.keys.changes, min=f"({after}", count=count))

    def poll(self, after: str) -> tuple[int, Changes]:
        """The current version and the changes after ``after``, in one round trip."""
        pipe = self.r.pipeline(transaction=False)
        for command in self.poll_commands(after):
            pipe.execute_command(*command)
        return poll_result(*pipe.execute())

    def poll_commands(self, after: str) -> list[tuple[str, ...]]:
        """What a poll sends, for callers with a connection of their own (see recommender.store.feed)."""
        return [("GET", self.keys.version), ("XRANGE", self.keys.changes, f"({after}", "+", "COUNT", str(CHANGES_PAGE))]


def poll_result(version: bytes | None, entries: list) -> tuple[int, Changes]:
    """A poll's two replies as (version, changes)."""
    return int(version) if version else 0, decode_changes(entries)


def decode_changes(entries: list) -> Changes:
    """XRANGE entries, as redis-py parses them (id, dict) or raw from a connection (id, [k, v, ...])."""
    changes = []
    for entry_id, data in entries:
        if not isinstance(data, dict):
            data = dict(zip(data[::2], data[1::2]))
        changes.append((entry_id.decode(), {k.decode(): v.decode() for k, v in data.items()}))
    return changes
