"""The Redis connection, and what every concept of the store shares: its client, its keys and pipelines.

``REDIS_URL`` names one Redis (``redis://``, ``rediss://``, ``unix://``) or, as ``redis+cluster://host:port``
(``rediss+cluster://`` with TLS), any node of a Redis Cluster; both clients run the same code. On a
cluster a script or a MULTI/EXEC transaction may touch one hash slot only, so every one of ours does
(see :mod:`recommender.store.keys`); a pipeline without a transaction may span slots.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Union

import redis
from redis.client import Pipeline
from redis.cluster import ClusterPipeline, RedisCluster
from redis.backoff import ExponentialWithJitterBackoff
from redis.crc import key_slot
from redis.retry import Retry

from recommender.store.keys import Keys

#: Either client: a single Redis, or a Redis Cluster (through any of its nodes).
Client = Union[redis.Redis, RedisCluster]
#: Either client's pipeline.
Pipe = Union[Pipeline, ClusterPipeline]
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
#: Timeouts, so a dead Redis (or node) is an error, not a hang.
TIMEOUTS = {"socket_timeout": 5, "socket_connect_timeout": 3, "health_check_interval": 30}


def cluster_retry() -> Retry:
    """Two quick retries (at most about half a second) of a command whose node failed. redis-py's default (3
    retries, backoff up to 1 s each, per command) held API requests 5 s when a node restarted under load
    (tests/test_faults.py); a failover takes the cluster's node timeout anyway, so waiting longer buys nothing."""
    return Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.25), retries=2)


def connect(url: str) -> Client:
    """The client ``url`` names: a :class:`RedisCluster` for ``redis+cluster://``, else a single Redis."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in CLUSTER_SCHEMES:
        return RedisCluster.from_url(f"{CLUSTER_SCHEMES[scheme]}://{rest}", retry=cluster_retry(), **TIMEOUTS)
    return redis.Redis.from_url(url, **TIMEOUTS)


def is_cluster(client: Client) -> bool:
    return isinstance(client, RedisCluster)


def stream_id(value: str) -> tuple[int, int]:
    """A stream entry id as a sortable pair."""
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


class Part:
    """One concept of the store (items, users, the queue...): a client and the key schema.

    Writing methods take ``pipeline=None``, as rq's do: given one, they only queue their
    commands on it, so a caller composes several writes into one atomic step. Each method
    writes one slot (the catalog's, one item's or one user's), so a caller composes writes of
    the same slot only; its docstring says which.
    """

    def __init__(self, client: Client, keys: Keys):
        self.r = client
        self.keys = keys
        self.cluster = is_cluster(client)

    @contextmanager
    def _pipe(self, pipeline: Pipe | None, transaction: bool = True) -> Iterator[Pipe]:
        """The caller's pipeline (it executes it), else one of our own, executed on leaving."""
        if pipeline is not None:
            yield pipeline
            return
        pipe = self.r.pipeline(transaction=transaction)
        yield pipe
        pipe.execute()

    def _by_slot(self, keys: Iterable[str]) -> list[list[int]]:
        """The positions of ``keys`` grouped so that one script call may take each group: by hash slot
        on a cluster; all together on a single Redis, where a script may touch any keys."""
        groups: dict[int, list[int]] = {}
        for i, key in enumerate(keys):
            groups.setdefault(key_slot(key.encode()) if self.cluster else 0, []).append(i)
        return list(groups.values())
