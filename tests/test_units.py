"""The pure parts, without Redis, a model or a server: MMR, unit vectors, filters, profiles,
body validation, query parameters and the key schema."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from flask import Flask

from recommender.api.params import filters_arg, float_arg, int_arg, item_id_arg, user_id_arg
from recommender.errors import ApiError
from recommender.events import EVENT_WEIGHTS, build_profile, decay, profile_topics
from recommender.index import TopicIndex
from recommender.ranking import EligibleSets, Filters, maximal_marginal_relevance, unit
from recommender.store.items import parse_timestamp
from recommender.store.keys import Keys
from recommender.validation import event_from_body, item_from_body

NOW = 1_800_000_000.0
DAY = 86400.0


def _index(vectors: dict[str, list[float]]) -> TopicIndex:
    index = TopicIndex(len(next(iter(vectors.values()))))
    index.upsert(np.arange(1, len(vectors) + 1), list(vectors), np.array(list(vectors.values()), dtype=np.float32))
    return index


def _refused(call, status: int, code: str, words: str = "") -> None:
    with pytest.raises(ApiError) as raised:
        call()
    assert (raised.value.status, raised.value.code) == (status, code) and words in raised.value.message


# -- ranking ----------------------------------------------------------------------------------------------
def test_unit_scales_each_row_to_length_one_and_leaves_zero_alone() -> None:
    rows = unit(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(rows, [[0.6, 0.8], [0.0, 0.0]])
    assert np.allclose(unit(np.array([0.0, 2.0])), [0.0, 1.0])


def test_mmr_without_diversity_keeps_the_relevance_order() -> None:
    vectors = unit(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]))
    picked = maximal_marginal_relevance(np.array([1.0, 0.0]), [10, 11, 12], vectors, 3, 0.0)
    assert [n for n, _ in picked] == [10, 11, 12]
    assert picked[0][1] == pytest.approx(1.0)  # scores stay the relevance, whatever the diversity


def test_mmr_with_diversity_prefers_what_is_unlike_the_first_pick() -> None:
    vectors = unit(np.array([[1.0, 0.0], [0.99, 0.01], [0.6, 0.8]]))
    picked = maximal_marginal_relevance(np.array([1.0, 0.0]), [10, 11, 12], vectors, 2, 0.7)
    assert [n for n, _ in picked] == [10, 12]
    assert len(maximal_marginal_relevance(np.array([1.0, 0.0]), [10], vectors[:1], 5, 0.5)) == 1


def test_a_graph_walk_takes_a_selector_only_when_some_node_is_not_eligible() -> None:
    present = np.ones(10, dtype=bool)
    nodes = present.copy()
    nodes[8:] = False  # items 8 and 9 came after the build: no graph nodes
    sets = EligibleSets()
    assert sets.of(None, present, 0, nodes)[2] is None
    only_new_out = present.copy()
    only_new_out[9] = False
    assert sets.of(only_new_out, present, 0, nodes)[1:] == (9, None)
    one_out = present.copy()
    one_out[3] = False
    _, count, bits = sets.of(one_out, present, 0, nodes)
    assert count == 9 and np.unpackbits(bits, bitorder="little")[:10].tolist() == one_out.tolist()
    short = np.ones(5, dtype=bool)  # a mask shorter than the index admits nothing past its end
    assert sets.of(short, present, 0, nodes)[2] is not None
    assert EligibleSets().of(None, present, 0, None)[2] is not None  # no graph (an in-memory index): a bitmap


def test_filters_excluding_adds_to_a_copy() -> None:
    base = Filters(kind="sale", exclude=frozenset({1}))
    assert base.excluding([2, 3]) == Filters(kind="sale", exclude=frozenset({1, 2, 3}))
    assert base.exclude == frozenset({1})


# -- profiles ---------------------------------------------------------------------------------------------
def test_a_profile_weighs_events_by_type_and_halves_them_every_half_life() -> None:
    index = _index({"a": [1.0, 0.0], "b": [0.0, 1.0]})
    events = [{"item": "a", "type": "purchase", "ts": NOW - 14 * DAY}, {"item": "b", "type": "view", "ts": NOW},
              {"item": "b", "type": "view", "ts": NOW}, {"item": "gone", "type": "click", "ts": NOW}]
    profile = build_profile(events, index, NOW, half_life_days=14)
    assert profile.item_weights == pytest.approx({"a": EVENT_WEIGHTS["purchase"] / 2, "b": 2.0, "gone": 2.0})
    assert profile.strength == pytest.approx(8.0)  # unknown items count as evidence, not as direction
    assert np.allclose(profile.vector, [4.0, 2.0])
    assert profile.purchased == {"a"} and profile.views == {"b": 2}
    topics = profile_topics(profile, [{"id": 0, "name": "first"}, {"id": 1, "name": "second"}])
    assert [(t["name"], t["weight"]) for t in topics] == [("first", pytest.approx(2 / 3, abs=1e-4)),
                                                           ("second", pytest.approx(1 / 3, abs=1e-4))]


def test_a_profile_of_nothing_served_has_no_vector() -> None:
    profile = build_profile([{"item": "x", "type": "view", "ts": NOW}], _index({"a": [1.0, 0.0]}), NOW, 14)
    assert profile.vector is None and profile_topics(profile, []) == []
    assert decay(-5.0, 14) == 1.0  # an event from the future counts as now


# -- body validation --------------------------------------------------------------------------------------
def test_an_item_body_is_read_field_by_field() -> None:
    item = item_from_body("p-1", {"title": "Boots", "price": 12, "tags": [" Snow "],
                                  "starts_at": "2026-12-01T09:00:00Z", "ends_at": "2026-12-02T09:00:00+01:00"}, None)
    assert (item.title, item.price, item.given_tags, item.image) == ("Boots", 12.0, ["Snow"], "")


@pytest.mark.parametrize("body, words", [
    ([], "JSON object"), ({"colour": "red", "tags": ["x"]}, "unknown fields"),
    ({"price": -1, "tags": ["x"]}, "price"), ({"price": True, "tags": ["x"]}, "price"),
    ({"starts_at": "soon", "tags": ["x"]}, "starts_at"),
    ({"starts_at": "2026-12-02T00:00:00Z", "ends_at": "2026-12-01T00:00:00Z", "tags": ["x"]}, "after"),
    ({"tags": [""]}, "tags"), ({"title": "x" * 501, "tags": ["x"]}, "title"), ({"title": "no photo"}, "image"),
    ({"image": "a.jpg"}, "VISTAS_IMAGE_ROOT"),
])
def test_an_item_body_with_a_bad_field_is_refused_naming_it(body: object, words: str) -> None:
    _refused(lambda: item_from_body("p-1", body, None), 422, "invalid_item", words)


def test_an_image_path_must_stay_inside_the_image_root(tmp_path) -> None:
    (tmp_path / "in.jpg").write_bytes(b"x")
    assert item_from_body("p", {"image": "in.jpg"}, tmp_path).image == str((tmp_path / "in.jpg").resolve())
    _refused(lambda: item_from_body("p", {"image": "../outside.jpg"}, tmp_path), 422, "invalid_item", "inside")
    _refused(lambda: item_from_body("p", {"image": "missing.jpg"}, tmp_path), 422, "invalid_item", "exist")


def test_events_take_iso_or_epoch_times_and_default_to_now() -> None:
    assert event_from_body({"item_id": "a", "type": "view"}, NOW, "e") == {"item": "a", "type": "view", "ts": NOW}
    assert event_from_body({"item_id": "a", "type": "click", "ts": "2026-12-01T00:00:00Z"}, NOW, "e")["ts"] == \
        parse_timestamp("2026-12-01T00:00:00Z")
    assert event_from_body({"item_id": "a", "type": "purchase", "ts": NOW - 5}, NOW, "e")["ts"] == NOW - 5


@pytest.mark.parametrize("raw, words", [
    ("view", "JSON object"), ({"item_id": "a", "type": "view", "extra": 1}, "unknown fields"),
    ({"item_id": "a b", "type": "view"}, "item_id"), ({"item_id": "a", "type": "like"}, "type"),
    ({"item_id": "a", "type": "view", "ts": True}, "ts"), ({"item_id": "a", "type": "view", "ts": "later"}, "ts"),
    ({"item_id": "a", "type": "view", "ts": NOW + 3600}, "future"),
])
def test_a_bad_event_is_refused_saying_where(raw: object, words: str) -> None:
    _refused(lambda: event_from_body(raw, NOW, "event 3"), 422, "invalid_event", words)
    _refused(lambda: event_from_body(raw, NOW, "event 3"), 422, "invalid_event", "event 3")


# -- query parameters -------------------------------------------------------------------------------------
def _args(query: str):
    return Flask(__name__).test_request_context(f"/?{query}")


def test_numbers_default_and_stay_in_range() -> None:
    with _args("k=7&diversity=0.5"):
        assert (int_arg("k", 10, 1, 100), float_arg("diversity", 0.0, 0.0, 1.0), int_arg("n", 3, 1, 5)) == (7, 0.5, 3)
    for query in ("k=0", "k=101", "k=ten", "k=1.5"):
        with _args(query):
            _refused(lambda: int_arg("k", 10, 1, 100), 400, "bad_parameter", "k must be")
    with _args("diversity=nan"):
        _refused(lambda: float_arg("diversity", 0.0, 0.0, 1.0), 400, "bad_parameter")


def test_ids_say_whether_an_item_or_a_user_was_malformed() -> None:
    assert item_id_arg("sku:1.2-a_b") == "sku:1.2-a_b"
    _refused(lambda: item_id_arg("a/b"), 400, "bad_item_id", "item ids")
    _refused(lambda: user_id_arg("x" * 129), 400, "bad_user_id", "user ids")


def test_filters_come_from_the_query_string() -> None:
    live = SimpleNamespace(index=_index({"a": [1.0], "b": [1.0]}))
    with _args("kind=sale&exclude=a,zzz&exclude=b&active_at=2026-12-01T00:00:00Z"):
        assert filters_arg(live, NOW) == Filters(kind="sale", active_at=parse_timestamp("2026-12-01T00:00:00Z"),
                                                 exclude=frozenset({1, 2}))
    with _args("active_at=any"):
        assert filters_arg(live, NOW) == Filters()
    with _args(""):
        assert filters_arg(live, NOW).active_at == NOW
    with _args("active_at=tomorrow"):
        _refused(lambda: filters_arg(live, NOW), 400, "bad_parameter", "active_at")
    with _args("exclude=" + ",".join(f"i{n}" for n in range(501))):
        _refused(lambda: filters_arg(live, NOW), 400, "bad_parameter", "at most")


# -- the key schema ---------------------------------------------------------------------------------------
def test_every_key_lives_under_the_prefix_in_the_slot_of_its_tag() -> None:
    from redis.crc import key_slot

    keys = Keys("shop")
    assert (keys.item("a"), keys.events("u"), keys.map(3), keys.queues) == (
        "shop:item:{a}", "shop:user:{u}:events", "{shop}:map:3", ("{shop}:ingest", "{shop}:retag"))
    names = [getattr(keys, name) for name, value in vars(Keys).items() if isinstance(value, property)]
    flat = [n for name in names for n in (name if isinstance(name, tuple) else (name,))]
    assert all(n.startswith(("shop:", "{shop}")) for n in flat)
    catalog = [n for n in flat if n.startswith("{shop}:") and "*" not in n] + [keys.model(2), keys.map(2)]
    assert {key_slot(n.encode()) for n in catalog} == {key_slot(b"shop")}  # scripts on the catalog: one slot
    assert key_slot(keys.item("a").encode()) == key_slot(keys.features("a").encode()) == key_slot(b"a")
    assert keys.user_of(keys.events("u:1")) == "u:1"
    with pytest.raises(ValueError):
        Keys("sh{op}")
