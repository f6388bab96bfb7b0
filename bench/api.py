"""API throughput and latency under gunicorn, as a ratio to a trivial endpoint of the same app.

Builds a synthetic catalog of 100,000 items (random 30-D topic vectors, a
quarter of them flash sales with windows) in a redis-server of its own,
serves it with `vistas serve`, and loads each endpoint from a separate
process with a fixed number of concurrent clients and a fixed number of
requests. Prints throughput and p50/p99 latency for `similar`,
`recommendations`, `events` and `/healthz` (the baseline), and each
endpoint's throughput as a ratio to the baseline's, paired round by round.
Also prints the recall@10 of what is served (``similar`` from the build's rows
of neighbours, a query by vector from the HNSW graph at this size) against an
exact scan of the same vectors: the price of the speed.

Before serving, 100,000 users' 1,000,000 events (popularity-skewed, a month
old at most) are written through the store and ``vistas train-users`` logic
fits the user model on them, so ``recommendations`` are the hybrid's (a user
history of about 10 events, read per request) and the training time is printed.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from indexer.embedded_redis import EmbeddedRedis
from indexer.users import train_users
from recommender.index import TopicIndex
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.items import Item, Status, Summary
from recommender.users.collaborative import EVENT_WEIGHTS
from recommender.versions import TOPICS, VersionStore

PORT = 8765
PREFIX = "bench"
#: Synthetic items built and written at a time (``build_catalog``).
CATALOG_CHUNK = 50_000


def synthetic_item(i: int, vector: np.ndarray | None = None) -> Item:
    """Item ``i`` of a synthetic catalog: a quarter of them flash sales with windows, 50 categories."""
    item = Item(id=f"item-{i}", title=f"Item {i}", kind="sale" if i % 4 == 0 else "product",
                category=f"cat-{i % 50}", status=Status.INDEXED, vector=vector, version=1,
                num=i + 1)  # the numbers put_many hands out under a fresh prefix
    if i % 4 == 0:
        item.starts_at, item.ends_at = "2020-01-01T00:00:00Z", "2100-01-01T00:00:00Z"
    return item


def build_catalog(store: Store, data_dir: Path, n: int, dim: int = 30, in_redis: bool = True) -> None:
    """``n`` indexed synthetic items (sparse gamma topic vectors) in Redis, ``CATALOG_CHUNK`` at a time through
    pipelines, and version 1 of them as a build writes it. An API process reads no item hash to load a version or
    answer ``similar`` from it, so ``in_redis=False`` (``bench/scale.py`` past ``--redis-max``) keeps them in the
    version only, its summaries made here: 5M item hashes are about 9 GB of Redis."""
    rng = np.random.default_rng(0)
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, CATALOG_CHUNK):
        chunk = vectors[start:start + CATALOG_CHUNK]
        chunk[:] = rng.gamma(0.3, size=chunk.shape)
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
        if in_redis:
            store.items.put_many([synthetic_item(start + offset, v) for offset, v in enumerate(chunk)])
    index = TopicIndex.built(np.arange(1, n + 1), [f"item-{i}" for i in range(n)], vectors)
    del vectors

    def made(ids: Sequence[str]) -> list[Summary | None]:
        return [Summary.of(synthetic_item(int(i.removeprefix("item-")))) for i in ids]

    with VersionStore(data_dir).create(1, {"items": n, "changes_from": "0-0"}) as directory:
        index.save(directory, store.items.summaries if in_redis else made)
        (directory / TOPICS).write_text(json.dumps([{"id": t, "name": f"topic {t}", "top_tags": []}
                                                     for t in range(dim)]))
    store.versions.set_current(1)


def write_user_events(store: Store, n_items: int, n_users: int, n_events: int) -> None:
    """Popularity-skewed events of ``n_users`` users, through the store as the API writes them."""
    rng = np.random.default_rng(1)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.9
    users = np.sort(rng.integers(0, n_users, n_events))
    items = rng.choice(n_items, n_events, p=popularity / popularity.sum())
    kinds = rng.choice(["view", "click", "add_to_cart", "purchase"], n_events, p=[0.6, 0.25, 0.1, 0.05])
    now = time.time()
    ts = np.sort(now - rng.uniform(0, 30 * 86400, n_events))
    bounds = np.flatnonzero(np.diff(users)) + 1
    pipe = store.r.pipeline(transaction=False)
    for n, rows in enumerate(np.split(np.arange(n_events), bounds)):
        events = [{"item": f"item-{i}", "type": k, "ts": t}
                  for i, k, t in zip(items[rows].tolist(), kinds[rows].tolist(), ts[rows].tolist())]
        store.users.add_events(f"user-{users[rows[0]]}", events, [EVENT_WEIGHTS[e["type"]] for e in events], 200, pipe)
        if n % 500 == 499:
            pipe.execute()
    pipe.execute()


def _one(args: tuple[str, str, bytes | None]) -> float:
    method, path, body = args
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
    conn.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
    response = conn.getresponse()
    response.read()
    conn.close()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path}: {response.status}")
    return time.perf_counter() - started


def load(requests: list[tuple[str, str, bytes | None]], concurrency: int) -> tuple[float, list[float]]:
    """Run the requests with ``concurrency`` clients; (throughput, latencies)."""
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        latencies = list(pool.map(_one, requests))
    return len(requests) / (time.perf_counter() - started), latencies


def workload(name: str, n_items: int, count: int, n_users: int) -> list[tuple[str, str, bytes | None]]:
    rng = random.Random(1)
    if name == "healthz":
        return [("GET", "/healthz", None)] * count
    if name == "similar":
        return [("GET", f"/v1/items/item-{rng.randrange(n_items)}/similar?k=10", None) for _ in range(count)]
    if name == "recommendations":
        return [("GET", f"/v1/users/user-{rng.randrange(n_users)}/recommendations?k=10", None) for _ in range(count)]
    return [("POST", f"/v1/users/user-{rng.randrange(n_users)}/events",
             json.dumps({"item_id": f"item-{rng.randrange(n_items)}", "type": "view"}).encode())
            for _ in range(count)]


def run_in_process(args: tuple[str, int, int, int, int]) -> tuple[float, list[float]]:
    name, n_items, count, concurrency, n_users = args
    return load(workload(name, n_items, count, n_users), concurrency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000, help="requests per endpoint per round")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--users", type=int, default=100_000, help="users with events, for the trained user model")
    parser.add_argument("--user-events", type=int, default=1_000_000, help="their events, in all")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis", persist=False) as redis_server:
        store = Store.from_url(redis_server.url, PREFIX)
        started = time.perf_counter()
        build_catalog(store, Path(tmp) / "data", args.items)
        print(f"synthetic catalog: {args.items} items in {time.perf_counter() - started:.1f}s")
        recall = served_recall(Path(tmp) / "data")
        started = time.perf_counter()
        write_user_events(store, args.items, args.users, args.user_events)
        written = time.perf_counter() - started
        trained = train_users(Settings(redis_url=redis_server.url, data_dir=Path(tmp) / "data", key_prefix=PREFIX),
                              store)
        print(f"{args.users} users' {args.user_events} events written in {written:.1f}s; vistas train-users "
              f"{trained.seconds:.1f}s ({', '.join(f'{k} {v:.1f}s' for k, v in trained.phases.items())}), "
              f"user model {trained.model_bytes / 1e6:.0f} MB")
        env = {**os.environ, "REDIS_URL": redis_server.url, "VISTAS_DATA_DIR": str(Path(tmp) / "data"),
               "VISTAS_KEY_PREFIX": PREFIX}
        server = subprocess.Popen(
            [sys.executable, "-m", "indexer.cli", "serve", "--bind", f"127.0.0.1:{PORT}", "--workers",
             str(args.workers)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_ready()
            endpoints = ["healthz", "similar", "recommendations", "events"]
            results: dict[str, list[tuple[float, list[float]]]] = {e: [] for e in endpoints}
            with Pool(1) as pool:  # the load generator is another process
                pool.map(run_in_process, [(name, args.items, 200, args.concurrency, args.users)
                                          for name in ("similar", "recommendations")])  # warm-up
                for _ in range(args.rounds):
                    for name in endpoints:
                        results[name].append(pool.apply(run_in_process,
                                                        ((name, args.items, args.requests, args.concurrency,
                                                          args.users),)))
        finally:
            server.terminate()
            server.wait(20)

    print(f"{args.requests} requests x {args.rounds} rounds per endpoint, {args.concurrency} concurrent clients, "
          f"{args.workers} gunicorn workers; ratio = median over rounds of req/s / the same round's /healthz req/s")
    print(f"{'endpoint':16s} {'req/s':>8s} {'p50 ms':>8s} {'p99 ms':>8s} {'ratio':>6s}  rounds' ratios")
    for name, runs in results.items():
        throughput = statistics.median(t for t, _ in runs)
        ratios = [t / base for (t, _), (base, _) in zip(runs, results["healthz"], strict=True)]
        latencies = sorted(x for _, lat in runs for x in lat)
        p50 = latencies[len(latencies) // 2] * 1000
        p99 = latencies[int(len(latencies) * 0.99)] * 1000
        print(f"{name:16s} {throughput:8.0f} {p50:8.2f} {p99:8.2f} {statistics.median(ratios):6.2f}  "
              f"{min(ratios):.2f}-{max(ratios):.2f}")
    print("recall@10 against an exact scan, 1000 random items: "
          + ", ".join(f"{path} {value:.4f}" for path, value in recall.items()))


def served_recall(data_dir: Path, queries: int = 1000) -> dict[str, float]:
    """How many of an item's exact 10 nearest items each served path returns: ``similar`` (the build's rows of
    neighbours, ``TopicIndex.like``) and a query by vector (``search``: the HNSW graph walk)."""
    index = TopicIndex.load(VersionStore(data_dir).path(1))
    assert index.graph is not None, "the benchmark catalog is meant to be served from a graph"
    rng = np.random.default_rng(2)
    nums = np.flatnonzero(index.present)
    found: dict[str, list[float]] = {"similar (rows)": [], "search (graph walk)": []}
    for num in rng.choice(nums, queries, replace=False).tolist():
        query = index.vectors[num]
        scores = index.vectors[nums] @ query
        exact = set(nums[np.argsort(-scores)[:11]].tolist()) - {num}
        found["similar (rows)"].append(len(exact & {n for n, _ in index.like(num, 10)}) / len(exact))
        found["search (graph walk)"].append(len(exact & ({n for n, _ in index.search(query, 11)} - {num})) / len(exact))
    return {path: float(np.mean(f)) for path, f in found.items()}


def _wait_ready(timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("API did not become ready")


if __name__ == "__main__":
    main()
