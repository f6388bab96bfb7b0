"""Helpers several test modules share: running `vistas` and its workers as users do, a first version
built inline, waiting for a condition, and reading API errors."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
import requests

from indexer.embedded_redis import EmbeddedCluster, EmbeddedRedis
from indexer.ingest import ingest
from indexer.manifest import Entry, read_catalog
from recommender.model.tagger import Tagger
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.items import Item
from recommender.store.keys import Keys
from tests.conftest import DEMO, sample_rows, write_manifest

VISTAS = [sys.executable, "-m", "indexer.cli"]


def env_for(settings: Settings) -> dict[str, str]:
    env = {**os.environ, "REDIS_URL": settings.redis_url_or_default, "VISTAS_DATA_DIR": str(settings.data_dir),
           "VISTAS_KEY_PREFIX": settings.key_prefix, "VISTAS_DEVICE": "cpu"}
    for var, value in (("VISTAS_STORE_URL", settings.store_url), ("VISTAS_RUNTIME_DIR", settings.runtime_dir)):
        if value is not None:
            env[var] = str(value)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_api(settings: Settings, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [*VISTAS, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2"], env=env_for(settings),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or still loading the index
            pass
        assert proc.poll() is None, "vistas serve exited"
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("API did not become ready")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(20)


def assert_error(response, status: int, code: str) -> None:
    """A JSON error with this status and code, and a message."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"]["code"] == code and body["error"]["message"]


TAGS = ["beach", "sea", "sand", "snow", "mountain", "ski", "city", "tower", "bridge", "forest", "river", "boat"]


def tag_only(item_id: str, rng: random.Random) -> Entry:
    return Entry(Item(id=item_id, title=item_id, given_tags=rng.sample(TAGS, 3)), None)


def photo_item(item_id: str, row: dict[str, str]) -> Item:
    return Item(id=item_id, title=row["title"], category=row["category"], image=str(DEMO / row["image"]))


def build_first_version(settings: Settings, store: Store, tagger: Tagger, tmp_path: Path, rows: int = 12) -> None:
    """Version 1 from a few real photos plus tag-only items, inline."""
    ingest(read_catalog(write_manifest(sample_rows()[:rows], tmp_path / "v1")), settings, store, tagger,
           progress=False)
    rng = random.Random(1)
    ingest([tag_only(f"base-{i}", rng) for i in range(20)], settings, store, tagger, progress=False)


def start_worker(settings: Settings, log: Path, **env: str) -> subprocess.Popen:
    full_env = {**env_for(settings), "VISTAS_WORKER_BATCH_MS": "50", **env}
    return subprocess.Popen([*VISTAS, "worker"], env=full_env, stdout=subprocess.DEVNULL,
                            stderr=log.open("a"))


def wait_for(condition, timeout: float, what: str, step: float = 0.1):
    """``condition()``'s first true value, polled every ``step`` (a Redis down meanwhile counts as not yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
            if value:
                return value
        except redis.ConnectionError:
            pass
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Restartable:
    """A Redis a fault test stops and starts; ``start`` returns once it serves again."""

    url: str
    stop: Callable[[], None]
    start: Callable[[], object]


@contextmanager
def own_redis(kind: str, directory: Path, prefix: str) -> Iterator[Restartable]:
    """A persisted Redis of the test's own (``single``, or a 3-master ``cluster``). On the cluster, the node
    holding the catalog's keys (pointer, streams) is the one stopped and started, and it serves again once
    the cluster says ``cluster_state:ok`` (a restarted node answers CLUSTERDOWN for a second or two)."""
    if kind == "cluster":
        with EmbeddedCluster(directory, persist=True) as cluster:
            node = cluster.node_of(Keys(prefix).version)
            yield Restartable(cluster.url, node.stop, lambda: (node.start(), cluster.wait_ok()))
    else:
        with EmbeddedRedis(directory, persist=True) as server:
            yield Restartable(server.url, server.stop, server.start)
