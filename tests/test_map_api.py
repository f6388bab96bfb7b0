"""/v1/map, /v1/items/{id}/thumbnail and the map page over a real Redis and real photos."""

from __future__ import annotations

import io
import shutil

import pytest
from flask.testing import FlaskClient
from PIL import Image

from recommender.app import create_app
from recommender.catalog_map import REPRESENTATIONS
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.items import Item
from recommender.versions import MAP, VersionStore
from tests.conftest import sample_rows
from tests.helpers import assert_error


@pytest.fixture(scope="module")
def client(indexed: Settings) -> FlaskClient:
    return create_app(indexed).test_client()


@pytest.mark.parametrize("representation", REPRESENTATIONS)
def test_map_has_every_item_in_parallel_arrays(client: FlaskClient, representation: str) -> None:
    response = client.get(f"/v1/map?representation={representation}")
    assert response.status_code == 200
    body = response.get_json()
    n = len(sample_rows())
    assert body["representation"] == representation and body["version"] == 1 and body["count"] == n
    for key in ("ids", "titles", "x", "y", "topics", "photos"):
        assert len(body[key]) == n, key
    assert (body["own_topics"] is None) == (representation == "features")
    titles = {r["id"]: r["title"] for r in sample_rows()}
    assert [titles[i] for i in body["ids"]] == body["titles"]
    topic_count = len(client.get("/v1/topics").get_json()["topics"])
    assert all(0 <= t < topic_count for t in body["topics"])
    assert body["thumbnail_url"].replace("{id}", body["ids"][0]) == f"/v1/items/{body['ids'][0]}/thumbnail"
    assert body["summary"]["text"] and body["summary"]["silhouette"][representation]["served"] is not None
    assert [r["id"] for r in body["representations"]] == list(REPRESENTATIONS)


def test_default_representation_is_the_best_clustered(client: FlaskClient) -> None:
    body = client.get("/v1/map").get_json()
    assert body["representation"] == body["summary"]["best"]


@pytest.mark.parametrize("value", ["raw", "FEATURES", "tags"])
def test_bad_representation_is_400(client: FlaskClient, value: str) -> None:
    assert_error(client.get(f"/v1/map?representation={value}"), 400, "bad_parameter")


def test_version_without_a_map_is_409(indexed: Settings, settings: Settings, store: Store) -> None:
    source = VersionStore(indexed.data_dir).path(1)
    target = VersionStore(settings.data_dir).path(1)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(MAP))
    store.versions.set_current(1)
    assert_error(create_app(settings).test_client().get("/v1/map"), 409, "map_not_built")


def test_thumbnail_is_a_small_cached_jpeg(client: FlaskClient, indexed: Settings) -> None:
    response = client.get("/v1/items/landmark-eiffeltower/thumbnail")
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    image = Image.open(io.BytesIO(response.data))
    assert image.format == "JPEG" and max(image.size) == 256 and len(response.data) < 40_000
    etag = response.headers["ETag"]
    assert etag and "max-age=" in response.headers["Cache-Control"]
    assert list((indexed.data_dir / "thumbnails").rglob("*.jpg"))
    again = client.get("/v1/items/landmark-eiffeltower/thumbnail", headers={"If-None-Match": etag})
    assert again.status_code == 304 and not again.data
    other = client.get("/v1/items/landmark-tajmahal/thumbnail")
    assert other.status_code == 200 and other.headers["ETag"] != etag


def test_thumbnail_errors_are_json(settings: Settings, store: Store, tmp_path) -> None:
    store.items.put(Item(id="no-photo", title="Tags only", given_tags=["beach"]))
    store.items.put(Item(id="gone", title="Moved photo", image=str(tmp_path / "missing.jpg")))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\x00" * 100)
    store.items.put(Item(id="broken", title="Broken photo", image=str(tmp_path / "broken.jpg")))
    client = create_app(settings).test_client()
    assert_error(client.get("/v1/items/no-such-item/thumbnail"), 404, "item_not_found")
    assert_error(client.get("/v1/items/no-photo/thumbnail"), 404, "no_photo")
    assert_error(client.get("/v1/items/gone/thumbnail"), 404, "photo_unavailable")
    assert_error(client.get("/v1/items/broken/thumbnail"), 404, "photo_unavailable")


@pytest.mark.parametrize("path", ["/", "/map"])
def test_page_and_its_files_are_served_locally(client: FlaskClient, path: str) -> None:
    page = client.get(path)
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "<canvas" in html and "http" not in html  # everything from this server, nothing from a CDN
    for asset in ("/web/map.js", "/web/map.css"):
        assert asset in html
        response = client.get(asset)
        assert response.status_code == 200 and b"http" not in response.data
        response.close()


def test_map_and_thumbnails_need_a_client_key_when_keys_are_set(indexed: Settings) -> None:
    client = create_app(indexed.with_(client_keys=("client-key",))).test_client()
    assert_error(client.get("/v1/map"), 401, "unauthorized")
    assert_error(client.get("/v1/items/landmark-eiffeltower/thumbnail"), 401, "unauthorized")
    key = {"X-API-Key": "client-key"}
    assert client.get("/v1/map", headers=key).status_code == 200
    assert client.get("/v1/items/landmark-eiffeltower/thumbnail", headers=key).status_code == 200
    page = client.get("/")  # the page holds no data: it loads, and asks for the key
    assert page.status_code == 200 and 'data-needs-key="yes"' in page.get_data(as_text=True)
