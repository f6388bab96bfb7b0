"""Every door, fed the same corpus of bad and odd photos (tests/corpus.py).

A bad photo gets a 4xx JSON error naming the problem, or an item with
``status=failed`` and the reason; never a 5xx, and the rest of the batch goes
on. Odd but valid photos index. Work per photo is bounded, measured in a
subprocess.
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from PIL import Image

from indexer.ingest import ingest
from indexer.manifest import read_catalog
from indexer.worker import Worker
from recommender.app import create_app
from recommender.model.tagger import Tagger
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.items import Item
from tests.conftest import DEMO, sample_rows, write_manifest
from tests.corpus import MAX_BYTES, MAX_PIXELS, bad_photos, odd_photos, reason
from tests.helpers import VISTAS, env_for

BAD = sorted(bad_photos())
ODD = sorted(odd_photos())


def limited(settings: Settings, **changes) -> Settings:
    return settings.with_(max_image_pixels=MAX_PIXELS, max_image_bytes=MAX_BYTES, device="cpu", **changes)


def write_corpus(folder: Path, names: list[str]) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    corpus = {**bad_photos(), **odd_photos()}
    paths = {}
    for name in names:
        paths[name] = folder / name
        paths[name].write_bytes(corpus[name])
    return paths


def item_id(name: str) -> str:
    return "photo-" + name.replace(".", "-")


def assert_refused(response, name: str) -> None:
    expected, too_large = reason(name)
    assert response.status_code == (413 if too_large else 422), (name, response.get_data(as_text=True))
    error = response.get_json()["error"]
    assert error["code"] == ("photo_too_large" if too_large else "invalid_photo"), name
    assert expected in error["message"], (name, error["message"])


def assert_failed_with_reasons(store: Store, names: list[str]) -> None:
    for name in names:
        item = store.items.get(item_id(name))
        assert item is not None and item.status == "failed", name
        assert reason(name)[0] in item.reason, (name, item.reason)


# -- the API's doors ----------------------------------------------------------------------------


@pytest.fixture
def writes(settings: Settings, tmp_path: Path) -> Iterator[tuple[FlaskClient, Store, Path]]:
    root = tmp_path / "photos"
    write_corpus(root, BAD + ODD)
    s = limited(settings, image_root=root)
    yield create_app(s).test_client(), Store.from_url(s.redis_url_or_default, s.key_prefix), root


@pytest.mark.parametrize("name", BAD)
def test_put_multipart_refuses_a_bad_photo_and_stores_nothing(writes, name: str) -> None:
    client, store, _ = writes
    response = client.put(f"/v1/items/{item_id(name)}", content_type="multipart/form-data", data={
        "photo": (io.BytesIO(bad_photos()[name]), name), "metadata": json.dumps({"title": name})})
    assert_refused(response, name)
    assert store.items.get(item_id(name)) is None and store.queue.stats()[store.keys.ingest]["waiting"] == 0


@pytest.mark.parametrize("name", BAD)
def test_put_json_refuses_an_image_path_to_a_bad_photo(writes, name: str) -> None:
    client, store, _ = writes
    assert_refused(client.put(f"/v1/items/{item_id(name)}", json={"title": name, "image": name}), name)
    assert store.items.get(item_id(name)) is None


def test_both_write_doors_accept_odd_but_valid_photos(writes) -> None:
    client, store, _ = writes
    for name in ODD:
        upload = client.put(f"/v1/items/up-{item_id(name)}", content_type="multipart/form-data", data={
            "photo": (io.BytesIO(odd_photos()[name]), name), "metadata": "{}"})
        assert upload.status_code == 202, (name, upload.get_json())
        assert client.put(f"/v1/items/{item_id(name)}", json={"image": name}).status_code == 202, name
    assert store.queue.stats()[store.keys.ingest]["waiting"] == 2 * len(ODD)


def test_search_by_photo_refuses_bad_photos_and_answers_odd_ones(indexed: Settings) -> None:
    client = create_app(limited(indexed)).test_client()
    for name in BAD:
        response = client.post("/v1/search", content_type="multipart/form-data",
                               data={"photo": (io.BytesIO(bad_photos()[name]), name)})
        assert_refused(response, name)
    for name in ODD:
        response = client.post("/v1/search?k=3", content_type="multipart/form-data",
                               data={"photo": (io.BytesIO(odd_photos()[name]), name)})
        assert response.status_code == 200 and len(response.get_json()["items"]) == 3, name


# -- the offline doors: ingest, the worker, train-head; and thumbnails of what got stored anyway --


@pytest.fixture(scope="module")
def built(redis_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, Tagger, Path]]:
    """Version 1 of a small catalog under the corpus's limits, and the corpus on disk (not ingested)."""
    data = tmp_path_factory.mktemp("bad-photos")
    s = limited(Settings(redis_url=redis_server.url, data_dir=data / "data", key_prefix="bad-photos", n_topics=8))
    tagger = Tagger(s, with_heads=False)
    store = Store.from_url(s.redis_url_or_default, s.key_prefix)
    ingest(read_catalog(write_manifest(sample_rows()[:16], data / "v1")), s, store, tagger, progress=False)
    write_corpus(data / "corpus", BAD + ODD)
    yield s, tagger, data / "corpus"
    store.clear()


def corpus_manifest(folder: Path, names: list[str]) -> Path:
    path = folder.parent / "manifest.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "title", "image"])
        writer.writerows([item_id(n), n, f"{folder.name}/{n}"] for n in names)
    return path


def test_ingest_fails_each_bad_photo_with_its_reason_and_indexes_the_rest(built) -> None:
    s, tagger, folder = built
    store = Store.from_url(s.redis_url_or_default, s.key_prefix)
    report = ingest(read_catalog(corpus_manifest(folder, BAD + ODD)), s, store, tagger, progress=False)
    assert sorted(i for i, _ in report.failed) == sorted(item_id(n) for n in BAD)
    assert report.indexed == len(ODD)
    assert_failed_with_reasons(store, BAD)
    assert all(store.items.get(item_id(n)).status == "indexed" for n in ODD)


def test_the_worker_fails_each_bad_photo_with_its_reason_and_indexes_the_rest(built) -> None:
    s, tagger, folder = built
    store = Store.from_url(s.redis_url_or_default, s.key_prefix)
    for name in BAD + ODD:  # stored without the API's check, as an older writer might have
        store.items.put(Item(id="w-" + item_id(name), title=name, image=str(folder / name)))
        store.queue.enqueue("w-" + item_id(name))
    stats = Worker(s, store, tagger, name="bad-photos", burst=True).run()
    assert stats.failed == len(BAD) and stats.indexed == len(ODD)
    for name in BAD:
        item = store.items.get("w-" + item_id(name))
        assert item.status == "failed" and reason(name)[0] in item.reason, (name, item.reason)
    assert all(store.items.get("w-" + item_id(n)).status == "indexed" for n in ODD)
    queues = store.queue.stats()[store.keys.ingest]
    assert queues["pending"] == 0 and queues["waiting"] == 0


def test_thumbnails_of_bad_photos_are_404s_that_say_why(built) -> None:
    s, _, folder = built
    store = Store.from_url(s.redis_url_or_default, s.key_prefix)
    client = create_app(s).test_client()
    for name in BAD + ODD:
        store.items.put(Item(id="t-" + item_id(name), title=name, image=str(folder / name)))
    for name in BAD:
        response = client.get(f"/v1/items/t-{item_id(name)}/thumbnail")
        assert response.status_code == 404 and response.get_json()["error"]["code"] == "photo_unavailable", name
        assert reason(name)[0] in response.get_json()["error"]["message"], name
    for name in ODD:
        response = client.get(f"/v1/items/t-{item_id(name)}/thumbnail")
        assert response.status_code == 200 and response.mimetype == "image/jpeg", name
        assert max(Image.open(io.BytesIO(response.data)).size) == 256


def test_train_head_skips_bad_photos_with_their_reasons(built, tmp_path: Path) -> None:
    s, _, folder = built
    dataset = tmp_path / "dataset"
    rows = sample_rows()
    for label, category in (("outdoors", "outdoors"), ("tools", "tool")):
        (dataset / label).mkdir(parents=True)
        for row in [r for r in rows if r["category"] == category][:6]:
            (dataset / label / Path(row["image"]).name).write_bytes((DEMO / row["image"]).read_bytes())
    for n, name in enumerate(BAD):
        (dataset / ("outdoors", "tools")[n % 2] / name).write_bytes(bad_photos()[name])
    done = subprocess.run([*VISTAS, "train-head", str(dataset), "--name", "bad"], env={
        **env_for(s.with_(data_dir=tmp_path / "data")), "VISTAS_MAX_IMAGE_PIXELS": str(MAX_PIXELS),
        "VISTAS_MAX_IMAGE_BYTES": str(MAX_BYTES)}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"0 photos have stored features, {12 + len(BAD)} need tagging" in done.stdout
    for name in BAD:
        line = next(line for line in done.stderr.splitlines() if f"/{name}:" in line)
        assert line.lstrip().startswith("skipped") and reason(name)[0] in line, line
    assert (tmp_path / "data" / "heads" / "bad").is_dir()


# -- bounded work per photo -----------------------------------------------------------------------

#: Peak RSS of a process that imported the decoder and decoded one photo, and its CPU seconds.
RSS_BUDGET_MB, CPU_BUDGET_S = 400, 10.0


def peak(path: Path) -> tuple[float, float, tuple[int, ...]]:
    """Decode ``path`` as a worker would, in a fresh process: (peak RSS in MB, CPU seconds, crop shape)."""
    script = textwrap.dedent(f"""
        import json, resource
        from pathlib import Path
        from recommender.photos import load_crop
        crop = load_crop(Path({str(path)!r}), 50_000_000, 25 * 1024 * 1024)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
        peak_mb = int(status["VmHWM"].split()[0]) / 1024  # this process's own peak: ru_maxrss survives exec
        print(json.dumps([peak_mb, usage.ru_utime + usage.ru_stime, crop.shape]))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    rss, cpu, shape = json.loads(done.stdout)
    return rss, cpu, tuple(shape)


def test_a_million_pixel_wide_strip_is_cropped_before_it_is_resized(tmp_path: Path) -> None:
    strip = Image.linear_gradient("L").resize((1_000_000, 20)).convert("RGB")  # 20 Mpx, under the 50 Mpx limit
    strip.save(tmp_path / "strip.png")
    del strip
    rss, cpu, shape = peak(tmp_path / "strip.png")
    print(f"1,000,000x20 PNG: peak RSS {rss:.0f} MB, {cpu:.2f} s CPU")  # before: 14.6 GB, 50 s
    assert shape == (224, 224, 3)
    assert rss < RSS_BUDGET_MB and cpu < CPU_BUDGET_S


def test_a_49_megapixel_jpeg_is_decoded_at_a_reduced_scale(tmp_path: Path) -> None:
    Image.open(DEMO / "images" / "scratch" / "nature-beach-malibu.jpg").resize((7000, 7000)).save(
        tmp_path / "big.jpg", quality=90)
    rss, cpu, shape = peak(tmp_path / "big.jpg")
    print(f"7000x7000 JPEG: peak RSS {rss:.0f} MB, {cpu:.2f} s CPU")
    assert shape == (224, 224, 3)
    assert rss < RSS_BUDGET_MB and cpu < CPU_BUDGET_S
