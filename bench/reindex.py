"""Time of a full reindex from stored features, and how it grows with the catalog.

For each size (default 10k, 100k, 1M items) a fresh redis-server is filled
with synthetic indexed items: 1280-d float16 features and top-5 tags drawn
around 60 clusters, as the backbone would store them. Then the timed part:
`vistas reindex --reuse-features` (fit the topic model and lay out the map on
a sample, transform every item, write the version, flip the pointer, give
every item its new vector in Redis). Prints the time per size with its
phases, items/s, and the ratio of each time to the previous size's, also
without the fit and the map (they work on a sample of at most
VISTAS_FIT_SAMPLE items): 10 for 10 times the items means that part grows
linearly. Target: 1M items in under 10 minutes. Uses REDIS_URL (under a
fresh key prefix) when set.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from indexer.embedded_redis import EmbeddedRedis
from indexer.reindex import Reindex
from recommender.model.vocabulary import imagenet_labels
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.items import Item, Status

CLUSTERS = 60
FEATURES = 1280
CHUNK = 10_000


def fill(store: Store, size: int, seed: int = 0) -> None:
    """``size`` indexed items with cluster-shaped features and tags (what a tagged catalog stores)."""
    rng = np.random.default_rng(seed)
    labels = imagenet_labels()
    centers = np.maximum(rng.normal(0.0, 1.0, (CLUSTERS, FEATURES)), 0.0).astype(np.float32)
    cluster_tags = rng.integers(0, len(labels), (CLUSTERS, 8))
    vector = np.full(30, 1 / np.sqrt(30), dtype=np.float32)
    for start in range(0, size, CHUNK):
        n = min(CHUNK, size - start)
        clusters = rng.integers(0, CLUSTERS, n)
        features = np.maximum(centers[clusters] + rng.normal(0.0, 0.5, (n, FEATURES)).astype(np.float32), 0.0)
        probs = np.sort(rng.dirichlet(np.ones(5), n), axis=1)[:, ::-1]
        items = []
        for row, cluster in enumerate(clusters):
            picked = rng.choice(cluster_tags[cluster], 5, replace=False)
            tags = [(labels[t], round(float(p), 4)) for t, p in zip(picked, probs[row])]
            items.append(Item(id=f"item-{start + row}", title=f"Item {start + row}", status=Status.INDEXED, tags=tags,
                              vector=vector, version=1))
        store.items.put_many(items, list(features))
    store.versions.set_current(1)


def measure(size: int, settings: Settings, work: Path) -> tuple[float, dict[str, float]]:
    with ExitStack() as stack:
        settings = settings.with_(data_dir=work / f"data-{size}", key_prefix=f"bench-reindex-{size}-{time.time_ns()}")
        if settings.redis_url is None:  # a server of its own, thrown away afterwards
            server = stack.enter_context(EmbeddedRedis(work / f"redis-{size}", persist=False))
            settings = settings.with_(redis_url=server.url)
            store = Store.from_url(server.url, settings.key_prefix)
        else:
            store = Store.from_url(settings.redis_url, settings.key_prefix)
            stack.callback(store.clear)
        started = time.perf_counter()
        fill(store, size)
        print(f"  {size:>9,} items stored in {time.perf_counter() - started:.0f}s; reindexing...", flush=True)
        report = Reindex(settings, store, progress=False).run(reuse_features=True)
        assert report.items == size and store.versions.current() == 2
        return report.seconds, report.phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated catalog sizes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = Settings.from_env()
    print(f"reindex --reuse-features, {settings.n_topics} topics fitted on <= {settings.fit_sample:,} items")
    results: list[tuple[int, float, float]] = []
    with tempfile.TemporaryDirectory() as work:
        for size in sizes:
            seconds, phases = measure(size, settings, Path(work))
            results.append((size, seconds, seconds - phases.get("fit", 0.0) - phases.get("map", 0.0)))
            growth = ""
            if len(results) > 1:
                (prev_size, prev_seconds, prev_scaling), (_, _, scaling) = results[-2], results[-1]
                growth = (f"  x{seconds / prev_seconds:.1f} time for x{size / prev_size:.0f} items "
                          f"(x{scaling / prev_scaling:.1f} without fit and map, which see a fixed-size sample)")
            detail = ", ".join(f"{k} {v:.0f}s" for k, v in phases.items())
            print(f"{size:>11,} items: {seconds:7.1f}s  {size / seconds:9,.0f} items/s  ({detail}){growth}",
                  flush=True)
    if sizes[-1] >= 1_000_000:
        verdict = "met" if results[-1][1] < 600 else "missed"
        print(f"target: 1M items in under 600s: {verdict} ({results[-1][1]:.0f}s)")


if __name__ == "__main__":
    main()
