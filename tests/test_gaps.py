"""No silent gaps: an API process whose changes were trimmed from the capped stream reloads its version
from Redis's items (and says so), `vistas status` warns before that, and the catalog's ids are read in
pages, never in one command."""

from __future__ import annotations

import time

import numpy as np
from prometheus_client import REGISTRY

from indexer.status import report
from recommender.live_index import LiveIndex
from recommender.ranking import Filters
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.changes import Change
from recommender.store.items import Item
from recommender.versions import VersionStore
from tests.test_index import calls, serve_version, topic_vectors


def gaps() -> float:
    return REGISTRY.get_sample_value("vistas_changes_gaps_total") or 0.0


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector)


def write_while_away(store: Store, ids: list[str]) -> dict[str, np.ndarray]:
    """Another process's writes: a rename with a new vector, a delete, a new item; returns the new vectors."""
    fresh = topic_vectors(2, seed=21)
    item = store.items.get(ids[3])
    item.title = "renamed"
    store.items.put(item)
    store.items.mark_indexed(ids[3], [("seashore", 0.9)], fresh[0], 1, None)
    store.changes.publish(Change.UPSERT, ids[3], item.num)
    store.delete_item(ids[4])
    num = store.items.put(Item(id="late", title="late", kind="product"))
    store.items.mark_indexed("late", [("seashore", 0.9)], fresh[1], 1, None)
    store.changes.publish(Change.UPSERT, "late", num)
    return {ids[3]: fresh[0], "late": fresh[1]}


def assert_serves(live: LiveIndex, ids: list[str], vectors: dict[str, np.ndarray]) -> None:
    """What the writes meant: the rename and its vector, the delete, the new item, all answered."""
    nums = live.index.nums
    assert ids[4] not in nums and "late" in nums
    assert live.summaries([ids[3]])[0].fields["title"] == "renamed"
    for item_id, vector in vectors.items():
        assert np.allclose(live.index.vector(nums[item_id]), unit(vector), atol=1e-6)
        top = live.search(vector, 1, Filters(active_at=None))
        assert live.index.ids[top[0][0]] == item_id


def sync_until(live: LiveIndex, condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        live.sync()
        if condition():
            return
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_lagging_replica_whose_changes_were_trimmed_reloads_and_answers_them(store: Store, settings: Settings
                                                                               ) -> None:
    ids = serve_version(store, settings, 40)
    live = LiveIndex(store, VersionStore(settings.data_dir))
    live.sync()
    live.sync()
    before = gaps()
    vectors = write_while_away(store, ids)  # while this replica answers no query
    for item_id in ids[10:30]:  # and enough later changes that trimming takes the first ones
        store.changes.publish(Change.UPSERT, item_id, live.index.nums[item_id])
    store.r.xtrim(store.keys.changes, maxlen=10, approximate=False)

    live.sync()  # finds the gap: reloads in the background, serving the old copy meanwhile
    sync_until(live, lambda: "late" in live.index.nums)
    assert_serves(live, ids, vectors)
    assert gaps() == before + 1

    store.delete_item(ids[5])  # and it follows the stream again from there
    sync_until(live, lambda: ids[5] not in live.index.nums, timeout=5)
    assert gaps() == before + 1


def test_a_version_loaded_after_its_changes_were_trimmed_is_read_from_redis(store: Store, settings: Settings) -> None:
    ids = serve_version(store, settings, 40)
    vectors = write_while_away(store, ids)
    for item_id in ids[10:30]:
        store.changes.publish(Change.UPSERT, item_id, store.items.get(item_id).num)
    store.r.xtrim(store.keys.changes, maxlen=10, approximate=False)
    before = gaps()
    live = LiveIndex(store, VersionStore(settings.data_dir))
    live.sync()  # the first load is done at once
    assert_serves(live, ids, vectors)
    assert gaps() == before + 1


def test_queries_still_cost_no_round_trip(store: Store, settings: Settings) -> None:
    serve_version(store, settings, 20)
    live = LiveIndex(store, VersionStore(settings.data_dir))
    live.sync()
    live.sync()
    before = {c: calls(store, c) for c in ("xrange", "xinfo|stream", "get")}
    for _ in range(5):
        live.sync()
    assert {c: calls(store, c) for c in before} == before


def test_writers_cap_the_stream_as_settings_say(settings: Settings) -> None:
    assert Settings.from_env({"VISTAS_CHANGES_MAXLEN": "200"}).changes_maxlen == 200
    store = Store.from_settings(settings.with_(changes_maxlen=200))
    store.changes.publish_upserts((f"item-{i}", i) for i in range(2000))
    assert 200 <= store.r.xlen(store.keys.changes) < 400  # approximate trimming: whole nodes of 100 entries


def test_status_warns_of_replicas_near_the_cap(store: Store, settings: Settings) -> None:
    settings = settings.with_(changes_maxlen=1000)
    store.changes.publish_upserts((f"item-{i}", i) for i in range(10))
    behind = store.changes.last_id()
    store.replicas.report("api-near:1", 1, behind)
    store.replicas.report("api-current:2", 1, behind)
    for start in range(10, 900, 100):
        time.sleep(0.002)  # spread the entries' timestamps
        store.changes.publish_upserts((f"item-{i}", i) for i in range(start, start + 100))
    store.replicas.report("api-current:2", 1, store.changes.last_id())
    text = report(settings, store)
    assert "2 API processes reporting" in text
    warnings = [line for line in text.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "api-near:1" in warnings[0] and "near the cap" in warnings[0]

    store.r.xtrim(store.keys.changes, maxlen=100, approximate=False)
    warnings = [line for line in report(settings, store).splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and "api-near:1" in warnings[0] and "trimmed" in warnings[0]


def test_the_catalogs_ids_are_read_in_pages(store: Store) -> None:
    ids = [f"item-{i:05d}" for i in range(2500)]
    store.items.put_many([Item(id=i) for i in ids])
    smembers, sscan = calls(store, "smembers"), calls(store, "sscan")
    assert store.items.ids() == ids
    assert calls(store, "smembers") == smembers and calls(store, "sscan") >= sscan + 3
