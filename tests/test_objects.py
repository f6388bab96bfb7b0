"""Versions, heads, maps, user models and uploaded photos in object storage: hosts with empty disks.

Every test runs against a real S3 server (SeaweedFS on loopback, ``tests/s3.py``). A "host" is a data
directory: the writer's, and replicas' and workers' that start empty and share only Redis and the store.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import pytest
import requests

from indexer.reindex import Reindex
from indexer.users import prune as prune_user_models
from indexer.worker import Worker
from recommender.app import create_app
from recommender.model.exported import heads_dir, publish_heads, runtime_dir
from recommender.model.onnx_export import export_head
from recommender.model.tagger import Tagger
from recommender.objects import NOT_STORED, ObjectStore
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.items import Item
from recommender.users.live import FOLDER
from recommender.versions import MANIFEST, VersionStore
from tests.conftest import DEMO, REPO, sample_rows
from tests.helpers import build_first_version, free_port, start_api, stop

#: Another host sees a write within this many seconds (the issue's bound).
WITHIN_S = 1.0


@pytest.fixture
def writer(settings: Settings, s3_url: str) -> Settings:
    """The indexer's host: builds versions and uploads them to S3."""
    return settings.with_(store_url=s3_url)


def host(writer: Settings, tmp_path: Path, name: str, tagger: Tagger) -> Settings:
    """Another host: an empty data directory, the same Redis and store, the backbone export baked in (as the
    CPU image does)."""
    return writer.with_(data_dir=tmp_path / name, runtime_dir=runtime_dir(tagger.settings))


def test_object_store_on_s3(s3_url: str, tmp_path: Path) -> None:
    objects = ObjectStore(s3_url)
    objects.put("a/b.txt", b"one")
    objects.put("a/c/d.txt", b"two")
    assert objects.get("a/b.txt") == b"one" and objects.exists("a/c/d.txt") and not objects.exists("a/x")
    assert objects.find("a") == ["b.txt", "c/d.txt"] and objects.find("nothing") == []
    assert objects.url_of("a/b.txt") == f"{s3_url}/a/b.txt"
    copy = objects.download("a", tmp_path / "copy")
    assert (copy / "c" / "d.txt").read_bytes() == b"two" and [p.name for p in tmp_path.iterdir()] == ["copy"]
    objects.delete("a")
    assert objects.find("a") == [] and not objects.exists("a/b.txt")
    with pytest.raises(FileNotFoundError):
        objects.get("a/b.txt")


def test_a_version_is_written_manifest_last_and_read_by_a_host_with_an_empty_disk(
    writer: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = VersionStore.for_settings(writer)
    with files.create(1, {"items": 2}) as scratch:
        (scratch / "ids.json").write_text("[]")
        (scratch / "part").mkdir()
        (scratch / "part" / "x.bin").write_bytes(b"x" * 5000)
    replica = VersionStore.for_settings(writer.with_(data_dir=tmp_path / "replica"))
    assert replica.versions() == [1] and replica.exists(1) and not (tmp_path / "replica").exists()
    path = replica.path(1)  # downloaded whole, then renamed into place
    assert (path / "part" / "x.bin").read_bytes() == b"x" * 5000 and replica.manifest(1)["items"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["000001"]  # no temporary folder left

    objects = files.objects  # a build that dies before its manifest is uploaded leaves no version
    monkeypatch.setattr(objects.fs, "put_file", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("died")))
    with pytest.raises(ConnectionError):
        with files.create(2, {"items": 1}) as scratch:
            (scratch / "ids.json").write_text("[]")
    assert objects.exists("versions/000002/ids.json") and not objects.exists(f"versions/000002/{MANIFEST}")
    assert replica.versions() == [1] and not replica.exists(2) and not replica.path(2).exists()


def test_a_replica_with_an_empty_disk_serves_search_topics_and_the_map(
    writer: Settings, store: Store, tagger: Tagger, tmp_path: Path
) -> None:
    build_first_version(writer, store, tagger, tmp_path)
    shutil.copytree(REPO / "demo" / "heads" / "groups", heads_dir(writer.data_dir) / "groups")
    export_head(heads_dir(writer.data_dir) / "groups")
    publish_heads(writer)
    replica = host(writer, tmp_path, "replica", tagger)
    client = create_app(replica).test_client()

    assert client.get("/readyz").status_code == 200  # before: 503 for ever (no version on this disk)
    first = next(r for r in sample_rows()[:12] if r["image"])
    similar = client.get(f"/v1/items/{first['id']}/similar?k=5")
    assert similar.status_code == 200 and len(similar.get_json()["items"]) == 5
    assert client.get("/v1/topics").status_code == 200 and client.get("/v1/map").status_code == 200
    photo = (DEMO / first["image"]).read_bytes()
    search = client.post("/v1/search?k=5", data={"photo": (io.BytesIO(photo), "q.jpg")},
                         content_type="multipart/form-data")
    assert search.status_code == 200, search.get_data(as_text=True)  # before: 500 (no topic model here)
    assert search.get_json()["items"][0]["id"] == first["id"]
    fetched = heads_dir(replica.data_dir) / "groups"  # the head and its export came from S3, for the tagger
    published = heads_dir(writer.data_dir) / "groups"
    assert sorted(p.name for p in fetched.iterdir()) == sorted(p.name for p in published.iterdir())


def test_an_uploaded_photo_is_indexed_by_a_worker_on_another_host(
    writer: Settings, store: Store, tagger: Tagger, tmp_path: Path
) -> None:
    build_first_version(writer, store, tagger, tmp_path)
    api = host(writer, tmp_path, "api", tagger)
    client = create_app(api).test_client()
    first = next(r for r in sample_rows()[:12] if r["image"])
    photo = (DEMO / first["image"]).read_bytes()
    put = client.put("/v1/items/up-1", data={"photo": (io.BytesIO(photo), "p.jpg"),
                                            "metadata": json.dumps({"title": "Uploaded"})},
                     content_type="multipart/form-data")
    assert put.status_code == 202, put.get_data(as_text=True)
    image = store.items.get("up-1").image
    assert image == f"{writer.store_url}/uploads/up-1.jpg"
    assert ObjectStore(writer.store_url).get("uploads/up-1.jpg") == photo and not (api.data_dir / "uploads").exists()
    store.items.put(Item(id="gone", title="gone", image=f"{writer.store_url}/uploads/gone.jpg"))
    store.queue.enqueue("gone")

    stats = Worker(host(writer, tmp_path, "worker", tagger), store, tagger=tagger, burst=True).run()

    assert (stats.indexed, stats.failed) == (1, 1)  # before: failed, the worker's disk has no such file
    assert store.items.get("gone").reason == NOT_STORED
    similar = client.get(f"/v1/items/{first['id']}/similar?k=3").get_json()
    assert similar["items"][0]["id"] == "up-1"  # the very same photo
    thumb = client.get("/v1/items/up-1/thumbnail")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"


def test_pruning_removes_versions_from_the_store_and_other_hosts_drop_their_copies(
    writer: Settings, store: Store, tmp_path: Path
) -> None:
    writer = writer.with_(keep_versions=2)
    files = VersionStore.for_settings(writer)
    for version in range(1, 5):
        with files.create(version, {"items": 0}) as scratch:
            (scratch / "ids.json").write_text("[]")
    replica = VersionStore.for_settings(writer.with_(data_dir=tmp_path / "replica"))
    assert replica.path(1).is_dir()
    store.versions.set_current(4)

    Reindex(writer, store, progress=False).prune()

    assert files.versions() == [3, 4] and not any(k.startswith("000001") for k in files.objects.find("versions"))
    assert sorted(p.name for p in files.root.iterdir()) == ["000003", "000004"]
    replica.path(4)  # its next download drops the copy the store no longer holds
    assert sorted(p.name for p in replica.root.iterdir()) == ["000004"]

    models = VersionStore.for_settings(writer, FOLDER)
    for version in range(1, 4):
        with models.create(version, {}) as scratch:
            (scratch / "model.joblib").write_bytes(b"m")
    store.users.set_model_version(3)
    prune_user_models(models, store, 2)
    assert models.versions() == [2, 3] and not files.objects.exists(f"{FOLDER}/000001/{MANIFEST}")


def test_two_api_processes_with_empty_disks_answer_writes_and_deletes_consistently(
    writer: Settings, store: Store, tagger: Tagger, tmp_path: Path
) -> None:
    build_first_version(writer, store, tagger, tmp_path)
    one, two = host(writer, tmp_path, "one", tagger), host(writer, tmp_path, "two", tagger)
    ports = free_port(), free_port()
    apis = [start_api(one, ports[0]), start_api(two, ports[1])]  # each ready only once it loaded version 1 from S3
    first, second = (f"http://127.0.0.1:{p}" for p in ports)
    try:
        for item_id in ("new-1", "new-2"):
            put = requests.put(f"{first}/v1/items/{item_id}", json={"title": item_id, "tags": ["beach", "sea"]},
                               timeout=5)
            assert put.status_code == 202, put.text
        Worker(host(writer, tmp_path, "worker", tagger), store, tagger=tagger, burst=True).run()
        _within(lambda base: {"new-1", "new-2"} <= _served(base), [first, second], "the new items")
        assert requests.get(f"{second}/v1/items/new-2", timeout=5).json() == \
            requests.get(f"{first}/v1/items/new-2", timeout=5).json()

        assert requests.delete(f"{first}/v1/items/new-1", timeout=5).status_code == 204
        _within(lambda base: "new-1" not in _served(base)
                and requests.get(f"{base}/v1/items/new-1", timeout=5).status_code == 404, [second], "the delete")
        assert "new-2" in _served(second)
        assert [p.name for p in (one.data_dir / "versions").iterdir()] == ["000001"]
    finally:
        for api in apis:
            stop(api)


def _served(base: str) -> set[str]:
    answer = requests.get(f"{base}/v1/items/base-0/similar?k=100&active_at=any", timeout=5)
    assert answer.status_code == 200, answer.text
    return {r["id"] for r in answer.json()["items"]}


def _within(condition, bases: list[str], what: str, times: int = 4) -> None:
    """``condition`` holds on every API ``times`` requests in a row (either gunicorn worker may answer), within
    WITHIN_S of now."""
    deadline = time.monotonic() + WITHIN_S
    for base in bases:
        streak = 0
        while streak < times:
            streak = streak + 1 if condition(base) else 0
            assert time.monotonic() < deadline or streak >= times, f"{base} did not show {what} within {WITHIN_S}s"
