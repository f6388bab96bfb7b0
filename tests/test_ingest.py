"""Ingesting catalogs: first build, adding to a built catalog, failures that lose nothing."""

from __future__ import annotations

import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle
from pathlib import Path

import pytest

from indexer import ingest as ingest_module
from indexer.ingest import ingest
from indexer.manifest import read_catalog
from recommender.app import create_app
from recommender.model.tagger import Tagger
from recommender.settings import Settings
from recommender.store import Store
from recommender.versions import MODEL, VersionStore
from tests.conftest import DEMO, sample_rows, write_manifest


def test_adding_to_a_built_catalog_uses_the_current_model_and_is_served_at_once(
    settings: Settings, store: Store, tagger: Tagger, tmp_path: Path
) -> None:
    rows = sample_rows()
    first = [r for r in rows if r["id"] != "landmark-eiffeltower_2"]
    late = [r for r in rows if r["id"] == "landmark-eiffeltower_2"]
    report = ingest(read_catalog(write_manifest(first, tmp_path / "a")), settings, store, tagger, progress=False)
    assert report.built and report.version == 1 and report.indexed == len(first)
    model_file = VersionStore(settings.data_dir).path(1) / MODEL
    model_bytes = model_file.read_bytes()

    client = create_app(settings).test_client()
    before = [r["id"] for r in client.get("/v1/items/landmark-eiffeltower/similar").get_json()["items"]]
    assert "landmark-eiffeltower_2" not in before

    report = ingest(read_catalog(write_manifest(late, tmp_path / "b")), settings, store, tagger, progress=False)
    assert not report.built and report.version == 1 and report.indexed == 1
    assert model_file.read_bytes() == model_bytes  # no refit
    assert VersionStore(settings.data_dir).versions() == [1]

    body = client.get("/v1/items/landmark-eiffeltower/similar").get_json()  # same app, no restart
    assert body["version"] == 1
    assert "landmark-eiffeltower_2" in [r["id"] for r in body["items"]][:5]
    assert client.get("/v1/items/landmark-eiffeltower_2/similar").status_code == 200


def test_unreadable_photos_fail_with_a_reason_and_the_rest_are_indexed(
    settings: Settings, store: Store, tagger: Tagger, tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for row in sample_rows()[:12]:
        shutil.copy(DEMO / row["image"], folder / f"{row['id']}.jpg")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 5000)
    data = (DEMO / sample_rows()[0]["image"]).read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 4])
    from PIL import Image

    Image.new("L", (9000, 9000)).save(folder / "bomb.png")
    small = settings.with_(max_image_pixels=40_000_000)

    report = ingest(read_catalog(folder), small, store, tagger, progress=False)
    assert report.indexed == 12 and sorted(i for i, _ in report.failed) == ["bomb", "corrupt", "truncated"]
    bomb = store.items.get("bomb")
    assert bomb is not None and bomb.status == "failed" and "over the limit" in bomb.reason
    assert store.items.get("truncated").status == "failed"
    assert store.items.count() == 15  # failed items are kept, with their reason

    client = create_app(small).test_client()
    response = client.get("/v1/items/corrupt/similar")
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "item_not_indexed"
    assert client.get("/v1/items/corrupt").get_json()["reason"]


def test_tag_only_items_are_indexed(settings: Settings, store: Store, tagger: Tagger, tmp_path: Path) -> None:
    rows = [dict(r, image="", tags="") for r in sample_rows()[:3]]
    rows = [dict(r, tags=t) for r, t in zip(rows, ["beach|sun", "beach|sea", "snow|mountain"])]
    report = ingest(read_catalog(write_manifest(rows, tmp_path)), settings, store, tagger, progress=False)
    assert report.indexed == 3 and report.built
    item = store.items.get(rows[0]["id"])
    assert item.status == "indexed" and ("beach", 1.0) in item.tags
    similar = create_app(settings).test_client().get(f"/v1/items/{rows[0]['id']}/similar?k=1").get_json()
    assert similar["items"][0]["id"] == rows[1]["id"]


def test_two_first_ingests_at_once_make_one_version_that_serves_both(
    settings: Settings, store: Store, tagger: Tagger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both find the catalog empty. Each used to build a version of its own, and the later flip hid the other's
    items from every answer (their vectors were of a model nobody served)."""
    rows = [dict(r, image="") for r in sample_rows()[:12]]
    rows = [dict(r, tags=t) for r, t in zip(rows, cycle(["beach|sun", "beach|sea", "snow|mountain", "snow|ski"]))]
    halves = [read_catalog(write_manifest(part, tmp_path / name)) for part, name in ((rows[:6], "a"), (rows[6:], "b"))]
    both_in, build = threading.Barrier(2), ingest_module.build_version

    def build_once_both_could(*args, **kwargs):  # waits for the other ingest, unless something keeps it out
        try:
            both_in.wait(timeout=3)
        except threading.BrokenBarrierError:
            pass
        return build(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "build_version", build_once_both_could)
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda entries: ingest(entries, settings, store, tagger, progress=False), halves))
    current = store.versions.current()
    assert [r.built for r in sorted(reports, key=lambda r: -r.built)] == [True, False]
    assert {r.version for r in reports} == {current} and sum(r.indexed for r in reports) == 12
    client = create_app(settings).test_client()
    for row in rows:
        assert store.items.get(row["id"]).version == current
        assert client.get(f"/v1/items/{row['id']}/similar?k=1").status_code == 200, row["id"]
