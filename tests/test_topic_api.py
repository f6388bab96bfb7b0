"""Renaming topics (PUT /v1/topics/<id>) and topic ids that outlive a reindex, over a real Redis."""

from __future__ import annotations

import random

import pytest
from flask.testing import FlaskClient

from indexer.ingest import ingest
from indexer.manifest import Entry
from indexer.reindex import Reindex
from recommender.app import create_app
from recommender.model.tagger import Tagger
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.items import Item
from recommender.named_topics import TTL_S
from tests.helpers import assert_error, wait_for
from tests.test_topic_names import THEMES

ADMIN, CLIENT = {"X-API-Key": "admin-key"}, {"Authorization": "Bearer client-key"}


def themed_items(prefix: str, per_theme: int, seed: int) -> list[Entry]:
    rng = random.Random(seed)
    return [Entry(Item(id=f"{prefix}-{theme}-{i}", title=f"{theme} {i}", given_tags=rng.sample(tags, 3)), None)
            for theme, tags in THEMES.items() for i in range(per_theme)]


def theme(topic: dict) -> str:
    """The theme most of a topic's top tags belong to."""
    votes = [name for t in topic["top_tags"][:3] for name, tags in THEMES.items() if t["tag"] in tags]
    return max(set(votes), key=votes.count)


@pytest.fixture
def secured(settings: Settings, store: Store, tagger: Tagger) -> Settings:
    s = settings.with_(n_topics=4, admin_keys=("admin-key",), client_keys=("client-key",))
    ingest(themed_items("a", 10, seed=1), s, store, tagger, progress=False)
    return s


@pytest.fixture
def client(secured: Settings) -> FlaskClient:
    return create_app(secured).test_client()


def topics(client: FlaskClient) -> list[dict]:
    return client.get("/v1/topics", headers=CLIENT).get_json()["topics"]


def test_rename_needs_an_admin_key(client: FlaskClient) -> None:
    topic = topics(client)[0]
    assert_error(client.put(f"/v1/topics/{topic['id']}", json={"name": "x"}), 401, "unauthorized")
    assert_error(client.put(f"/v1/topics/{topic['id']}", json={"name": "x"}, headers=CLIENT), 403, "forbidden")
    assert topics(client)[0]["name"] == topic["name"]


@pytest.mark.parametrize("body", [{"name": ""}, {"name": "   "}, {"name": 3}, {"name": "a" * 81},
                                  {"name": "ok", "extra": 1}, {}])
def test_rename_validates_the_name(client: FlaskClient, body: dict) -> None:
    topic_id = topics(client)[0]["id"]
    assert_error(client.put(f"/v1/topics/{topic_id}", json=body, headers=ADMIN), 422, "invalid_topic_name")


def test_rename_refuses_unknown_topics_bad_ids_non_json_and_taken_names(client: FlaskClient) -> None:
    first, second = topics(client)[:2]
    assert_error(client.put("/v1/topics/999", json={"name": "x"}, headers=ADMIN), 404, "topic_not_found")
    assert_error(client.put("/v1/topics/abc", json={"name": "x"}, headers=ADMIN), 400, "bad_parameter")
    assert_error(client.put(f"/v1/topics/{first['id']}", data="name", headers=ADMIN), 400, "bad_json")
    taken = client.put(f"/v1/topics/{first['id']}", json={"name": second["name"].upper()}, headers=ADMIN)
    assert_error(taken, 409, "topic_name_taken")


def test_a_rename_is_shown_everywhere_and_persists(client: FlaskClient, secured: Settings) -> None:
    topic = topics(client)[0]
    answer = client.put(f"/v1/topics/{topic['id']}", json={"name": "  Summer   Deals "}, headers=ADMIN)
    assert answer.status_code == 200 and answer.get_json()["name"] == "Summer Deals"
    shown = next(t for t in topics(client) if t["id"] == topic["id"])
    assert shown["name"] == "Summer Deals" and shown["model_name"] == topic["name"]
    other = create_app(secured).test_client()  # another process: the name is in Redis, not in memory
    assert next(t for t in topics(other) if t["id"] == topic["id"])["name"] == "Summer Deals"
    item = next(i for i in (f"a-{th}-{n}" for th in THEMES for n in range(10))
                if other.get(f"/v1/items/{i}", headers=CLIENT).get_json()["topics"][0]["id"] == topic["id"])
    assert other.get(f"/v1/items/{item}", headers=CLIENT).get_json()["topics"][0]["name"] == "Summer Deals"
    assert client.put(f"/v1/topics/{topic['id']}", json={"name": "summer"}, headers=ADMIN).status_code == 200
    wait_for(lambda: next(t for t in topics(other) if t["id"] == topic["id"])["name"] == "summer",
             timeout=2 + TTL_S, what="the other process to see the second rename")


def test_a_reindex_keeps_ids_and_a_renamed_topic_keeps_its_name(
    client: FlaskClient, secured: Settings, store: Store, tagger: Tagger
) -> None:
    before = {theme(t): t for t in topics(client)}
    assert set(before) == set(THEMES)
    snow = before["snow"]["id"]
    assert client.put(f"/v1/topics/{snow}", json={"name": "winter sports"}, headers=ADMIN).status_code == 200
    ingest(themed_items("b", 4, seed=2), secured, store, tagger, progress=False)
    report = Reindex(secured, store, progress=False).run(reuse_features=True)
    assert report.version == 2 and len(report.topics.kept) == 4 and not report.topics.new
    after = create_app(secured).test_client().get("/v1/topics", headers=CLIENT).get_json()  # loads v2 at once
    assert after["version"] == 2
    by_theme = {theme(t): t for t in after["topics"]}
    assert {th: t["id"] for th, t in by_theme.items()} == {th: t["id"] for th, t in before.items()}
    assert by_theme["snow"]["name"] == "winter sports"
    assert all(by_theme[th]["name"] == before[th]["name"] for th in THEMES if th != "snow")
    assert report.topics.renamed_kept == [snow]
