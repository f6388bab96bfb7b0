"""Where each API process stands on the changes stream, so `vistas status` can warn before a lagging
one falls past the stream's cap (it would then reload its whole version from Redis)."""

from __future__ import annotations

import json
import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from recommender.store.connection import Part, stream_id

log = logging.getLogger(__name__)
#: An API process writes where it stands this often (off the request path, on a thread of its own).
REPORT_S = 5.0
#: A process silent this long has stopped: `vistas status` forgets it.
REPLICA_GONE_S = 60.0


class Replicas(Part):
    """One JSON record per API process, in one hash that expires when every process has stopped."""

    def report(self, name: str, version: int, change: str) -> None:
        """Record that process ``name`` serves ``version`` and has applied the changes up to ``change``."""
        with self._pipe(None, transaction=False) as pipe:
            pipe.hset(self.keys.replicas, name, json.dumps({"version": version, "change": change, "seen": time.time()}))
            pipe.expire(self.keys.replicas, int(REPLICA_GONE_S))

    def positions(self) -> list[dict[str, Any]]:
        """The processes seen within ``REPLICA_GONE_S`` (``name`` added), furthest behind first; forgets the others."""
        now, out, gone = time.time(), [], []
        for name, raw in self.r.hgetall(self.keys.replicas).items():
            record = {"name": name.decode(), **json.loads(raw)}
            (gone if now - record["seen"] > REPLICA_GONE_S else out).append(record)
        if gone:
            self.r.hdel(self.keys.replicas, *[g["name"] for g in gone])
        return sorted(out, key=lambda r: stream_id(r["change"]))


class Reporter:
    """A daemon thread writing ``position()`` (version, last change applied; None: nothing served yet)
    every ``REPORT_S``; it ends when the object owning ``position`` is gone."""

    def __init__(self, replicas: Replicas, name: str, position: Callable[[], tuple[int, str] | None]):
        self.replicas, self.name = replicas, name
        self._position = weakref.WeakMethod(position)  # type: ignore[arg-type]
        threading.Thread(target=self._run, daemon=True, name=f"report-{name}").start()

    def _run(self) -> None:
        while (position := self._position()) is not None:
            try:
                where = position()
                if where is not None:
                    self.replicas.report(self.name, *where)
            except Exception as exc:  # noqa: BLE001 - a report is advice; the next one may get through
                log.debug("could not report where %s stands: %s", self.name, exc)
            del position
            time.sleep(REPORT_S)
