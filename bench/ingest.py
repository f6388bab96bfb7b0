"""Worker throughput vs inline tagging of the same photos, in the same run.

Each round tags the same demo photos twice, alternating which goes first:

* inline: ``Tagger.tag`` over the photos (decode overlapped with the forward
  pass), which is what `vistas ingest` does;
* worker: the photos queued on the ingest stream of a running `vistas worker`
  (same tagger, started once), which takes them in windows, tags, transforms,
  writes, acknowledges them and places them on the map; timed from the first
  message queued to the last item indexed.

Prints photos/s for each (medians of the rounds) and the ratio worker /
inline; the target is at least 0.9 (queueing, windows and Redis writes must
cost under a tenth of the tagging). Then the latency of single photos written
while the worker waits: the target is under 2 s from write to indexed. Uses REDIS_URL when set, else starts an
embedded redis-server.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from indexer.embedded_redis import EmbeddedRedis
from indexer.ingest import ingest
from indexer.manifest import Entry
from indexer.worker import Worker
from recommender.model.tagger import Tagger
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.items import Item, Status

from report import demo_photos, fmt



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=256, help="photos per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--latency-samples", type=int, default=10, help="single photos timed on an idle worker")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with ExitStack() as stack:
        settings = Settings.from_env(device=args.device, key_prefix=f"bench-ingest-{time.time_ns()}")
        if settings.redis_url is None:
            server = stack.enter_context(EmbeddedRedis(Path(tempfile.mkdtemp()) / "redis", persist=False))
            settings = settings.with_(redis_url=server.url)
        settings = settings.with_(data_dir=Path(stack.enter_context(tempfile.TemporaryDirectory())))
        store = Store.from_url(settings.redis_url_or_default, settings.key_prefix)
        stack.callback(store.clear)
        paths = demo_photos()[: args.photos]
        tagger = Tagger(settings)
        ingest([Entry(Item(id=f"seed-{i}"), p) for i, p in enumerate(paths[:64])], settings, store, tagger,
               progress=False)  # version 1, so the worker has a topic model

        def run_inline() -> float:
            started = time.perf_counter()
            done = sum(1 for _ in tagger.tag((i, p) for i, p in enumerate(paths)))
            return done / (time.perf_counter() - started)

        worker = Worker(settings, store, tagger=tagger, name="bench")
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        stack.callback(thread.join)
        stack.callback(worker.stop)

        def run_worker(round_no: int) -> float:
            ids = [f"r{round_no}-{i}" for i in range(len(paths))]
            for item_id, path in zip(ids, paths):
                store.items.put(Item(id=item_id, image=str(path)))
            started = time.perf_counter()
            for item_id in ids:
                store.queue.enqueue(item_id)
            while any(s is None or s.status != Status.INDEXED for s in store.items.summaries(ids)):
                time.sleep(0.02)
            return len(ids) / (time.perf_counter() - started)

        run_inline()  # warm-up: first forward passes, page cache
        run_worker(-1)
        inline, queued = [], []
        for round_no in range(args.rounds):  # alternate which goes first, so drift hits both alike
            if round_no % 2:
                queued.append(run_worker(round_no))
                inline.append(run_inline())
            else:
                inline.append(run_inline())
                queued.append(run_worker(round_no))
        ratios = [w / i for w, i in zip(queued, inline)]

        def one_photo(n: int) -> float:
            """Seconds from a write to an idle worker's queue to the item indexed (and announced)."""
            time.sleep(0.3)  # the worker is waiting on the stream, as between storefront writes
            item_id = f"single-{n}"
            store.items.put(Item(id=item_id, image=str(paths[n % len(paths)])))
            started = time.perf_counter()
            store.queue.enqueue(item_id)
            while getattr(store.items.summaries([item_id])[0], "status", None) != Status.INDEXED:
                time.sleep(0.005)
            return time.perf_counter() - started

        latencies = [one_photo(n) for n in range(args.latency_samples)]

    print(f"device {tagger.device}, forward batch {tagger.batch_size}, worker windows of {settings.worker_batch} "
          f"photos / {settings.worker_batch_ms} ms, {len(paths)} photos x {args.rounds} rounds")
    print(f"inline tagging:            {statistics.median(inline):8.1f} photos/s  {fmt(inline)}")
    print(f"worker (queue to indexed): {statistics.median(queued):8.1f} photos/s  {fmt(queued)}")
    print(f"ratio worker / inline:     {statistics.median(ratios):8.2f} (median of paired rounds "
          f"{fmt(ratios, 2)}; target >= 0.90)")
    print(f"one photo, write to indexed: {statistics.median(latencies):6.2f} s median, {max(latencies):.2f} s worst "
          f"of {len(latencies)} (target: in similar answers within 2 s; each API query polls the changes)")


if __name__ == "__main__":
    main()
