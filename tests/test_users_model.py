"""The trained user model in the product: real Redis, the real app, the real ``implicit``, `vistas
train-users` and `vistas eval --users`.

A tag-only shop of six interests (beach, ski, city, forest, food, boats), ten items each; 300 users touch
items of one or two interests, their events written to Redis with real timestamps before ``NOW``.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from flask.testing import FlaskClient

from indexer.embedded_redis import EmbeddedRedis
from indexer.ingest import ingest
from indexer.manifest import Entry
from indexer.users import read_events, served_items, train_users
from recommender.app import create_app
from recommender.events import EVENT_WEIGHTS
from recommender.settings import Settings
from recommender.state import app_state
from recommender.store import Store
from recommender.store.items import Item
from tests.helpers import VISTAS, env_for, free_port, start_api, stop, wait_for

NOW = 1_800_000_000.0
DAY = 86400.0
INTERESTS = {"beach": ["beach", "sea", "sand", "sun"], "ski": ["snow", "ski", "mountain", "winter"],
             "city": ["tower", "bridge", "street", "museum"], "forest": ["tree", "forest", "moss", "trail"],
             "food": ["fruit", "apple", "market", "cheese"], "boat": ["boat", "harbour", "sail", "river"]}
PER = 10
USERS = 300


def interest_of(item_id: str) -> str:
    return item_id.split("-")[0]


@pytest.fixture(scope="module")
def shop(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """The catalog, the users' events and a first user model (version 1); tests put back what they change."""
    settings = Settings(redis_url=redis_server.url, data_dir=tmp_path_factory.mktemp("shop"),
                        key_prefix=f"test-{uuid.uuid4().hex[:8]}", n_topics=6)
    store = Store.from_url(settings.redis_url_or_default, settings.key_prefix)
    rng = random.Random(0)
    entries = [Entry(Item(id=f"{name}-{i}", title=f"{name.title()} {i}", given_tags=rng.sample(tags, 3)), None)
               for name, tags in INTERESTS.items() for i in range(PER)]
    ingest(entries, settings, store, progress=False)
    names = list(INTERESTS)
    for u in range(USERS):
        picks = rng.sample(names, 1 + u % 2)
        items = rng.sample([f"{n}-{i}" for n in picks for i in range(PER)], rng.randint(6, 10))
        start = NOW - rng.uniform(2, 30) * DAY
        events = [{"item": item, "type": rng.choice(list(EVENT_WEIGHTS)[:4]), "ts": start + n * 600.0}
                  for n, item in enumerate(items)]
        store.users.add_events(f"user-{u}", events, [EVENT_WEIGHTS[e["type"]] for e in events], 200)
    train_users(settings, store, clock=lambda: NOW)
    yield settings
    store.clear()
    shutil.rmtree(settings.data_dir, ignore_errors=True)


@pytest.fixture
def store(shop: Settings) -> Store:
    return Store.from_url(shop.redis_url_or_default, shop.key_prefix)


@pytest.fixture
def client(shop: Settings) -> FlaskClient:
    return create_app(shop, clock=lambda: NOW).test_client()


def post(client: FlaskClient, user: str, items: list[str], kind: str = "click", start: float = NOW - 3600) -> None:
    events = [{"item_id": i, "type": kind, "ts": start + n * 60.0} for n, i in enumerate(items)]
    assert client.post(f"/v1/users/{user}/events", json=events).status_code == 202


def recommend(client: FlaskClient, user: str, k: int = 10, **params: str) -> dict:
    query = "&".join(f"{key}={value}" for key, value in {"k": str(k), **params}.items())
    response = client.get(f"/v1/users/{user}/recommendations?{query}")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def test_two_interest_users_get_both_with_reasons(client: FlaskClient) -> None:
    post(client, "two-interests", [x for i in range(3) for x in (f"beach-{i}", f"ski-{i}")])
    body = recommend(client, "two-interests")
    assert body["model"] == 1
    assert "vistas_user_model_version 1.0" in client.get("/metrics").get_data(as_text=True)
    got = [interest_of(r["id"]) for r in body["items"]]
    assert "beach" in got and "ski" in got, got
    assert sum(g in ("beach", "ski") for g in got) >= 6, got
    for r in body["items"]:
        reasons = r["reasons"]
        assert reasons["source"] in ("content", "collaborative", "sequence", "trending", "popular") and reasons["text"]
        if reasons["source"] in ("content", "collaborative", "sequence"):
            assert reasons["because_of"] and reasons["because_of"][0] in {f"{n}-{i}" for n in ("beach", "ski")
                                                                          for i in range(3)}
    client.delete("/v1/users/two-interests")


def test_events_after_training_count_at_once(client: FlaskClient) -> None:
    """The user's own through their history; everyone's through the activity stream (trending, popularity)."""
    post(client, "late", ["boat-3"])
    assert any(r["reasons"]["because_of"] == ["boat-3"] for r in recommend(client, "late")["items"])
    newcomer = [r["id"] for r in recommend(client, "newcomer")["items"]]
    hot = next(f"food-{i}" for i in range(PER) if f"food-{i}" not in newcomer[:3])
    for u in range(40):
        post(client, f"buyer-{u}", [hot], kind="purchase", start=NOW - 60)
    try:
        wait_for(lambda: recommend(client, "newcomer")["items"][0]["id"] == hot, 10, "the bought item to trend")
        top = recommend(client, "newcomer")["items"][0]["reasons"]
        assert top["source"] in ("trending", "popular") and top["popular"]
    finally:
        for u in range(40):
            client.delete(f"/v1/users/buyer-{u}")
        client.delete("/v1/users/late")


def test_dismiss_holds_and_pushes_alike_items_down(client: FlaskClient) -> None:
    post(client, "dismisser", ["city-0", "city-1", "city-2"])
    before = recommend(client, "dismisser", k=30, active_at="any")["items"]
    gone = next(r["id"] for r in before if interest_of(r["id"]) == "city")
    score_before = {r["id"]: r["score"] for r in before}
    client.post("/v1/users/dismisser/events", json=[{"item_id": gone, "type": "dismiss", "ts": NOW - 10}])
    after = recommend(client, "dismisser", k=30, active_at="any")["items"]
    assert gone not in [r["id"] for r in after] and len(after) == 30
    score_after = {r["id"]: r["score"] for r in after}
    alike = [i for i in score_after if interest_of(i) == "city" and i in score_before]
    unlike = [i for i in score_after if interest_of(i) != "city" and i in score_before]
    drop_alike = np.mean([score_before[i] - score_after[i] for i in alike])
    drop_unlike = np.mean([score_before[i] - score_after[i] for i in unlike]) if unlike else 0.0
    assert drop_alike > drop_unlike + 0.1, (drop_alike, drop_unlike)  # items like it lose, others hardly
    client.delete("/v1/users/dismisser")


def test_a_new_item_reaches_similar_users_before_any_event_and_also_falls_back_to_content(
    shop: Settings, store: Store, client: FlaskClient
) -> None:
    post(client, "forester", ["forest-0", "forest-1", "forest-2", "forest-3"])
    ingest([Entry(Item(id="forest-new", title="New forest walk", given_tags=["forest", "tree", "moss"]), None)],
           shop, store, progress=False)
    try:
        got = [r["id"] for r in recommend(client, "forester")["items"]]
        assert "forest-new" in got, got
        also = client.get("/v1/items/forest-new/also?k=5").get_json()["items"]
        assert len(also) == 5 and all(r["reasons"]["source"] == "content" for r in also)
        assert all("no one has viewed it with others yet" in r["reasons"]["text"] for r in also)
        assert sum(interest_of(r["id"]) == "forest" for r in also) >= 4
        old = client.get("/v1/items/forest-0/also?k=5").get_json()["items"]
        assert old[0]["reasons"]["source"] == "collaborative" and old[0]["reasons"]["because_of"] == ["forest-0"]
        assert old[0]["reasons"]["text"] == "often viewed with Forest 0"
    finally:
        store.delete_item("forest-new")
        client.delete("/v1/users/forester")


def test_the_weights_eval_records_are_the_ones_the_api_uses(shop: Settings, store: Store) -> None:
    done = subprocess.run([*VISTAS, "eval", "--users", "--quick"], capture_output=True, text=True, env=env_for(shop))
    assert done.returncode == 0, done.stderr
    assert "recorded in Redis" in done.stdout and "too few" not in done.stdout, done.stdout
    tuning = store.users.tuning()
    assert tuning["chosen"] and set(tuning["weights"]) == {"thin", "away", "full"} and tuning["validation"]
    report = train_users(shop, store, clock=lambda: NOW)
    status = subprocess.run([*VISTAS, "status"], capture_output=True, text=True, env=env_for(shop)).stdout
    assert f"users      model {report.version}: " in status and "chosen weights" in status, status
    app = create_app(shop, clock=lambda: NOW)
    client = app.test_client()
    post(client, "weighed", ["boat-0", "boat-1"])
    assert recommend(client, "weighed")["model"] == report.version
    state = app_state(app)
    assert state.users.served(state.live).model.weights == tuning["weights"]
    # A blend of popularity alone, recorded and trained: the API answers with the bestseller list.
    only_popular = {b: {s: float(s == "popular") for s in w} for b, w in tuning["weights"].items()}
    store.users.set_tuning({**tuning, "weights": only_popular})
    try:
        train_users(shop, store, clock=lambda: NOW)
        time.sleep(1.1)  # the next check of the pointer
        recommend(client, "weighed")  # loads it in the background...
        wait_for(lambda: recommend(client, "weighed")["model"] == report.version + 1, 10, "the new model")
        got = [r["id"] for r in recommend(client, "weighed", active_at="any")["items"]]
        popularity = read_events(store, served_items(store, shop)).events
        counts = np.bincount(popularity.item, weights=popularity.weight)
        index = app_state(app).live.index
        ranked = [index.ids[n] for n in np.argsort(-counts, kind="stable") if n in index.ids
                  and index.ids[n] not in ("boat-0", "boat-1")]
        assert [counts[index.nums[i]] for i in got] == [counts[index.nums[i]] for i in ranked[:10]]  # ties aside
        assert all(r["reasons"]["source"] == "popular" for r in recommend(client, "weighed")["items"])
    finally:
        store.users.set_tuning(tuning)
        train_users(shop, store, clock=lambda: NOW)
        client.delete("/v1/users/weighed")


def test_privacy_delete_removes_the_user_from_the_model_inputs(shop: Settings, store: Store,
                                                               client: FlaskClient) -> None:
    secrets = [Entry(Item(id=f"secret-{x}", title=f"Secret {x}", given_tags=["vault", "key", x]), None) for x in "ab"]
    ingest(secrets, shop, store, progress=False)
    post(client, "private", ["secret-a", "secret-b"] * 2, start=NOW - 7200)  # the only user to touch them
    try:
        train_users(shop, store, clock=lambda: NOW)
        live = served_items(store, shop)
        a, b = live.index.nums["secret-a"], live.index.nums["secret-b"]
        assert _served_model(shop, store).collaborative.similarity[a, b] > 0
        before = read_events(store, live)
        assert client.delete("/v1/users/private").status_code == 204
        assert store.users.events("private") == []  # gone from the store at once
        after = read_events(store, live)
        assert len(after.events) == len(before.events) - 4 and after.n_users == before.n_users - 1
        assert not np.isin([a, b], after.events.item).any()
        train_users(shop, store, clock=lambda: NOW)
        assert _served_model(shop, store).collaborative.similarity[a, b] == 0  # and from the model's
    finally:
        for x in "ab":
            store.delete_item(f"secret-{x}")


def _served_model(shop: Settings, store: Store):
    from recommender.users.hybrid import HybridModel
    from recommender.users.live import FOLDER, MODEL_FILE
    from recommender.versions import VersionStore

    return HybridModel.load(VersionStore(shop.data_dir, FOLDER).path(store.users.model_version()) / MODEL_FILE)


def test_training_swaps_in_under_load_with_no_failed_request(shop: Settings, store: Store) -> None:
    port = free_port()
    api = start_api(shop, port)
    answers: list[tuple[int, int | None]] = []
    stopping = threading.Event()
    start = store.users.model_version()

    def load() -> None:
        session = requests.Session()
        while not stopping.is_set():
            for path in ("/v1/users/user-1/recommendations?k=5", "/v1/items/beach-1/also?k=5"):
                r = session.get(f"http://127.0.0.1:{port}{path}", timeout=10)
                answers.append((r.status_code, r.json().get("model") if r.status_code == 200 else None))

    thread = threading.Thread(target=load, daemon=True)
    try:
        thread.start()
        time.sleep(1.0)
        for _ in range(2):
            done = subprocess.run([*VISTAS, "train-users"], capture_output=True, text=True, env=env_for(shop))
            assert done.returncode == 0, done.stderr
            time.sleep(2.5)
    finally:
        stopping.set()
        thread.join(20)
        stop(api)
    assert answers and all(status == 200 for status, _ in answers), {s for s, _ in answers}
    models = [m for _, m in answers if m is not None]
    assert models[0] == start and models[-1] == start + 2
    kept = sorted(int(p.name) for p in (Path(shop.data_dir) / "user-models").iterdir() if p.name.isdigit())
    assert len(kept) <= shop.keep_versions and kept[-1] == start + 2


def test_too_few_events_record_the_defaults(settings: Settings) -> None:
    from recommender.users.config import DEFAULT_WEIGHTS

    store = Store.from_url(settings.redis_url_or_default, settings.key_prefix)
    entries = [Entry(Item(id=f"{name}-{i}", given_tags=tags[:3]), None) for name, tags in INTERESTS.items()
               for i in range(3)]
    ingest(entries, settings.with_(n_topics=4), store, progress=False)
    events = [{"item": f"beach-{i}", "type": "click", "ts": NOW - 60 * i} for i in range(3)]
    store.users.add_events("only-one", events, [2.0] * 3, 200)
    done = subprocess.run([*VISTAS, "eval", "--users"], capture_output=True, text=True, env=env_for(settings))
    assert done.returncode == 0 and "too few to choose from (3 events < 2000)" in done.stdout, done.stdout + done.stderr
    assert store.users.tuning()["weights"] == DEFAULT_WEIGHTS and not store.users.tuning()["chosen"]
    report = train_users(settings, store, clock=lambda: NOW)
    assert report.users == 1 and report.events == 3 and not report.weights_chosen


def test_a_reindex_rebinds_the_served_model_to_the_new_topics(shop: Settings, store: Store,
                                                              client: FlaskClient) -> None:
    """A reindex refits the topics (here 8 instead of 6): the served model takes the new vectors at once."""
    from indexer.reindex import Reindex

    post(client, "rebound", ["ski-0", "ski-1", "ski-2"])
    assert recommend(client, "rebound")["version"] == 1
    Reindex(shop.with_(n_topics=8), store, progress=False).run(reuse_features=True, distributed=False)
    body = wait_for(lambda: (b := recommend(client, "rebound"))["version"] == 2 and b, 20, "index version 2")
    assert body["model"] == store.users.model_version()
    state = app_state(client.application)
    assert state.users.served(state.live).model.item_vectors.shape[1] == state.live.index.dim == 8
    got = [interest_of(r["id"]) for r in body["items"]]
    assert got.count("ski") >= 5, got
    names = {t["name"] for t in client.get("/v1/topics").get_json()["topics"]}
    assert all(t["name"] in names for r in body["items"] for t in r["reasons"]["topics"])
    client.delete("/v1/users/rebound")
