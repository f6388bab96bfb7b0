"""The API over a real Redis and a real FAISS index built from real photos."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from recommender.app import create_app
from recommender.settings import Settings
from tests.conftest import sample_rows
from tests.helpers import assert_error


@pytest.fixture(scope="module")
def client(indexed: Settings) -> FlaskClient:
    return create_app(indexed).test_client()


def test_similar_finds_other_photos_of_the_same_place(client: FlaskClient) -> None:
    rows = sample_rows()
    by_landmark: dict[str, list[str]] = {}
    for row in rows:
        if row["landmark"]:
            by_landmark.setdefault(row["landmark"], []).append(row["id"])
    found = total = 0
    for ids in by_landmark.values():
        for item_id in ids:
            body = client.get(f"/v1/items/{item_id}/similar?k=10").get_json()
            result_ids = [r["id"] for r in body["items"]]
            assert item_id not in result_ids and len(result_ids) == 10
            others = [i for i in ids if i != item_id]
            found += sum(o in result_ids for o in others)
            total += len(others)
    assert total > 20 and found / total >= 0.8


def test_similar_response_shape(client: FlaskClient) -> None:
    response = client.get("/v1/items/landmark-eiffeltower/similar?k=5")
    assert response.status_code == 200
    body = response.get_json()
    assert body["version"] == 1 and len(body["items"]) == 5
    scores = [r["score"] for r in body["items"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1.0001 for s in scores)
    assert {"id", "score", "title", "kind", "category", "price"} <= set(body["items"][0])
    assert "landmark-eiffeltower_2" in [r["id"] for r in body["items"]]


def test_default_k_is_10(client: FlaskClient) -> None:
    assert len(client.get("/v1/items/landmark-eiffeltower/similar").get_json()["items"]) == 10


def test_item_has_tags_and_named_topics(client: FlaskClient) -> None:
    body = client.get("/v1/items/landmark-eiffeltower").get_json()
    assert body["status"] == "indexed" and body["title"] == "Eiffel Tower"
    assert len(body["tags"]) == 5 and body["tags"][0]["tag"] == "bell tower"
    topic_names = {t["id"]: t["name"] for t in client.get("/v1/topics").get_json()["topics"]}
    assert body["topics"] and all(topic_names[t["id"]] == t["name"] for t in body["topics"])
    assert body["attrs"]["landmark"] == "eiffel_tower"


def test_topics_have_names_and_top_tags(client: FlaskClient) -> None:
    body = client.get("/v1/topics").get_json()
    topics = body["topics"]
    assert len(topics) <= 30 and body["version"] == 1  # fewer when near-duplicates were refitted away
    assert len({t["name"] for t in topics}) == len(topics) == len({t["id"] for t in topics})
    for topic in topics:
        assert topic["top_tags"] and topic["name"] == topic["name"].lower() and topic["name"]
        assert topic["group"] in {t["id"] for t in topics}


@pytest.mark.parametrize("k", ["0", "101", "abc", "-3", "1.5"])
def test_bad_k_is_400(client: FlaskClient, k: str) -> None:
    assert_error(client.get(f"/v1/items/landmark-eiffeltower/similar?k={k}"), 400, "bad_parameter")


def test_unknown_item_is_404(client: FlaskClient) -> None:
    assert_error(client.get("/v1/items/no-such-item"), 404, "item_not_found")
    assert_error(client.get("/v1/items/no-such-item/similar"), 404, "item_not_found")


def test_bad_item_id_is_400(client: FlaskClient) -> None:
    assert_error(client.get("/v1/items/bad%20id"), 400, "bad_item_id")
    assert_error(client.get("/v1/items/" + "x" * 129), 400, "bad_item_id")


def test_unknown_route_and_method_are_json(client: FlaskClient) -> None:
    assert_error(client.get("/v1/nothing"), 404, "not_found")
    assert_error(client.post("/v1/topics"), 405, "method_not_allowed")


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["items"] == len(sample_rows())


def test_not_ready_without_an_index(settings: Settings) -> None:
    client = create_app(settings).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503 and response.get_json()["checks"] == {"redis": True, "index": False}
    assert_error(client.get("/v1/topics"), 503, "index_not_ready")


def test_redis_down_is_503_not_500(tmp_path) -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", data_dir=tmp_path)
    client = create_app(settings).test_client()
    assert client.get("/readyz").status_code == 503
    assert_error(client.get("/v1/items/x"), 503, "store_unavailable")
