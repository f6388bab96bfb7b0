"""Users' events (capped lists, newest first), the popularity they add up to, the anonymous activity
stream trained user models fold in, and the user-model pointer and tuning beside them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


from recommender.store.connection import Part, Pipe

#: Entries the activity stream keeps (approximately): a few minutes of a busy shop's events, enough for
#: every API process to catch up between two of its once-a-second reads.
ACTIVITY_CAP = 200_000
#: User event lists read per round trip when training.
SCAN_BATCH = 500


class Users(Part):
    """Per-user event lists, the catalog-wide popularity sorted set and the activity stream."""

    def add_events(self, user_id: str, events: list[dict[str, Any]], weights: list[float], cap: int,
                   pipeline: Pipe | None = None) -> None:
        """Append a user's events (capped to the newest ``cap``), count them toward popularity and
        announce them, without the user, on the activity stream: the user's list in one transaction
        (its slot), then the catalog's side in another, so a write cut between them keeps the events.
        Given a pipeline (a bulk loader's, not transactional), both sides are only queued on it."""
        with self._pipe(pipeline) as pipe:
            pipe.lpush(self.keys.events(user_id), *(json.dumps(e) for e in events))
            pipe.ltrim(self.keys.events(user_id), 0, cap - 1)
        with self._pipe(pipeline) as pipe:
            for event, weight in zip(events, weights):
                if weight > 0:  # a dismiss says nothing about popularity
                    pipe.zincrby(self.keys.popularity, weight, event["item"])
                pipe.xadd(self.keys.activity, {"item": event["item"], "type": event["type"], "ts": repr(event["ts"])},
                          maxlen=ACTIVITY_CAP, approximate=True)

    def events(self, user_id: str) -> list[dict[str, Any]]:
        """The user's kept events, newest first."""
        return [json.loads(e) for e in self.r.lrange(self.keys.events(user_id), 0, -1)]

    def all_events(self, batch: int = SCAN_BATCH) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        """Every user's kept events (newest first), user by user, ``batch`` lists per round trip: SCAN, so
        memory holds one batch, and users written meanwhile may or may not be seen (as SCAN promises).
        A cluster client scans every primary node in turn."""
        keys: list[bytes] = []
        for key in self.r.scan_iter(match=self.keys.user_events_pattern, count=batch):
            keys.append(key)
            if len(keys) >= batch:
                yield from self._read_lists(keys)
                keys = []
        yield from self._read_lists(keys)

    def _read_lists(self, keys: list[bytes]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.lrange(key, 0, -1)
        for key, raw in zip(keys, pipe.execute()):
            if raw:
                yield self.keys.user_of(key), [json.loads(e) for e in raw]

    def forget(self, user_id: str, pipeline: Pipe | None = None) -> None:
        with self._pipe(pipeline) as pipe:
            pipe.delete(self.keys.events(user_id))

    def popular(self, n: int) -> list[tuple[str, float]]:
        return [(m.decode(), s) for m, s in self.r.zrevrange(self.keys.popularity, 0, n - 1, withscores=True)]

    def drop_item(self, item_id: str, pipeline: Pipe | None = None) -> None:
        """A deleted item leaves the popular list."""
        with self._pipe(pipeline) as pipe:
            pipe.zrem(self.keys.popularity, item_id)

    # -- the activity stream ---------------------------------------------------------------
    def activity_tip(self) -> str:
        """The id of the newest activity entry ("0-0" when there is none): where a model trained now starts."""
        last = self.r.xrevrange(self.keys.activity, count=1)
        return last[0][0].decode() if last else "0-0"

    def activity_after(self, after: str, count: int = 10_000) -> list[tuple[str, dict[str, Any]]]:
        """Activity entries after ``after``: (id, {item, type, ts})."""
        raw = self.r.xrange(self.keys.activity, min=f"({after}", count=count)
        return [(i.decode(), {"item": f[b"item"].decode(), "type": f[b"type"].decode(), "ts": float(f[b"ts"])})
                for i, f in raw]

    # -- the trained user model: which version is served, and what eval chose ------------------
    def model_version(self) -> int:
        value = self.r.get(self.keys.user_model)
        return int(value) if value else 0

    def set_model_version(self, version: int, pipeline: Pipe | None = None) -> None:
        """Publish user-model ``version``: every API process loads it in the background and swaps it in."""
        with self._pipe(pipeline) as pipe:
            pipe.set(self.keys.user_model, version)

    def tuning(self) -> dict[str, Any] | None:
        """What ``vistas eval --users`` recorded (config, weights, validation), None before it ran."""
        raw = self.r.get(self.keys.user_tuning)
        return json.loads(raw) if raw else None

    def set_tuning(self, tuning: dict[str, Any]) -> None:
        self.r.set(self.keys.user_tuning, json.dumps(tuning))
