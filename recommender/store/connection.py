"""The Redis connection, and what every concept of the store shares: its client, its keys and pipelines."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.client import Pipeline

from recommender.store.keys import Keys


def connect(url: str) -> redis.Redis:
    """A client with timeouts, so a dead Redis is an error, not a hang."""
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=30)


def stream_id(value: str) -> tuple[int, int]:
    """A stream entry id as a sortable pair."""
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


class Part:
    """One concept of the store (items, users, the queue...): a client and the key schema.

    Writing methods take ``pipeline=None``, as rq's do: given one, they only queue their
    commands on it, so a caller composes several concepts' writes into one atomic step.
    """

    def __init__(self, client: redis.Redis, keys: Keys):
        self.r = client
        self.keys = keys

    @contextmanager
    def _pipe(self, pipeline: Pipeline | None, transaction: bool = True) -> Iterator[Pipeline]:
        """The caller's pipeline (it executes it), else one of our own, executed on leaving."""
        if pipeline is not None:
            yield pipeline
            return
        pipe = self.r.pipeline(transaction=transaction)
        yield pipe
        pipe.execute()
