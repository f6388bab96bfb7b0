"""Faults a production deployment meets: a photo that keeps killing its worker, Redis down under API load.

Real processes throughout: workers and a gunicorn API started as users start
them, a redis-server this test stops and starts (on a 3-master cluster, the
node holding the catalog's keys). Load is bounded in count and time, on
loopback only.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from PIL import Image

from recommender.model.tagger import Tagger
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.queue import INDEXERS
from tests.helpers import (Restartable, build_first_version, free_port, own_redis, photo_item, start_api,
                           start_worker, stop, tag_only, wait_for)


def holder(store: Store, message_id: str) -> str | None:
    """The consumer that holds a message right now (delivered, not settled), or None."""
    pending = store.r.xpending_range(store.keys.ingest, INDEXERS, min=message_id, max=message_id, count=1)
    return pending[0]["consumer"].decode() if pending else None


@pytest.mark.cluster
def test_a_photo_that_keeps_killing_its_worker_ends_in_the_dead_letters(
    settings: Settings, store: Store, tagger: Tagger, tmp_path: Path, worker_log: Path
) -> None:
    attempts = 2
    settings = settings.with_(n_topics=8)
    build_first_version(settings, store, tagger, tmp_path, rows=6)
    killer = tmp_path / "killer.png"  # a valid photo, slow enough to decode (about 0.5 s) to be caught holding
    Image.linear_gradient("L").resize((7000, 7000)).convert("RGB").save(killer)
    store.items.put(photo_item("killer", {"title": "the photo that kills", "category": "", "image": str(killer)}))
    store.queue.ensure()
    message = store.queue.enqueue("killer")
    rng = random.Random(3)
    others = [f"after-{i}" for i in range(30)]
    for item_id in others:
        store.items.put(tag_only(item_id, rng).item)
        store.queue.enqueue(item_id)

    env = {"VISTAS_CLAIM_IDLE": "1", "VISTAS_MAX_ATTEMPTS": str(attempts), "VISTAS_WORKER_BATCH": "1"}
    workers = [start_worker(settings, worker_log, **env) for _ in range(2)]
    by_name = {f"{socket.gethostname()}-{w.pid}": w for w in workers}
    try:
        for _ in range(attempts):  # every worker that takes the photo dies with it
            name = wait_for(lambda: holder(store, message) in by_name and holder(store, message), 90,
                            "a worker holding the photo", step=0.01)
            by_name.pop(name).kill()
            fresh = start_worker(settings, worker_log, **env)
            by_name[f"{socket.gethostname()}-{fresh.pid}"] = fresh
            workers.append(fresh)
        wait_for(lambda: store.items.get("killer").status == "failed", 90, "the photo given up on")
        reason = store.items.get("killer").reason
        assert f"gave up after {attempts} attempts" in reason and "killed or crashed" in reason
        wait_for(lambda: all(store.items.get(i).status == "indexed" for i in others), 60, "the other items indexed")
        queues = store.queue.stats()
        assert queues[store.keys.dead]["length"] == 1
        assert queues[store.keys.ingest]["pending"] == 0 and queues[store.keys.ingest]["waiting"] == 0
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


#: Each load client's requests: paced, and capped in count.
PACE_S, MAX_REQUESTS = 0.005, 4000


@dataclass
class Answer:
    endpoint: str
    started: float
    seconds: float
    status: int
    code: str | None = None  # the JSON error's code
    key: str | None = None  # what an acknowledged write wrote


@pytest.mark.parametrize("kind", ["single", "cluster"])
def test_redis_down_under_api_load_answers_503_then_recovers_and_loses_no_acknowledged_write(
    tagger: Tagger, tmp_path: Path, kind: str
) -> None:
    with own_redis(kind, tmp_path / "redis", "outage") as server:
        outage(tagger, tmp_path, server)


def outage(tagger: Tagger, tmp_path: Path, server: Restartable) -> None:
    settings = Settings(redis_url=server.url, data_dir=tmp_path / "data", key_prefix="outage", n_topics=8)
    store = Store.from_url(server.url, "outage")
    api = None
    try:
        build_first_version(settings, store, tagger, tmp_path, rows=6)
        port = free_port()
        api = start_api(settings, port)
        base = f"http://127.0.0.1:{port}"
        answers: list[Answer] = []
        lock, stopping = threading.Lock(), threading.Event()

        def client(n: int) -> None:
            session, i = requests.Session(), 0
            while not stopping.is_set() and i < MAX_REQUESTS:  # about 8 s at this pace; the cap bounds it anyway
                i += 1
                time.sleep(PACE_S)
                kind = ("similar", "recommend", "event", "put")[i % 4]
                key = f"c{n}-{i}"
                started = time.monotonic()
                try:
                    if kind == "similar":
                        r = session.get(f"{base}/v1/items/base-1/similar?k=5", timeout=10)
                    elif kind == "recommend":
                        r = session.get(f"{base}/v1/users/u{n}/recommendations?k=5", timeout=10)
                    elif kind == "event":
                        r = session.post(f"{base}/v1/users/u{n}-{i % 16}/events", timeout=10,
                                         json={"item_id": f"base-{i % 20}", "type": "view"})
                    else:
                        r = session.put(f"{base}/v1/items/{key}", json={"title": key, "tags": ["beach"]}, timeout=10)
                except requests.RequestException as exc:
                    raise AssertionError(f"{kind}: no answer ({exc})") from None
                body = r.json()
                answer = Answer(kind, started, time.monotonic() - started, r.status_code,
                                body.get("error", {}).get("code") if isinstance(body, dict) else None,
                                f"u{n}-{i % 16}" if kind == "event" else key)
                with lock:
                    answers.append(answer)

        threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(3)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(2.0)
        down = time.monotonic()
        server.stop()
        time.sleep(3.0)
        restarting = time.monotonic()
        server.start()
        back = time.monotonic()
        time.sleep(3.0)
        stopping.set()
        for t in threads:
            t.join(30)
        assert not any(t.is_alive() for t in threads)

        statuses = {a.status for a in answers}
        print(f"{len(answers)} answers in {time.monotonic() - t0:.1f}s: statuses {sorted(statuses)}; slowest "
              f"{max(a.seconds for a in answers):.2f}s")
        assert statuses <= {200, 202, 503}, statuses
        assert all(a.code == "store_unavailable" for a in answers if a.status == 503)
        assert max(a.seconds for a in answers) < 3.0  # an outage is an error at once, not a hang
        during = [a for a in answers if down + 0.2 < a.started and a.started + a.seconds < restarting]
        assert during and all(a.status == 503 for a in during), {a.endpoint for a in during if a.status != 503}
        after = [a for a in answers if a.started > back + 1.0]
        assert after and all(a.status in (200, 202) for a in after), {a.status for a in after}

        acknowledged_puts = {a.key for a in answers if a.endpoint == "put" and a.status == 202}
        assert acknowledged_puts and all(store.items.get(key) is not None for key in acknowledged_puts)
        for user in {a.key for a in answers if a.endpoint == "event"}:
            sent = [a for a in answers if a.endpoint == "event" and a.key == user]
            acknowledged, refused = sum(a.status == 202 for a in sent), sum(a.status == 503 for a in sent)
            assert acknowledged + refused == len(sent) < settings.user_history  # none trimmed by the cap
            # Nothing acknowledged is lost. A write Redis applied as it shut down may still have been refused
            # to the client (its reply never sent), so up to the refused ones may be stored too.
            assert acknowledged <= len(store.users.events(user)) <= acknowledged + refused, user
    finally:
        if api is not None:
            stop(api)
