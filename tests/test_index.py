"""The topic index itself: exact scans, the HNSW graph of large versions, filter masks."""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import numpy as np
import pytest

from recommender.columns import ItemIds, SummaryTable
from recommender.index import EXACT_MAX_ELIGIBLE, GRAPH_MIN_ITEMS, NEIGHBOURS_KEPT, TopicIndex
from recommender.live_index import LiveIndex
from recommender.ranking import Eligibility, Filters
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.changes import Change
from recommender.store.items import Item, Summary, parse_timestamp
from recommender.versions import TOPICS, VersionStore

DIM = 30
N = GRAPH_MIN_ITEMS + 5000


def topic_vectors(n: int, seed: int = 0) -> np.ndarray:
    """Sparse non-negative unit vectors, shaped like NMF topic weights."""
    vectors = np.random.default_rng(seed).gamma(0.3, size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def exact_top(index: TopicIndex, query: np.ndarray, k: int) -> list[int]:
    nums = np.flatnonzero(index.present)
    scores = index.vectors[nums] @ (query / np.linalg.norm(query))
    return nums[np.argsort(-scores)[:k]].tolist()


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A version-sized index saved to disk (nums 1..N, as Redis hands them out)."""
    index = TopicIndex.built(np.arange(1, N + 1), [f"item-{i}" for i in range(1, N + 1)], topic_vectors(N))
    directory = tmp_path_factory.mktemp("large")
    index.save(directory)
    return directory


def test_large_versions_carry_a_graph_small_ones_do_not(large: Path, tmp_path: Path) -> None:
    loaded = TopicIndex.load(large)
    assert loaded.graph is not None and len(loaded) == N
    np.testing.assert_allclose(loaded.vectors[1 : N + 1], topic_vectors(N), rtol=1e-5, atol=1e-6)
    assert loaded.ids[7] == "item-7" and loaded.nums["item-7"] == 7

    small = TopicIndex(DIM)
    small.upsert(np.arange(1, 101), [f"s{i}" for i in range(1, 101)], topic_vectors(100))
    small.save(tmp_path)
    again = TopicIndex.load(tmp_path)
    assert again.graph is None and len(again) == 100
    query = topic_vectors(1, seed=5)[0]
    hits, unit = again.search(query, 10), query / np.linalg.norm(query)
    exact = again.vectors[exact_top(again, query, 10)] @ unit
    np.testing.assert_allclose([s for _, s in hits], exact, atol=1e-5)  # the exact top 10; near-ties in any order
    np.testing.assert_allclose(again.vectors[[n for n, _ in hits]] @ unit, exact, atol=1e-5)


def test_graph_answers_agree_with_an_exact_scan(large: Path) -> None:
    index = TopicIndex.load(large)
    queries = topic_vectors(200, seed=1)
    found = [len({n for n, _ in index.search(q, 10)} & set(exact_top(index, q, 10))) / 10 for q in queries]
    assert np.mean(found) >= 0.97
    hits = index.search(queries[0], 10)
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True)
    expected = index.vectors[[n for n, _ in hits]] @ (queries[0] / np.linalg.norm(queries[0]))
    np.testing.assert_allclose(scores, expected, rtol=1e-5)  # the walk's own: float32 sums of 30 products, any SIMD


@pytest.mark.parametrize("share", [0.003, 0.1, 0.6])
def test_filters_never_shorten_an_answer(large: Path, share: float) -> None:
    """Narrow filters scan exactly, wide ones walk the graph under a selector; both return k eligible items."""
    index = TopicIndex.load(large)
    allowed = np.random.default_rng(3).random(N + 1) < share
    eligible = int(np.count_nonzero(allowed[1:]))
    assert (eligible > EXACT_MAX_ELIGIBLE) == (share == 0.6)  # both paths are exercised
    for query in topic_vectors(20, seed=4):
        hits = [n for n, _ in index.search(query, 50, allowed)]
        assert len(hits) == 50 and len(set(hits)) == 50
        assert all(allowed[n] for n in hits)


@pytest.mark.parametrize("share", [0.003, 0.6])
def test_exclusions_and_removals_hold_under_a_mask_reused_across_queries(large: Path, share: float) -> None:
    """A mask's eligible set is computed once per index state (not per query): what a query excludes, and what
    is removed meanwhile, still never comes back, on the exact path and on the graph."""
    index = TopicIndex.load(large)
    allowed = np.random.default_rng(5).random(N + 1) < share
    query = topic_vectors(1, seed=6)[0]
    first = [n for n, _ in index.search(query, 20, allowed)]
    hits = [n for n, _ in index.search(query, 20, allowed, exclude=first[:5])]
    assert len(hits) == 20 and not set(first[:5]) & set(hits) and set(first[5:]) <= set(hits)
    index.remove(first[5])
    after = [n for n, _ in index.search(query, 20, allowed)]
    assert first[5] not in after and len(after) == 20 and all(allowed[n] for n in after)


def test_removed_and_updated_items_in_a_graph(large: Path) -> None:
    index = TopicIndex.load(large)
    query = index.vectors[42].copy()
    assert index.search(query, 1)[0][0] == 42
    index.remove(42)
    assert 42 not in {n for n, _ in index.search(query, 100)}

    was, moved = index.vectors[77].copy(), index.vectors[9000].copy()
    index.upsert(np.array([77]), ["item-77"], moved[None, :])  # 77 now looks like 9000: a second graph node
    hits = [n for n, _ in index.search(moved, 10)]
    assert {77, 9000} <= set(hits[:2]) and hits.count(77) == 1
    # 77's old node still sits where it was: its stale score (about 1) must not bring it back there
    assert float(was @ moved) < 0.9 and 77 not in {n for n, _ in index.search(was, 5)}
    np.testing.assert_allclose(index.vector(77), moved, rtol=1e-5, atol=1e-6)  # float32, not bit-exact


class NoWalks:
    """A graph that refuses to be walked: what answers then came from the build's rows."""

    def search(self, *args, **kwargs):
        raise AssertionError("walked the graph")


def exact_like(index: TopicIndex, num: int, k: int, allowed: np.ndarray | None = None) -> list[int]:
    mask = index.present if allowed is None else index.present[: len(allowed)] & allowed[: len(index.present)]
    nums = np.flatnonzero(mask)
    nums = nums[nums != num]
    return nums[np.argsort(-(index.vectors[nums] @ index.vectors[num]))[:k]].tolist()


def test_items_like_an_item_are_read_from_its_row_not_walked_for(large: Path) -> None:
    index = TopicIndex.load(large)
    assert index.neighbours is not None and index.neighbours.shape[1] == NEIGHBOURS_KEPT
    index.graph = NoWalks()
    nums = np.random.default_rng(7).choice(np.arange(1, N + 1), 100, replace=False).tolist()
    found = []
    for num in nums:
        hits = index.like(num, 15, exclude={num})
        assert len(hits) == 15 and num not in {n for n, _ in hits}
        scores = [s for _, s in hits]
        assert scores == sorted(scores, reverse=True)
        np.testing.assert_allclose(scores, index.vectors[[n for n, _ in hits]] @ index.vectors[num], rtol=1e-5)
        found.append(len({n for n, _ in hits[:10]} & set(exact_like(index, num, 10))) / 10)
    assert np.mean(found) >= 0.98  # the build's walk is wider than a query's (0.97 above)


def test_rows_give_way_to_what_changed_since_the_build(large: Path) -> None:
    index = TopicIndex.load(large)
    num = 321
    first = [n for n, _ in index.like(num, 10)]
    index.remove(first[0])
    index.upsert(np.array([4000]), ["item-4000"], index.vectors[num][None, :] + 1e-3)  # a near-twin appears
    index.graph = NoWalks()  # the row still answers: it holds enough unchanged items
    after = [n for n, _ in index.like(num, 10)]
    assert after[0] == 4000 and first[0] not in after and set(first[1:9]) <= set(after)
    index.upsert(np.array([num]), [f"item-{num}"], index.vectors[9000][None, :])  # the item itself moved
    with pytest.raises(AssertionError, match="walked"):
        index.like(num, 10)  # its row is stale: it walks from its new vector


def test_a_row_that_cannot_fill_k_under_a_filter_walks_or_scans(large: Path) -> None:
    index = TopicIndex.load(large)
    allowed = np.random.default_rng(8).random(N + 1) < 0.6
    for num in range(100, 120):
        hits = [n for n, _ in index.like(num, 30, allowed)]
        assert len(hits) == 30 and all(allowed[n] for n in hits)
    narrow = np.random.default_rng(9).random(N + 1) < 0.003
    narrow[50] = True  # the item itself is eligible, and still never its own answer
    hits = [n for n, _ in index.like(50, 10, narrow)]
    assert len(hits) == 10 and all(narrow[n] for n in hits) and 50 not in hits
    exact = index.vectors[exact_like(index, 50, 10, narrow)] @ index.vectors[50]
    np.testing.assert_allclose(index.vectors[hits] @ index.vectors[50], exact, atol=1e-5)  # near-ties in any order


def test_a_mask_shorter_than_the_index_admits_nothing_past_its_end(large: Path) -> None:
    index = TopicIndex.load(large)
    allowed = np.ones(N // 2, dtype=bool)
    for query in topic_vectors(10, seed=6):
        assert all(n < N // 2 for n, _ in index.search(query, 30, allowed))


def test_cached_masks_follow_the_clock_and_the_changes() -> None:
    eligibility = Eligibility()
    eligibility.set(1, {"kind": "sale", "starts_at": "2027-01-15T08:00:00Z", "ends_at": "2027-01-15T10:00:00Z"})
    eligibility.set(2, {"kind": "product"})
    opens = parse_timestamp("2027-01-15T08:00:00Z")

    def shown(at: float | None, nums: list[int], **filters) -> list[bool]:
        return eligibility.mask(Filters(active_at=at, **filters))[nums].tolist()

    assert shown(opens - 3600, [1, 2]) == [False, True]
    assert shown(opens, [1, 2]) == [True, True]
    assert shown(opens + 7199, [1, 2]) == [True, True]
    assert shown(opens + 7200, [1, 2]) == [False, True]  # the sale ended
    assert shown(opens - 1, [1, 2]) == [False, True]  # and the clock may go back (a client's active_at)
    assert shown(opens + 60, [1, 2], kind="sale") == [True, False]
    assert shown(None, [1, 2]) == [True, True]  # no time filter is not the same cached mask
    eligibility.drop(2)
    assert shown(opens + 60, [1, 2]) == [True, False]
    eligibility.set(3, {"kind": "product"})
    assert shown(opens + 60, [1, 2, 3]) == [True, False, True]
    assert shown(opens + 60, [3], exclude=frozenset({3})) == [False]
    assert shown(opens + 60, [3]) == [True]  # an exclude never sticks to the cached mask


def serve_version(store: Store, settings: Settings, n: int) -> list[str]:
    """Version 1 of ``n`` indexed items, current in Redis; returns their ids."""
    vectors = topic_vectors(n, seed=8)
    ids = [f"item-{i}" for i in range(n)]
    for item_id, vector in zip(ids, vectors):
        store.items.put(Item(id=item_id, title=f"title of {item_id}", kind="product", tags=[("seashore", 0.9)]))
        store.items.mark_indexed(item_id, [("seashore", 0.9)], vector, 1, None)
    index = TopicIndex(DIM)
    index.upsert(np.array([store.items.get(i).num for i in ids]), ids, vectors)
    with VersionStore(settings.data_dir).create(1, {"items": n, "changes_from": store.changes.last_id()}) as directory:
        index.save(directory, store.items.summaries)
        topics = [{"id": t, "name": f"topic {t}", "top_tags": []} for t in range(DIM)]
        (directory / TOPICS).write_text(json.dumps(topics))
    store.versions.set_current(1)
    return ids


def calls(store: Store, command: str) -> int:
    return int(store.r.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def polls(store: Store) -> dict[str, int]:
    """Commands Redis has run of the kinds a poll sends (every client together)."""
    return {c: calls(store, c) for c in ("xrange", "get", "hmget")}


def test_queries_cost_no_round_trip_until_something_changes(store: Store, settings: Settings) -> None:
    ids = serve_version(store, settings, 50)
    live = LiveIndex(store, VersionStore(settings.data_dir))
    live.sync()  # loads version 1
    live.sync()  # polls once, and from now on Redis pushes when the stream or the pointer moves
    assert live.version == 1

    before = polls(store)
    for _ in range(5):
        live.sync()
        assert [item.fields["title"] for item in live.summaries(ids[:10])] == [f"title of {i}" for i in ids[:10]]
    assert polls(store) == before  # five queries, not one command

    item = store.items.get(ids[3])
    item.title = "renamed"
    store.items.put(item)
    store.items.mark_indexed(ids[3], [("seashore", 0.9)], live.index.vector(item.num), 1, None)
    store.changes.publish(Change.UPSERT, ids[3], item.num)  # another process's write
    live.sync()
    assert live.summaries([ids[3]])[0].fields["title"] == "renamed"
    after = polls(store)
    assert after["xrange"] == before["xrange"] + 1 and after["hmget"] == before["hmget"] + 1

    store.delete_item(ids[4])
    live.sync()
    assert ids[4] not in live.index.nums


def test_a_lost_tracking_connection_means_polling_not_stale_answers(store: Store, settings: Settings) -> None:
    ids = serve_version(store, settings, 20)
    live = LiveIndex(store, VersionStore(settings.data_dir))
    live.sync()
    live.sync()
    tracking = [c for c in store.r.client_list() if "t" in c["flags"]]  # flags: t = CLIENT TRACKING on
    assert tracking
    for client in tracking:
        store.r.client_kill_filter(_id=client["id"])
    store.delete_item(ids[0])  # no push can reach the killed connection
    live.sync()
    assert ids[0] not in live.index.nums
    live.sync()  # and tracking is back: the next write is pushed again
    store.delete_item(ids[1])
    live.sync()
    assert ids[1] not in live.index.nums


def test_without_pushes_every_query_polls(store: Store, settings: Settings) -> None:
    """A RESP2 connection cannot receive pushed invalidations: correct answers, one poll per query."""
    ids = serve_version(store, settings, 20)
    resp2 = Store.from_url(f"{settings.redis_url_or_default}?protocol=2", settings.key_prefix)
    live = LiveIndex(resp2, VersionStore(settings.data_dir))
    live.sync()
    live.sync()
    before = polls(store)
    live.sync()
    assert polls(store)["xrange"] == before["xrange"] + 1
    store.delete_item(ids[0])
    live.sync()
    assert ids[0] not in live.index.nums


def mapped(array: np.ndarray) -> bool:
    """Whether ``array`` is a view of a memory-mapped file (not a copy in this process's memory)."""
    while array is not None:
        if isinstance(array, mmap.mmap):
            return True
        array = getattr(array, "base", None)
    return False


def test_a_version_loads_from_its_files_without_reading_item_hashes(store: Store, settings: Settings) -> None:
    ids = serve_version(store, settings, 40)
    store.r.delete(*[store.keys.item(i) for i in ids])  # what the build read of the items is in the version
    before = {c: calls(store, c) for c in ("hmget", "hgetall")}
    live = LiveIndex(store, VersionStore(settings.data_dir))
    live.sync()
    assert {c: calls(store, c) for c in ("hmget", "hgetall")} == before
    assert mapped(live.index.vectors) and mapped(live.eligibility.kind)
    assert [s.fields["title"] for s in live.summaries(ids[:5])] == [f"title of {i}" for i in ids[:5]]
    assert live.summaries(ids[:1])[0].tags == ("seashore",) and live.summaries(ids[:1])[0].status == "indexed"
    hits = live.search(topic_vectors(1, seed=9)[0], 10, Filters(kind="product"))
    assert len(hits) == 10 and {s.fields["kind"] for s in live.summaries([live.index.ids[n] for n, _ in hits])} == {
        "product"}
    assert live.search(topic_vectors(1, seed=9)[0], 10, Filters(kind="sale")) == []


def test_the_overlay_serves_an_upsert_and_a_delete_made_after_the_build(store: Store, settings: Settings) -> None:
    ids = serve_version(store, settings, 30)
    files = VersionStore(settings.data_dir)
    written = {p.name: p.read_bytes() for p in files.path(1).iterdir()}
    live = LiveIndex(store, files)
    live.sync()
    new_vector = topic_vectors(1, seed=11)[0]
    num = store.items.put(Item(id="late", title="added after the build", kind="sale", tags=[("reef", 0.8)]))
    store.items.mark_indexed("late", [("reef", 0.8)], new_vector, 1, None)
    store.changes.publish(Change.UPSERT, "late", num)
    store.delete_item(ids[2])
    live.sync()
    assert live.index.nums["late"] == num and ids[2] not in live.index.nums and len(live.index) == 30
    assert live.search(new_vector, 1, Filters(kind="sale"))[0][0] == num
    assert live.summaries(["late"])[0].fields["title"] == "added after the build"
    gone = store.items.get(ids[2]).num
    assert gone not in {n for n, _ in live.search(topic_vectors(30, seed=8)[2], 30, Filters())}
    assert mapped(live.index.vectors) and mapped(live.eligibility.present)  # patched in place, not copied
    assert {p.name: p.read_bytes() for p in files.path(1).iterdir()} == written  # the version's files stay as built


def test_a_mapped_graph_serves_items_added_after_it_was_built(large: Path) -> None:
    index = TopicIndex.load(large)
    assert mapped(index.vectors)
    moved = index.vectors[123].copy()
    index.upsert(np.array([N + 7]), ["item-new"], moved[None, :])  # past the graph's nodes: scanned exactly
    assert {123, N + 7} <= {n for n, _ in index.search(moved, 2)} and index.ids[N + 7] == "item-new"
    index.remove(123)
    assert [n for n, _ in index.search(moved, 1)] == [N + 7]


def test_summaries_of_items_saved_out_of_number_order(tmp_path: Path) -> None:
    index = TopicIndex(DIM)
    index.upsert(np.array([9, 2, 5]), ["c", "a", "b"], topic_vectors(3))
    index.save(tmp_path, lambda ids: [Summary.of(Item(id=i, title=f"title {i}")) for i in ids])
    table, loaded = SummaryTable.load(tmp_path), TopicIndex.load(tmp_path)
    found = table.base(["c", "a", "b", "z"], [loaded.nums[i] for i in "cab"] + [None])
    assert [s.fields["title"] for s in found[:3]] == ["title c", "title a", "title b"] and found[3] is None
    assert loaded.item_ids.ids_of([5, 9, 2, 4, -1, 10**9]) == ["b", "c", "a", None, None, None]
    loaded.item_ids.remove(9)
    loaded.item_ids.set(4, "d")
    assert loaded.item_ids.ids_of([5, 9, 4]) == ["b", None, "d"]


def test_id_maps_over_the_columns_and_their_overlay(tmp_path: Path) -> None:
    built = ItemIds.empty()
    for num, item_id in ((3, "c"), (1, "a"), (2, "b")):
        built.set(num, item_id)
    built.save(tmp_path)
    ids = ItemIds.load(tmp_path)
    assert dict(ids.ids) == {1: "a", 2: "b", 3: "c"} and ids.nums["b"] == 2 and "z" not in ids.nums
    ids.set(2, "b")  # as the build had it: no overlay
    assert not ids.added and not ids.gone
    ids.remove(2)
    ids.set(4, "d")
    assert 2 not in ids.ids and "b" not in ids.nums and ids.nums["d"] == 4 and len(ids) == 3
    ids.set(2, "b")  # back as the build had it
    assert ids.ids[2] == "b" and not ids.gone and len(ids) == 4
    ids.set(5, "a")  # an id given another number leaves its old one
    assert ids.nums["a"] == 5 and 1 not in ids.ids and sorted(ids.ids) == [2, 3, 4, 5]
    assert ids.base_nums_of(["c", "x", "a"]) == [3, None, 1]  # the columns' view, overlay aside


def test_a_version_in_the_old_format_says_how_to_rebuild_it(tmp_path: Path) -> None:
    (tmp_path / "ids.json").write_text(json.dumps([[1, "a"]]))
    with pytest.raises(FileNotFoundError, match=r"vistas reindex --reuse-features"):
        TopicIndex.load(tmp_path)
