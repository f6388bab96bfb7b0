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

On a Redis Cluster the pointer and the changes stream share the catalog's
hash tag, so one node holds both: the feed tracks on a connection to that
node (the one the cluster client routes the changes stream to), and re-arms
on the new node when the slot has moved there (a MOVED reply, or the client's
slot map naming another node) or the node failed.

Anything that could lose a push makes the next query poll: the connection
closing or failing (Redis or the node restarted, the client killed, the slot
moved away), a push arriving in the middle of a poll. Whatever happens, a process polls at least every
``MAX_TRUST`` seconds, so a network failure that delivers nothing, not even a
reset, costs at most that much staleness.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from redis.connection import ConnectionInterface, ConnectionPool
from redis.exceptions import AskError, ClusterError, TryAgainError

from recommender.store.changes import CHANGES_PAGE, Batch, ChangeStream, poll_result
from recommender.store.connection import is_cluster

log = logging.getLogger(__name__)
#: The longest a process trusts "nothing pushed" to mean "nothing changed" before polling anyway.
MAX_TRUST = 1.0


class ChangeFeed:
    """The version pointer and the changes stream of one API process, polled only when they may have moved."""

    def __init__(self, changes: ChangeStream):
        self.changes = changes
        self._conn: ConnectionInterface | None = None
        self._pool: ConnectionPool | None = None  # where _conn came from (on a cluster: its node's pool)
        self._node: str | None = None  # the cluster node _conn is on
        self._trusted_until = 0.0  # monotonic; until then, no push means no change
        self._pushed = False
        self._untracked = False  # this Redis or connection cannot track: poll on every query

    def poll(self, stream_id: str) -> tuple[int, Batch] | None:
        """The current version and the changes after ``stream_id``; None when nothing can have changed."""
        if self._untracked:
            return self.changes.poll(stream_id)
        if time.monotonic() < self._trusted_until and not self._pending() and not self._moved():
            return None
        self._trusted_until = 0.0
        try:
            version, batch = self._tracked_poll(stream_id)
        except (AskError, ClusterError, TryAgainError) as exc:  # the slot moved (MOVED is an ASK), or the cluster is down
            self._drop(exc)
            return self.changes.poll(stream_id)  # the cluster client follows the slot, and routes there next time
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

    def _moved(self) -> bool:
        """Whether the cluster client now routes the changes stream to another node than ours (it learnt the
        slot moved from a reply to some other command); drops our connection then."""
        if self._conn is None or self._node is None or self._node == self._home()[1]:
            return False
        self._drop(RuntimeError(f"the changes stream's slot moved away from {self._node}"))
        return True

    def _home(self) -> tuple[ConnectionPool, str | None]:
        """The pool of the node that holds the pointer and the changes stream, and its name on a cluster."""
        r = self.changes.r
        if is_cluster(r):
            node = r.get_node_from_key(self.changes.keys.changes)
            return node.redis_connection.connection_pool, node.name
        return r.connection_pool, None

    def _connect(self) -> ConnectionInterface:
        pool, self._node = self._home()
        conn = pool.get_connection()
        try:
            if str(conn.get_protocol()) != "3":
                raise redis.ResponseError("pushed invalidations need RESP3 (protocol=3 in REDIS_URL)")
            conn.send_command("CLIENT", "TRACKING", "ON")
            conn.read_response()
            conn._parser.set_invalidation_push_handler(self._on_push)  # redis-py's own cache hooks in the same way
        except BaseException:
            conn.disconnect()  # never hand the pool a connection that tracks
            pool.release(conn)
            raise
        self._pool = pool
        return conn

    def _on_push(self, _message: Any) -> None:
        self._pushed = True

    def _drop(self, exc: BaseException) -> None:
        """Give the connection back (closed); the next poll opens and arms a new one."""
        conn, pool, self._conn, self._pool, self._trusted_until = self._conn, self._pool, None, None, 0.0
        if conn is None or pool is None:
            return
        log.info("change tracking connection lost (%s); polling until it is back", exc)
        conn._parser.set_invalidation_push_handler(None)
        conn.disconnect()
        pool.release(conn)
