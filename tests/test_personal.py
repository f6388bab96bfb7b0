"""The user verbs before any training (the shared sample catalog, no user model): ``also`` from content,
reasons with a source and a sentence, ``dismiss``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from recommender.app import create_app
from recommender.reasons import SOURCES
from recommender.settings import Settings

NOW = 1_800_000_000.0


@pytest.fixture
def client(indexed: Settings) -> Iterator[FlaskClient]:
    yield create_app(indexed, clock=lambda: NOW).test_client()


def test_also_falls_back_to_content_before_any_training(client: FlaskClient) -> None:
    body = client.get("/v1/items/landmark-eiffeltower/also?k=5").get_json()
    similar = client.get("/v1/items/landmark-eiffeltower/similar?k=5").get_json()
    assert [r["id"] for r in body["items"]] == [r["id"] for r in similar["items"]]
    assert body["version"] == similar["version"]
    for result in body["items"]:
        reasons = result["reasons"]
        assert reasons["source"] == "content" and reasons["because_of"] == ["landmark-eiffeltower"]
        assert reasons["text"].startswith("looks like ") and "no co-occurrence model yet" in reasons["text"]
        assert set(result) >= {"id", "score", "title", "kind", "category"}
    assert client.get("/v1/items/landmark-eiffeltower/also?k=3&exclude=" + body["items"][0]["id"]).get_json()[
        "items"][0]["id"] != body["items"][0]["id"]
    assert client.get("/v1/items/nope/also").status_code == 404
    assert client.get("/v1/items/landmark-eiffeltower/also?k=0").status_code == 400


def test_reasons_say_which_signal_and_why(client: FlaskClient) -> None:
    user = "u-reasons"
    client.post(f"/v1/users/{user}/events", json=[{"item_id": "landmark-eiffeltower", "type": "purchase", "ts": NOW}])
    results = client.get(f"/v1/users/{user}/recommendations?k=5").get_json()["items"]
    assert all(r["reasons"]["source"] in SOURCES and r["reasons"]["text"] for r in results)
    content = [r["reasons"] for r in results if r["reasons"]["source"] == "content"]
    assert content and content[0]["text"].startswith("because you bought ")
    assert content[0]["because_of"] == ["landmark-eiffeltower"] and "shared topics: " in content[0]["text"]
    newcomer = client.get("/v1/users/nobody-yet/recommendations?k=3").get_json()["items"]
    assert all(r["reasons"]["source"] == "popular" and "popular" in r["reasons"]["text"] for r in newcomer)
    client.delete(f"/v1/users/{user}")


def test_dismiss_holds_and_pushes_alike_items_down(client: FlaskClient) -> None:
    user = "u-dismiss"
    client.post(f"/v1/users/{user}/events", json={"item_id": "landmark-eiffeltower", "type": "click", "ts": NOW})
    before = [r["id"] for r in client.get(f"/v1/users/{user}/recommendations?k=10").get_json()["items"]]
    gone = before[0]
    batch = [{"item_id": gone, "type": "dismiss", "ts": NOW}, {"item_id": "landmark-eiffeltower", "type": "view"}]
    assert client.post(f"/v1/users/{user}/events", json=batch).status_code == 202
    for k in (10, 50):
        after = [r["id"] for r in client.get(f"/v1/users/{user}/recommendations?k={k}").get_json()["items"]]
        assert gone not in after and len(after) == k
    assert client.get(f"/v1/users/{user}/profile").get_json()["events"][1]["type"] == "dismiss"
    client.delete(f"/v1/users/{user}")
