"""The ``vistas`` method of ``bench/users.py``, through the product's real code path.

A throwaway Vistas: an embedded redis-server, the movies ingested as tag-only items (``indexer.ingest``:
the same topic model as any catalog), each method fit's events written to Redis through the store with
their real timestamps, ``vistas eval --users`` and ``vistas train-users`` logic (``indexer.users``), and
every answer a ``GET /v1/users/{uid}/recommendations?k=10`` of the real app, with its clock set to the
request's ``now`` (``bench/users.py``: a second before the interaction to predict).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from indexer.embedded_redis import EmbeddedRedis
from indexer.ingest import ingest
from indexer.manifest import Entry
from indexer.users import TrainReport, train_users, tune_users
from recommender.app import create_app
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.items import Item
from recommender.users.collaborative import EVENT_WEIGHTS, EventLog

from users_data import Dataset

K = 10
#: Events kept per user: MovieLens users have up to 700 ratings, past the default 200 (a setting).
USER_HISTORY = 1000


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Product:
    """Vistas over MovieLens: items ingested once; events rewritten for each fit."""

    def __init__(self, data: Dataset) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="vistas-bench-users-"))
        self.redis = EmbeddedRedis(self.directory / "redis", persist=False)
        self.redis.__enter__()
        self.settings = Settings(redis_url=self.redis.url, data_dir=self.directory / "data", key_prefix="bench",
                                 user_history=USER_HISTORY)
        self.store = Store.from_url(self.settings.redis_url_or_default, self.settings.key_prefix)
        entries = [Entry(Item(id=f"m{i}", title=title, given_tags=[g for g, _ in tags]), None)
                   for i, (title, tags) in enumerate(zip(data.titles, data.tags))]
        ingest(entries, self.settings, self.store, progress=False)
        self.n_items = data.n_items
        self.clock = Clock()
        self.last_ts = 0.0

    def close(self) -> None:
        self.redis.__exit__(None, None, None)
        shutil.rmtree(self.directory, ignore_errors=True)

    def write_events(self, events: EventLog) -> None:
        """Replace every user's events (and what they add up to) with ``events``, user ``u`` as ``u{u}``."""
        r = self.store.r
        keys = [*r.scan_iter(match=self.store.keys.user_events_pattern, count=1000),
                self.store.keys.activity, self.store.keys.popularity]
        for start in range(0, len(keys), 1000):
            r.delete(*keys[start:start + 1000])
        order = np.lexsort((events.ts, events.user))  # each user's events oldest first: the list ends newest first
        users, starts = np.unique(events.user[order], return_index=True)
        pipe = r.pipeline(transaction=False)
        for n, (user, rows) in enumerate(zip(users.tolist(), np.split(order, starts[1:]))):
            batch = [{"item": f"m{i}", "type": k, "ts": t}
                     for i, k, t in zip(events.item[rows].tolist(), events.kind[rows].tolist(), events.ts[rows].tolist())]
            self.store.users.add_events(f"u{user}", batch, [EVENT_WEIGHTS[e["type"]] for e in batch],
                                        USER_HISTORY, pipe)
            if n % 100 == 99:
                pipe.execute()
        pipe.execute()
        self.last_ts = float(events.ts.max())

    def tune(self, quick: bool) -> dict:
        """``vistas eval --users`` on the events written: the weights and config recorded in Redis."""
        return tune_users(self.settings, self.store, quick=quick, log_line=lambda line: print(line, flush=True))

    def train(self) -> TrainReport:
        """``vistas train-users`` on the events written."""
        return train_users(self.settings, self.store, clock=lambda: self.last_ts)

    def untrain(self) -> None:
        """No user model served: the API answers from profiles, as before any training."""
        self.store.r.delete(self.store.keys.user_model)

    def scorer(self):
        """Scores from the API's top ``K`` (K for the first, 1 for the last, -inf for the rest), read by a fresh app
        (it loads the current user model, if any, at its first answer)."""
        client = create_app(self.settings, clock=self.clock).test_client()

        def score(users: Sequence[int], histories: Sequence[list[dict]], nows: Sequence[float]) -> np.ndarray:
            out = np.full((len(users), self.n_items), -np.inf, dtype=np.float32)
            for row, (user, now) in enumerate(zip(users, nows)):
                self.clock.now = now
                response = client.get(f"/v1/users/u{user}/recommendations?k={K}&active_at=any")
                assert response.status_code == 200, response.get_data(as_text=True)
                for rank, result in enumerate(response.get_json()["items"]):
                    out[row, int(result["id"][1:])] = K - rank
            return out

        return score
