"""Knowing that nothing changed since the last poll, without asking Redis (client-side tracking).

Every query must see every change committed before it began, a delete made
through another API process included. Polling the changes stream before each
query guarantees that at one Redis round trip per query, which was a quarter
of the server time of ``similar``. ``ChangeFeed`` polls on a connection of its
own with ``CLIENT TRACKING`` on: the poll's reads (the version pointer and the
changes stream) register this connection's interest in those two keys, and
the next write to either makes Redis push an invalidation down it, queued in
the same event-loop turn as the writer's reply and so sent before the writer
can tell anyone about its write. A query then only checks that connection for
pushed data, a non-blocking read, and polls when there is some.

Anything that could lose a push makes the next query poll: the connection
closing or failing (Redis restarted, the client killed), a push arriving in
the middle of a poll. Whatever happens, a process polls at least every
``MAX_TRUST`` seconds, so a network failure that delivers nothing, not even a
reset, costs at most that much staleness.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from redis.connection import ConnectionInterface

from recommender.store.changes import CHANGES_PAGE, Batch, ChangeStream, poll_result

log = logging.getLogger(__name__)
#: The longest a process trusts "nothing pushed" to mean "nothing changed" before polling anyway.
MAX_TRUST = 1.0


class ChangeFeed:
    """The version pointer and the changes stream of one API process, polled only when they may have moved."""

    def __init__(self, changes: ChangeStream):
        self.changes = changes
        self._conn: ConnectionInterface | None = None
        self._trusted_until = 0.0  # monotonic; until then, no push means no change
        self._pushed = False
        self._untracked = False  # this Redis or connection cannot track: poll on every query

    def poll(self, stream_id: str) -> tuple[int, Batch] | None:
        """The current version and the changes after ``stream_id``; None when nothing can have changed."""
        if self._untracked:
            return self.changes.poll(stream_id)
        if time.monotonic() < self._trusted_until and not self._pending():
            return None
        self._trusted_until = 0.0
        try:
            version, batch = self._tracked_poll(stream_id)
        except redis.ResponseError as exc:  # CLIENT TRACKING refused (Redis before 6)
            log.warning("Redis refused client-side tracking (%s): every query will poll Redis once", exc)
            self._drop(exc)
            self._untracked = True
            return self.changes.poll(stream_id)
        except (redis.RedisError, OSError) as exc:
            self._drop(exc)
            return self.changes.poll(stream_id)  # the pool's connections, with redis-py's retries
        if not self._pushed and len(batch.changes) < CHANGES_PAGE:
            self._trusted_until = time.monotonic() + MAX_TRUST
        return version, batch

    def expect_change(self) -> None:
        """Make the next ``poll`` ask Redis (the caller's view of the stream moved back, or a load must be retried)."""
        self._trusted_until = 0.0

    def _pending(self) -> bool:
        """Whether the tracking connection holds anything (pushes, or the end of the connection); drains it."""
        conn = self._conn
        if conn is None:
            return True
        try:
            if not conn.can_read(timeout=0):
                return False
            while conn.can_read(timeout=0):
                conn.read_response(push_request=True, timeout=0)
        except (redis.RedisError, OSError) as exc:
            self._drop(exc)
        return True

    def _tracked_poll(self, stream_id: str) -> tuple[int, Batch]:
        if self._conn is None:
            self._conn = self._connect()
        conn = self._conn
        self._pushed = False
        conn.send_packed_command(conn.pack_commands(self.changes.poll_commands(stream_id)))
        version, entries = conn.read_response(), conn.read_response()  # pushes in between set _pushed
        return poll_result(stream_id, version, entries)

    def _connect(self) -> ConnectionInterface:
        conn = self.changes.r.connection_pool.get_connection()
        try:
            if str(conn.get_protocol()) != "3":
                raise redis.ResponseError("pushed invalidations need RESP3 (protocol=3 in REDIS_URL)")
            conn.send_command("CLIENT", "TRACKING", "ON")
            conn.read_response()
            conn._parser.set_invalidation_push_handler(self._on_push)  # redis-py's own cache hooks in the same way
        except BaseException:
            conn.disconnect()  # never hand the pool a connection that tracks
            self.changes.r.connection_pool.release(conn)
            raise
        return conn

    def _on_push(self, _message: Any) -> None:
        self._pushed = True

    def _drop(self, exc: BaseException) -> None:
        """Give the connection back (closed); the next poll opens and arms a new one."""
        conn, self._conn, self._trusted_until = self._conn, None, 0.0
        if conn is None:
            return
        log.info("change tracking connection lost (%s); polling until it is back", exc)
        conn._parser.set_invalidation_push_handler(None)
        conn.disconnect()
        self.changes.r.connection_pool.release(conn)
