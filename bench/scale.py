"""How the API and the reindex grow with the catalog: start-up, memory per process, `similar`, reindex.

For each size (default 100k, 1M and 5M items) a fresh redis-server of its own is filled
with synthetic indexed items through pipelines (random sparse 30-D topic vectors, a
quarter of them flash sales with windows) and version 1 is written as a build writes it
(memory-mapped columns; from 20k items an HNSW graph and each item's row of nearest items,
which `similar` reads), in a child process whose peak RSS and seconds are printed: the
build's memory must not grow a Python object per item. Then, each a
median over rounds:

* **start-up**: seconds from launching `vistas serve` (one worker) to `/readyz` answering
  200, and the load of the version alone inside a process (`LiveIndex`'s first sync); and
  the same start-up from S3 (the version uploaded to the suite's own SeaweedFS server, `weed
  mini` on loopback, and a replica with an empty data directory, which downloads it first);
* **memory**: RSS, PSS and USS (private pages) of each of two gunicorn workers after both
  served `similar`, from ``/proc/PID/smaps_rollup``: a first worker costs its RSS, an extra
  one its USS (the mapped version is shared through the page cache);
* **`similar`** throughput and p50/p99 latency with `bench/api.py`'s load generator (a
  separate process, fixed clients and requests), and its ratio to `/healthz` in the same round;
* **reindex** `--reuse-features` time, as `bench/reindex.py` measures it (1280-d features
  per item in Redis), for sizes up to ``--reindex-max`` (default 1M): 5M items' features
  are 13 GB of Redis (the 1M run in bench/RESULTS.md had 23 GB in all), and at that run's
  2,400 items/s the reindex alone would take over half an hour.

Every figure is printed with its ratio to the previous size's and to the first size's
(1.0 = flat, the size ratio = linear). Targets at 1M: ready in <= 5 s, <= 300 MB USS per
extra worker, `similar` >= 0.6 of `/healthz` with p99 < 20 ms, ready in <= 15 s from S3.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool, get_context
from pathlib import Path
from unittest.mock import patch

import s3fs
from api import PORT, build_catalog, run_in_process
from reindex import measure as measure_reindex

from indexer.embedded_redis import EmbeddedRedis
from recommender.live_index import LiveIndex
from recommender.settings import Settings
from recommender.store import Store
from recommender.objects import ObjectStore
from recommender.versions import MANIFEST, VersionStore

sys.path.append(str(Path(__file__).resolve().parent.parent))
from tests.s3 import BUCKET, weed_mini  # noqa: E402 - the suite's own S3 server, on loopback only

PREFIX = "bench-scale"
DIM = 30


def serve(env: dict[str, str], workers: int) -> tuple[subprocess.Popen, float]:
    """`vistas serve` on 127.0.0.1, and the seconds until `/readyz` said 200."""
    started = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "indexer.cli", "serve", "--bind", f"127.0.0.1:{PORT}",
                               "--workers", str(workers)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return server, time.perf_counter() - started
        except OSError:
            pass
        assert server.poll() is None, "vistas serve exited"
        time.sleep(0.05)
    stop(server)
    raise RuntimeError("API did not become ready")


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    server.wait(30)


def s3_starts(size: int, data_dir: Path, env: dict[str, str], args: argparse.Namespace, work: Path) -> float:
    """Median seconds to `/readyz` of one worker on an empty data directory, version 1 in S3 only."""
    url = f"s3://{BUCKET}/scale-{size}"
    (work / f"s3-{size}").mkdir()
    with weed_mini(work / f"s3-{size}") as s3:
        with patch.dict(os.environ, s3):  # botocore reads the endpoint and keys from the environment, as deployments do
            files = VersionStore(data_dir)
            s3fs.S3FileSystem.clear_instance_cache()  # fsspec keeps clients per process: the last size's server is gone
            ObjectStore(url).upload(files.path(1), files.key(1), last=MANIFEST)
        starts = []
        for i in range(args.starts):
            empty = work / f"replica-{size}-{i}"
            server, seconds = serve({**env, **s3, "VISTAS_STORE_URL": url, "VISTAS_DATA_DIR": str(empty)}, 1)
            starts.append(seconds)
            stop(server)
            shutil.rmtree(empty, ignore_errors=True)
    return statistics.median(starts)


def build(redis_url: str, data_dir: Path, size: int, in_redis: bool) -> float:
    """Store the catalog and write version 1 (in a child process); the process's peak RSS in MB."""
    build_catalog(Store.from_url(redis_url, PREFIX), data_dir, size, DIM, in_redis=in_redis)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def memory(pid: int) -> dict[str, float]:
    """MB of a process: resident, proportional (shared pages split), unique (pages no other process maps)."""
    kb = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value = line.split(":", 1)
        kb[name] = int(value.split()[0])
    return {"rss": kb["Rss"] / 1e3, "pss": kb["Pss"] / 1e3,
            "uss": (kb["Private_Clean"] + kb["Private_Dirty"]) / 1e3}


def measure(size: int, args: argparse.Namespace, work: Path) -> dict[str, float]:
    data_dir = work / f"data-{size}"
    with EmbeddedRedis(work / f"redis-{size}", persist=False) as redis_server:
        store = Store.from_url(redis_server.url, PREFIX)
        started = time.perf_counter()
        # its own process, so its peak memory is the build's alone; spawned, not forked: a child forked after
        # this process ran OpenMP (the last size's graph) hangs in its first parallel region (GNU libgomp)
        with get_context("spawn").Pool(1) as pool:
            build_peak = pool.apply(build, (redis_server.url, data_dir, size, size <= args.redis_max))
        built = time.perf_counter() - started
        print(f"  {size:>9,} items stored and version 1 written in {built:.0f}s, peak RSS {build_peak:.0f} MB",
              flush=True)
        loads = []
        for _ in range(args.starts):
            live, started = LiveIndex(store, VersionStore(data_dir)), time.perf_counter()
            live.sync()
            loads.append(time.perf_counter() - started)
        env = {**os.environ, "REDIS_URL": redis_server.url, "VISTAS_DATA_DIR": str(data_dir),
               "VISTAS_KEY_PREFIX": PREFIX}
        starts = []
        for _ in range(args.starts):
            server, seconds = serve(env, 1)
            starts.append(seconds)
            stop(server)
        try:
            from_s3 = s3_starts(size, data_dir, env, args, work)
        except Exception as exc:  # noqa: BLE001 - the other figures still count; say what the S3 server said
            log = work / f"s3-{size}" / "weed.log"
            print(f"  start-up from S3 failed: {exc!r}\n{log.read_text()[-3000:] if log.exists() else ''}", flush=True)
            from_s3 = float("nan")
        server, _ = serve(env, args.workers)
        try:
            rounds: dict[str, list[tuple[float, list[float]]]] = {"healthz": [], "similar": []}
            with Pool(1) as pool:  # the load generator is another process
                pool.apply(run_in_process, (("similar", size, 400, args.concurrency, 1),))  # every worker warm
                children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
                workers = sorted((memory(int(pid)) for pid in children), key=lambda m: -m["rss"])
                for _ in range(args.rounds):
                    for name in rounds:
                        rounds[name].append(pool.apply(run_in_process,
                                                       ((name, size, args.requests, args.concurrency, 1),)))
        finally:
            stop(server)
    latencies = sorted(x for _, lat in rounds["similar"] for x in lat)
    figures = {
        "build s": built, "build peak RSS MB": build_peak, "start-up s": statistics.median(starts),
        "start-up from S3 s": from_s3, "version load ms": statistics.median(loads) * 1000,
        "first worker RSS MB": workers[0]["rss"], "extra worker USS MB": workers[-1]["uss"],
        "extra worker PSS MB": workers[-1]["pss"],
        "similar req/s": statistics.median(t for t, _ in rounds["similar"]),
        "similar / healthz": statistics.median(s / h for (s, _), (h, _) in zip(rounds["similar"], rounds["healthz"])),
        "similar p50 ms": latencies[len(latencies) // 2] * 1000,
        "similar p99 ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }
    if size <= args.reindex_max:
        print(f"  {size:>9,} items: reindex --reuse-features (bench/reindex.py's catalog)...", flush=True)
        figures["reindex s"] = measure_reindex(size, Settings.from_env().with_(redis_url=None), work)[0]
    return figures


def print_table(results: dict[int, dict[str, float]]) -> None:
    sizes = list(results)
    names = list(dict.fromkeys(name for figures in results.values() for name in figures))
    print(f"\n{'figure':22s}" + "".join(f"{s:>12,}" for s in sizes) + "   growth: x previous size (x first size)")
    for name in names:
        row = [results[s].get(name) for s in sizes]
        cells = "".join(f"{v:12.2f}" if v is not None else f"{'-':>12s}" for v in row)
        growth = [f"x{b / a:.2f} (x{b / row[0]:.2f})" for a, b in zip(row, row[1:])
                  if a is not None and b is not None and row[0]]
        print(f"{name:22s}{cells}   {', '.join(growth)}")
    print(f"{'items':22s}" + "".join(f"{s:>12,}" for s in sizes) + "   "
          + ", ".join(f"x{b / a:.1f}" for a, b in zip(sizes, sizes[1:])))
    skipped = [s for s in sizes if "reindex s" not in results[s]]
    if skipped:
        print(f"reindex not measured at {', '.join(f'{s:,}' for s in skipped)} items (over --reindex-max): "
              "their features alone are 2.5 kB an item in Redis, and 2 cores reindex about 2,400 items/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000,5000000", help="comma-separated catalog sizes")
    parser.add_argument("--requests", type=int, default=2000, help="requests per endpoint per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for the memory and load figures")
    parser.add_argument("--starts", type=int, default=3, help="start-ups timed per size")
    parser.add_argument("--reindex-max", type=int, default=1_000_000, help="largest size reindexed")
    parser.add_argument("--redis-max", type=int, default=1_000_000,
                        help="largest size whose items are also written to Redis (the API reads none of them)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"{args.workers} gunicorn workers, {args.concurrency} clients, {args.requests} requests x {args.rounds} "
          f"rounds per endpoint; {args.starts} start-ups per size; figures are medians")
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for size in sizes:
            results[size] = measure(size, args, Path(work))
            print("  " + ", ".join(f"{k} {v:.2f}" for k, v in results[size].items()), flush=True)
    print_table(results)


if __name__ == "__main__":
    main()
