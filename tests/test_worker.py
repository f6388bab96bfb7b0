"""Indexer workers on the ingest stream: real Redis, real model, real photos, real processes."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import redis
import requests

from indexer.embedded_redis import EmbeddedRedis
from indexer.worker import Worker
from recommender.app import create_app
from recommender.live_index import LiveIndex
from recommender.model.tagger import Tagger
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.items import Item
from recommender.store.queue import INDEXERS
from recommender.versions import VersionStore
from tests.conftest import DEMO, sample_rows
from tests.helpers import (build_first_version, free_port, photo_item, start_api, start_worker, stop, tag_only,
                           wait_for)

def statuses(store: Store, ids: list[str]) -> Counter:
    return Counter(s.status if s is not None else "missing" for s in store.items.summaries(ids))


def consumer_pending(store: Store, name: str) -> int:
    return sum(c["pending"] for key in store.keys.queues for c in store.r.xinfo_consumers(key, INDEXERS)
               if c["name"].decode() == name)


@pytest.mark.cluster
def test_worker_tags_indexes_and_the_api_serves_at_once(
    settings: Settings, store: Store, tagger: Tagger, tmp_path: Path
) -> None:
    build_first_version(settings, store, tagger, tmp_path)
    client = create_app(settings).test_client()
    eiffel = next(r for r in sample_rows() if r["id"] == "landmark-eiffeltower")
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff" + b"\x00" * 5000)
    store.items.put(photo_item("eiffel-again", eiffel))
    store.items.put(Item(id="broken", title="broken", image=str(corrupt)))
    store.items.put(Item(id="tags-only", title="tags", given_tags=["beach", "sea"]))
    for item_id in ("eiffel-again", "broken", "tags-only"):
        store.queue.enqueue(item_id)

    stats = Worker(settings, store, tagger=tagger, burst=True).run()

    assert (stats.indexed, stats.failed) == (2, 1)
    body = client.get("/v1/items/landmark-eiffeltower/similar?k=3").get_json()
    assert body["items"][0]["id"] == "eiffel-again"  # the same photo: the nearest item, no restart needed
    assert store.items.get("tags-only").status == "indexed"
    broken = store.items.get("broken")
    assert broken.status == "failed" and "not an image" in broken.reason
    dead = store.queue.dead_letters()
    assert [d["id"] for d in dead] == ["broken"] and dead[0]["reason"] == broken.reason
    queues = store.queue.stats()
    assert queues[store.keys.ingest]["waiting"] == 0 and queues[store.keys.ingest]["pending"] == 0
    assert store.workers.running() == []  # a worker that exits removes its heartbeat


class Flaky:
    """A tagger that crashes (not an unreadable photo: a device error) on one photo."""

    def __init__(self, tagger: Tagger, poison: str):
        self.tagger, self.poison, self.device, self.tag_arrays = tagger, poison, tagger.device, tagger.tag_arrays

    def tag(self, sources):
        sources = list(sources)
        if any(Path(src).name == self.poison for _, src in sources):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.tagger.tag(sources)


@pytest.mark.cluster
def test_a_photo_that_keeps_failing_is_retried_alone_then_dead_lettered(
    settings: Settings, store: Store, tagger: Tagger, tmp_path: Path
) -> None:
    build_first_version(settings, store, tagger, tmp_path)
    rows = sample_rows()[20:24]
    for i, row in enumerate(rows):
        store.items.put(photo_item(f"new-{i}", row))
        store.queue.enqueue(f"new-{i}")
    poison = Path(rows[1]["image"]).name
    settings = settings.with_(claim_idle_s=0.2, max_attempts=3)
    for _ in range(6):  # one worker restarted (as after a crash): it claims its stale messages each time
        Worker(settings, store, tagger=Flaky(tagger, poison), name="w", burst=True).run()
        time.sleep(0.3)

    states = {i: store.items.get(f"new-{i}") for i in range(4)}
    assert [states[i].status for i in (0, 2, 3)] == ["indexed"] * 3  # its batch-mates were retried alone
    assert states[1].status == "failed"
    assert "gave up after 3 attempts" in states[1].reason and "illegal memory access" in states[1].reason
    assert [d["id"] for d in store.queue.dead_letters()] == ["new-1"]
    queues = store.queue.stats()[store.keys.ingest]
    assert queues["pending"] == 0 and queues["waiting"] == 0


class Overtaken:
    """A tagger during whose work something else happens (``meanwhile``), as on a slower worker."""

    def __init__(self, tagger: Tagger, meanwhile):
        self.tagger, self.meanwhile, self.device, self.tag_arrays = tagger, meanwhile, tagger.device, tagger.tag_arrays

    def tag(self, sources):
        results = list(self.tagger.tag(sources))
        self.meanwhile()
        return results


def test_a_slower_worker_never_undoes_a_faster_ones_index_of_a_replaced_photo(
    settings: Settings, store: Store, tagger: Tagger, tmp_path: Path
) -> None:
    build_first_version(settings, store, tagger, tmp_path)
    rows = {r["id"]: r for r in sample_rows()}
    store.submit(photo_item("swap", rows["landmark-eiffeltower"]))
    fast: dict[str, object] = {}

    def replaced_and_indexed_elsewhere() -> None:
        store.submit(photo_item("swap", next(r for r in rows.values() if r["category"] == "food_fruit")))
        fast["stats"] = Worker(settings, store, tagger=tagger, name="fast", burst=True).run()
        fast["item"] = store.items.get("swap")

    slow = Worker(settings, store, tagger=Overtaken(tagger, replaced_and_indexed_elsewhere), name="slow",
                  burst=True).run()

    assert fast["stats"].indexed == 1 and slow.indexed == 0  # the old photo's outcome was not written
    item, indexed = store.items.get("swap"), fast["item"]
    assert item.status == "indexed" and item.tags == indexed.tags and item.image == indexed.image
    np.testing.assert_array_equal(item.vector, indexed.vector)
    assert item.tags != store.items.get("landmark-eiffeltower").tags  # the fruit's tags, not the tower's
    assert store.queue.stats()[store.keys.ingest]["pending"] == 0  # both messages acknowledged


def test_sigterm_finishes_the_current_batch_then_exits(
    settings: Settings, store: Store, tagger: Tagger, tmp_path: Path, worker_log: Path
) -> None:
    build_first_version(settings, store, tagger, tmp_path)
    rows = sample_rows()
    for i in range(40):
        store.items.put(photo_item(f"p-{i}", rows[i % len(rows)]))
        store.queue.enqueue(f"p-{i}")
    proc = start_worker(settings, worker_log, VISTAS_WORKER_BATCH="8")
    try:
        name = wait_for(lambda: [w["name"] for w in store.workers.running()], 60, "the worker's heartbeat")[0]
        wait_for(lambda: consumer_pending(store, name) > 0, 30, "a batch in progress", step=0.01)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert consumer_pending(store, name) == 0  # the batch it had was finished and acknowledged
    counts = statuses(store, [f"p-{i}" for i in range(40)])
    assert counts["indexed"] >= 8 and counts["indexed"] % 8 == 0 and counts["indexed"] + counts["queued"] == 40
    assert store.queue.stats()[store.keys.ingest]["waiting"] == counts["queued"]  # the rest waits, not lost
    assert store.workers.running() == []


@pytest.mark.cluster
def test_an_item_written_through_the_api_becomes_recommendable_and_is_gone_at_once_when_deleted(
    settings: Settings, store: Store, tagger: Tagger, tmp_path: Path, worker_log: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    build_first_version(settings, store, tagger, tmp_path)
    monkeypatch.setenv("VISTAS_IMAGE_ROOT", str(DEMO))  # photos named by path in writes live here
    port = free_port()
    worker = start_worker(settings, worker_log)
    api = start_api(settings, port)
    base = f"http://127.0.0.1:{port}/v1/items"
    try:
        wait_for(store.workers.running, 60, "the worker's heartbeat")
        eiffel = next(r for r in sample_rows() if r["id"] == "landmark-eiffeltower")
        put = requests.put(f"{base}/eiffel-copy", json={"title": "Eiffel again", "image": eiffel["image"]},
                           timeout=5)
        assert put.status_code == 202, put.text

        def served() -> bool:
            answer = requests.get(f"{base}/landmark-eiffeltower/similar?k=3", timeout=5)
            assert answer.status_code == 200
            return "eiffel-copy" in [r["id"] for r in answer.json()["items"]]

        wait_for(served, 20, "the new item in similar answers", step=0.05)

        assert requests.delete(f"{base}/eiffel-copy", timeout=5).status_code == 204
        for _ in range(30):  # both API processes: the one that deleted, and the other one
            answer = requests.get(f"{base}/landmark-eiffeltower/similar?k=3", timeout=5).json()
            assert "eiffel-copy" not in [r["id"] for r in answer["items"]]
    finally:
        stop(api)
        worker.terminate()
        worker.wait(30)


def test_2000_items_survive_two_killed_workers_and_a_redis_restart(
    tagger: Tagger, tmp_path: Path, worker_log: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "redis", persist=True).start()
    settings = Settings(redis_url=server.url, data_dir=tmp_path / "data", key_prefix="fault", n_topics=10)
    store = Store.from_url(server.url, "fault")
    workers: list[subprocess.Popen] = []
    stopped = threading.Event()
    try:
        build_first_version(settings, store, tagger, tmp_path)
        base_ids = store.items.ids()
        env = {"VISTAS_CLAIM_IDLE": "2", "VISTAS_WORKER_BATCH": "40"}
        workers += [start_worker(settings, worker_log, **env) for _ in range(2)]
        wait_for(lambda: len(store.workers.running()) == 2, 90, "two workers' heartbeats")
        names = {w["pid"]: w["name"] for w in store.workers.running()}

        ids = [f"item-{i:04d}" for i in range(2000)]
        rows, rng = sample_rows(), random.Random(7)
        producer_errors: list[BaseException] = []

        def produce() -> None:
            writer = Store.from_url(server.url, "fault")
            for i, item_id in enumerate(ids):
                entry = tag_only(item_id, rng)
                item = photo_item(item_id, rows[i % len(rows)]) if i % 25 == 0 else entry.item
                while not stopped.is_set():
                    try:
                        writer.items.put(item)
                        writer.queue.enqueue(item_id)
                        break
                    except redis.ConnectionError:  # Redis is restarting: the client retries, as a real one would
                        time.sleep(0.1)
                time.sleep(0.005)

        def run_producer() -> None:
            try:
                produce()
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                producer_errors.append(exc)

        producer = threading.Thread(target=run_producer, daemon=True)
        producer.start()

        def indexed(n: int, what: str) -> None:
            wait_for(lambda: statuses(store, ids)["indexed"] >= n, 60, what, step=0.5)

        def kill_mid_batch(proc: subprocess.Popen) -> None:
            wait_for(lambda: consumer_pending(store, names[proc.pid]) > 0, 30, "a batch in progress", step=0.02)
            proc.kill()
            proc.wait()
            workers.append(start_worker(settings, worker_log, **env))

        indexed(300, "300 items indexed")
        kill_mid_batch(workers[0])
        indexed(900, "900 items indexed")
        server.stop()
        time.sleep(1.0)
        server.start()
        indexed(1400, "1400 items indexed")
        kill_mid_batch(workers[1])
        producer.join(60)
        assert not producer_errors and not producer.is_alive()

        indexed(len(ids), "every item indexed")
        queues = store.queue.stats()
        assert (queues[store.keys.ingest]["waiting"], queues[store.keys.ingest]["pending"]) == (0, 0)  # no limbo
        assert queues[store.keys.dead]["length"] == 0

        live = LiveIndex(store, VersionStore(settings.data_dir))
        live.sync()
        assert live.index is not None
        assert sorted(live.index.ids.values()) == sorted(base_ids + ids)  # each item in the index exactly once
        assert int(live.index.present.sum()) == len(base_ids) + len(ids)
        upserts = Counter(c["id"] for _, c in store.changes.after("0-0", count=100_000) if c["op"] == "upsert")
        assert set(upserts) >= set(ids)
        assert sum(n - 1 for n in upserts.values()) <= 2  # indexed once each, but for a message retried at the restart
    finally:
        stopped.set()
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        server.stop()
        shutil.rmtree(tmp_path / "redis", ignore_errors=True)
