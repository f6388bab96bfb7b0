"""Users' events (capped lists, newest first) and the popularity they add up to."""

from __future__ import annotations

import json
from typing import Any

from redis.client import Pipeline

from recommender.store.connection import Part


class Users(Part):
    """Per-user event lists and the catalog-wide popularity sorted set."""

    def add_events(
        self, user_id: str, events: list[dict[str, Any]], weights: list[float], cap: int,
        pipeline: Pipeline | None = None,
    ) -> None:
        """Append a user's events (capped to the newest ``cap``) and count them toward popularity."""
        with self._pipe(pipeline) as pipe:
            pipe.lpush(self.keys.events(user_id), *(json.dumps(e) for e in events))
            pipe.ltrim(self.keys.events(user_id), 0, cap - 1)
            for event, weight in zip(events, weights):
                pipe.zincrby(self.keys.popularity, weight, event["item"])

    def events(self, user_id: str) -> list[dict[str, Any]]:
        """The user's kept events, newest first."""
        return [json.loads(e) for e in self.r.lrange(self.keys.events(user_id), 0, -1)]

    def forget(self, user_id: str, pipeline: Pipeline | None = None) -> None:
        with self._pipe(pipeline) as pipe:
            pipe.delete(self.keys.events(user_id))

    def popular(self, n: int) -> list[tuple[str, float]]:
        return [(m.decode(), s) for m, s in self.r.zrevrange(self.keys.popularity, 0, n - 1, withscores=True)]

    def drop_item(self, item_id: str, pipeline: Pipeline | None = None) -> None:
        """A deleted item leaves the popular list."""
        with self._pipe(pipeline) as pipe:
            pipe.zrem(self.keys.popularity, item_id)
