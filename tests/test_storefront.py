"""The storefront API: writes, deletes, sale windows, filters, diversity, users, auth."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from recommender.app import create_app
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.changes import Change
from tests.conftest import DEMO, sample_rows

NOW = 1_800_000_000.0  # a fixed instant (2027-01-15), so windows and decay are deterministic
DAY = 86400.0
ADMIN, CLIENT = {"X-API-Key": "admin-secret"}, {"Authorization": "Bearer client-secret"}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def client(indexed: Settings, clock: Clock) -> Iterator[FlaskClient]:
    """A fresh app over the shared sample catalog; tests undo what they change."""
    yield create_app(indexed, clock=clock).test_client()


def iso(ts: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def ids(response) -> list[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return [r["id"] for r in response.get_json()["items"]]


# -- item writes -------------------------------------------------------------------------
@pytest.mark.cluster
def test_put_json_item_is_queued_and_enqueued(settings: Settings, clock: Clock, tmp_path: Path) -> None:
    root = DEMO / "images"
    client = create_app(settings.with_(image_root=root), clock=clock).test_client()
    body = {"title": "Beach week", "kind": "sale", "category": "travel", "price": 99.0,
            "starts_at": "2026-12-01T09:00:00+01:00", "ends_at": "2026-12-08T09:00:00Z",
            "image": "scratch/nature-beach-malibu.jpg", "tags": ["sun"], "attrs": {"brand": "acme"}}
    response = client.put("/v1/items/sale-1", json=body)
    assert response.status_code == 202 and response.get_json() == {"id": "sale-1", "status": "queued"}
    item = client.get("/v1/items/sale-1").get_json()
    assert item["status"] == "queued" and item["price"] == 99.0 and item["attrs"] == {"brand": "acme"}
    store = Store.from_url(settings.redis_url_or_default, settings.key_prefix)
    queued = store.r.xrange(store.keys.ingest)
    assert [entry[b"id"] for _, entry in queued] == [b"sale-1"]
    assert client.get("/v1/items/sale-1/similar").status_code in (409, 503)


def test_put_multipart_photo_is_saved(settings: Settings) -> None:
    client = create_app(settings).test_client()
    photo = (DEMO / "images" / "scratch" / "nature-beach-malibu.jpg").read_bytes()
    import io

    response = client.put("/v1/items/up-1", data={
        "photo": (io.BytesIO(photo), "beach.jpg"), "metadata": json.dumps({"title": "Uploaded"})},
        content_type="multipart/form-data")
    assert response.status_code == 202
    saved = settings.data_dir / "uploads" / "up-1.jpg"
    assert saved.read_bytes() == photo
    bad = client.put("/v1/items/up-2", data={"photo": (io.BytesIO(b"nope"), "x.jpg")},
                     content_type="multipart/form-data")
    assert bad.status_code == 422 and bad.get_json()["error"]["code"] == "invalid_photo"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"title": 5, "tags": ["a"]}, "title must be a string"),
        ({"price": -1, "tags": ["a"]}, "price"),
        ({"price": "9", "tags": ["a"]}, "price"),
        ({"starts_at": "tomorrow", "tags": ["a"]}, "ISO-8601"),
        ({"starts_at": "2026-12-02T00:00:00Z", "ends_at": "2026-12-01T00:00:00Z", "tags": ["a"]}, "after"),
        ({"attrs": {"x": "y" * 9000}, "tags": ["a"]}, "attrs"),
        ({"tags": "a"}, "tags must be a list"),
        ({"colour": "red", "tags": ["a"]}, "unknown fields"),
        ({"title": "no photo, no tags"}, "needs an image"),
        ({"image": "../../etc/passwd"}, "inside the image root"),
        ({"image": "/etc/passwd"}, "inside the image root"),
        ({"image": "nope.jpg"}, "does not exist"),
    ],
)
def test_put_validation(settings: Settings, body: dict, fragment: str) -> None:
    client = create_app(settings.with_(image_root=DEMO / "images")).test_client()
    response = client.put("/v1/items/x", json=body)
    assert response.status_code == 422, response.get_json()
    assert fragment in response.get_json()["error"]["message"]


def test_put_bad_id_and_bad_json(settings: Settings) -> None:
    client = create_app(settings).test_client()
    assert client.put("/v1/items/bad%20id", json={"tags": ["a"]}).status_code == 400
    response = client.put("/v1/items/x", data="{not json", content_type="application/json")
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "bad_json"


# -- deletes, windows, filters, diversity -------------------------------------------------
@pytest.mark.cluster
def test_delete_is_visible_at_once_in_every_process(indexed: Settings, clock: Clock) -> None:
    first, second = (create_app(indexed, clock=clock).test_client() for _ in range(2))
    target = "landmark-eiffeltower_2"
    for client in (first, second, first, second):  # the second query of each process trusts Redis to push
        assert target in ids(client.get("/v1/items/landmark-eiffeltower/similar"))
    store = Store.from_url(indexed.redis_url_or_default, indexed.key_prefix)
    saved, features = store.items.get(target), store.items.features_many([target])[0]
    try:
        assert first.delete(f"/v1/items/{target}").status_code == 204
        for client in (first, second):
            answer = ids(client.get("/v1/items/landmark-eiffeltower/similar"))
            assert target not in answer and len(answer) == 10
        assert first.get(f"/v1/items/{target}").status_code == 404
        assert first.delete(f"/v1/items/{target}").status_code == 404
    finally:
        store.items.put(saved)
        store.items.mark_indexed(saved.id, saved.tags, saved.vector, saved.version, features)  # as it was: shared
        store.changes.publish(Change.UPSERT, saved.id, saved.num)


def _set_window(indexed: Settings, windows: dict[str, tuple[str, str]]) -> Store:
    store = Store.from_url(indexed.redis_url_or_default, indexed.key_prefix)
    for item_id, (start, end) in windows.items():
        store.r.hset(store.keys.item(item_id), mapping={"starts_at": start, "ends_at": end})
        store.changes.publish(Change.UPSERT, item_id, store.items.get(item_id).num)
    return store


def test_flash_sale_windows(indexed: Settings, clock: Clock) -> None:
    target = "landmark-eiffeltower_2"
    # a sale from 10:00+02:00 to 12:00+02:00 on NOW's day, i.e. 08:00Z to 10:00Z
    day = iso(NOW)[:10]
    _set_window(indexed, {target: (f"{day}T10:00:00+02:00", f"{day}T12:00:00+02:00")})
    try:
        client = create_app(indexed, clock=clock).test_client()
        url = "/v1/items/landmark-eiffeltower/similar?k=20"
        assert target in ids(client.get(f"{url}&active_at={day}T09:00:00Z"))  # during
        assert target not in ids(client.get(f"{url}&active_at={day}T07:59:59Z"))  # before start
        assert target not in ids(client.get(f"{url}&active_at={day}T10:00:00Z"))  # at the end
        assert target in ids(client.get(f"{url}&active_at={day}T11:30:00%2B02:00"))  # offset form
        assert target in ids(client.get(f"{url}&active_at=any"))
        clock.now = NOW - DAY  # default active_at is "now" from the app's clock
        assert target not in ids(client.get(url))
        assert client.get(f"{url}&active_at=yesterday").status_code == 400
    finally:
        _set_window(indexed, {target: ("", "")})


def test_filters_never_shorten_the_answer(indexed: Settings, clock: Clock) -> None:
    """99% of the catalog expired: the answer still has k items while k are eligible."""
    rows = sample_rows()
    live_ids = {r["id"] for r in rows[::10]}  # about 10% stay active
    expired = {r["id"]: ("2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z") for r in rows if r["id"] not in live_ids}
    _set_window(indexed, expired)
    try:
        client = create_app(indexed, clock=clock).test_client()
        query = sorted(live_ids)[0]
        answer = ids(client.get(f"/v1/items/{query}/similar?k=100"))
        assert set(answer) == live_ids - {query}
        assert len(ids(client.get(f"/v1/items/{query}/similar?k=3"))) == 3
    finally:
        _set_window(indexed, {i: ("", "") for i in expired})


def test_kind_category_and_exclude(client: FlaskClient) -> None:
    landmarks = client.get("/v1/items/landmark-eiffeltower/similar?k=20&category=tool").get_json()["items"]
    assert landmarks and all(r["category"] == "tool" for r in landmarks)
    assert ids(client.get("/v1/items/landmark-eiffeltower/similar?kind=no-such-kind")) == []
    base = ids(client.get("/v1/items/landmark-eiffeltower/similar?k=5"))
    excluded = ids(client.get(f"/v1/items/landmark-eiffeltower/similar?k=5&exclude={base[0]},{base[1]}"))
    assert base[0] not in excluded and base[1] not in excluded and len(excluded) == 5


def test_diversity_changes_the_answer(client: FlaskClient) -> None:
    plain = client.get("/v1/items/landmark-tajmahal/similar?k=10").get_json()["items"]
    diverse = client.get("/v1/items/landmark-tajmahal/similar?k=10&diversity=0.8").get_json()["items"]
    assert [r["id"] for r in plain] != [r["id"] for r in diverse]
    assert len({r["category"] for r in diverse}) >= len({r["category"] for r in plain})
    assert client.get("/v1/items/landmark-tajmahal/similar?diversity=2").status_code == 400


def test_reasons_name_real_topics_and_shared_tags(client: FlaskClient) -> None:
    topics = {t["id"]: t["name"] for t in client.get("/v1/topics").get_json()["topics"]}
    results = client.get("/v1/items/landmark-eiffeltower/similar?k=5").get_json()["items"]
    query_tags = {t["tag"] for t in client.get("/v1/items/landmark-eiffeltower").get_json()["tags"]}
    for result in results:
        reasons = result["reasons"]
        assert reasons["topics"] and all(topics[t["id"]] == t["name"] for t in reasons["topics"])
        assert set(reasons["tags"]) <= query_tags
    assert any(r["reasons"]["tags"] for r in results)


# -- users -------------------------------------------------------------------------------
def test_events_validation(client: FlaskClient) -> None:
    good = {"item_id": "landmark-tajmahal", "type": "view"}
    assert client.post("/v1/users/u-val/events", json=good).status_code == 202
    assert client.post("/v1/users/u-val/events", json={"item_id": "nope", "type": "view"}).status_code == 404
    mixed = client.post("/v1/users/u-val/events", json=[good, {"item_id": "nope", "type": "view"}])
    assert mixed.status_code == 422 and "nope" in mixed.get_json()["error"]["message"]
    for bad in ({"item_id": "landmark-tajmahal", "type": "like"}, {"type": "view"}, [],
                {"item_id": "landmark-tajmahal", "type": "view", "ts": "soon"},
                {"item_id": "landmark-tajmahal", "type": "view", "ts": NOW + 10 * DAY}):
        assert client.post("/v1/users/u-val/events", json=bad).status_code == 422, bad
    assert client.post("/v1/users/bad%20user/events", json=good).status_code == 400
    assert len(client.get("/v1/users/u-val/profile").get_json()["events"]) == 1  # refused batches stored nothing
    client.delete("/v1/users/u-val")


def test_recommendations_follow_affinity_with_reasons(client: FlaskClient) -> None:
    events = [{"item_id": "landmark-tajmahal", "type": "purchase", "ts": NOW - 3600},
              {"item_id": "landmark-tajmahal_2", "type": "add_to_cart", "ts": NOW - 7200},
              {"item_id": "landmark-taj_mahal_background", "type": "click"}]
    events = [e for e in events if client.get(f"/v1/items/{e['item_id']}").status_code == 200]
    assert client.post("/v1/users/u-aff/events", json=events).status_code == 202
    body = client.get("/v1/users/u-aff/recommendations?k=5").get_json()
    result_ids = [r["id"] for r in body["items"]]
    assert "landmark-tajmahal" not in result_ids  # purchased: skipped
    assert len(result_ids) == 5
    top = body["items"][0]["reasons"]
    assert not top["popular"] and top["topics"] and set(top["because_of"]) <= {e["item_id"] for e in events}
    profile = client.get("/v1/users/u-aff/profile").get_json()
    assert profile["topics"] and len(profile["events"]) == len(events)
    assert client.delete("/v1/users/u-aff").status_code == 204
    assert client.get("/v1/users/u-aff/profile").get_json()["events"] == []


def test_profile_decays_with_the_injected_clock(client: FlaskClient, clock: Clock) -> None:
    client.post("/v1/users/u-decay/events", json={"item_id": "landmark-tajmahal", "type": "view", "ts": NOW})
    fresh = client.get("/v1/users/u-decay/profile").get_json()["strength"]
    clock.now = NOW + 14 * DAY  # one half-life later
    later = client.get("/v1/users/u-decay/profile").get_json()["strength"]
    assert fresh == pytest.approx(1.0) and later == pytest.approx(0.5, rel=1e-3)
    client.delete("/v1/users/u-decay")


def test_cold_start_user_gets_popular_items(client: FlaskClient) -> None:
    tool = next(r["id"] for r in sample_rows() if r["category"] == "tool")
    for user in ("pop-a", "pop-b", "pop-c", "pop-d"):
        client.post(f"/v1/users/{user}/events", json=[{"item_id": tool, "type": "purchase"}] * 2)
    body = client.get("/v1/users/newcomer/recommendations?k=5").get_json()
    assert len(body["items"]) == 5 and body["items"][0]["id"] == tool
    assert body["items"][0]["reasons"]["popular"] is True
    for user in ("pop-a", "pop-b", "pop-c", "pop-d"):
        client.delete(f"/v1/users/{user}")


@pytest.mark.cluster
def test_history_is_capped(settings: Settings) -> None:
    store = Store.from_url(settings.redis_url_or_default, settings.key_prefix)
    store.users.add_events("u", [{"item": f"i{n}", "type": "view", "ts": n} for n in range(50)], [1.0] * 50, cap=20)
    kept = store.users.events("u")
    assert len(kept) == 20 and kept[0]["item"] == "i49"


@pytest.mark.cluster
def test_bulk_loaders_queue_events_on_their_pipeline(settings: Settings) -> None:
    """A loader of many users (bench/api.py) sends them in one pipeline; nothing is written before it runs."""
    store = Store.from_url(settings.redis_url_or_default, settings.key_prefix)
    pipe = store.r.pipeline(transaction=False)
    for user in ("bulk-a", "bulk-b"):
        store.users.add_events(user, [{"item": "i1", "type": "purchase", "ts": 1.0}], [3.0], cap=20, pipeline=pipe)
    assert store.users.events("bulk-a") == []
    pipe.execute()
    assert [e["item"] for e in store.users.events("bulk-b")] == ["i1"]
    assert store.r.zscore(store.keys.popularity, "i1") == 6.0


# -- auth --------------------------------------------------------------------------------
def test_keys_gate_writes_and_reads(indexed: Settings, clock: Clock) -> None:
    secured = indexed.with_(admin_keys=("admin-secret",), client_keys=("client-secret",))
    client = create_app(secured, clock=clock).test_client()
    url = "/v1/items/landmark-tajmahal/similar"
    assert client.get(url).status_code == 401
    assert client.get(url, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get(url, headers=CLIENT).status_code == 200
    assert client.get(url, headers=ADMIN).status_code == 200
    assert client.put("/v1/items/x", json={"tags": ["a"]}, headers=CLIENT).status_code == 403
    assert client.delete("/v1/items/x", headers=CLIENT).status_code == 403
    assert client.delete("/v1/items/no-such", headers=ADMIN).status_code == 404
    assert client.get("/healthz").status_code == 200  # probes stay open


# -- query by photo ----------------------------------------------------------------------
def test_search_by_photo_finds_the_same_place(client: FlaskClient) -> None:
    import io

    photo = (DEMO / "images" / "gcompris" / "landmark-tajmahal_2.jpg").read_bytes()
    response = client.post("/v1/search?k=5", data={"photo": (io.BytesIO(photo), "q.jpg")},
                           content_type="multipart/form-data")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["items"][0]["id"] == "landmark-tajmahal_2"  # the very same photo ranks first
    assert "landmark-tajmahal" in [r["id"] for r in body["items"]] and len(body["tags"]) == 5
    bad = client.post("/v1/search", data={"photo": (io.BytesIO(b"junk"), "q.jpg")},
                      content_type="multipart/form-data")
    assert bad.status_code == 422 and bad.get_json()["error"]["code"] == "invalid_photo"
    assert client.post("/v1/search").status_code == 400
