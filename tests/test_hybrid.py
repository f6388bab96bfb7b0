"""The pure parts of user recommendations (recommender/users): no Redis, no app, the real ``implicit``.

A synthetic catalog: 8 interests (beach, ski, ...) of 12 items each, each item's topic vector near its
interest's axis; users touch items of one or two interests.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from recommender.users.collaborative import EventLog
from recommender.users.config import DEFAULT_WEIGHTS, HybridConfig
from recommender.users.hybrid import HybridModel
from recommender.users.tuning import choose_weights, hit_ndcg, rank_of

pytest.importorskip("implicit")
threadpool_limits(1, "blas")  # implicit's ALS wants a single-threaded BLAS

INTERESTS, PER, DIM = 8, 12, 30
BEACH, SKI, LAKE = 0, 5, 8
DAY = 86400.0
NOW = 1_700_000_000.0


def catalog(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Items of interests 0-7 lie near their own axis; "lake" items (interest LAKE) lie between
    beach (0) and ski (5), where a centroid of beach and ski lands."""
    rng = np.random.default_rng(seed)
    interest = np.repeat(np.arange(INTERESTS + 1), PER)
    vectors = np.abs(rng.normal(0, 0.15, (len(interest), DIM)))
    own = interest < INTERESTS
    vectors[np.flatnonzero(own), interest[own]] += 1.0
    vectors[np.flatnonzero(~own)[:, None], [BEACH, SKI]] += 0.75
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32), interest


def events(interest: np.ndarray, users: int = 300, hidden: frozenset[int] = frozenset(), seed: int = 1) -> EventLog:
    """Each user touches 6-12 items of one or two interests, never a ``hidden`` item."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(users):
        picks = rng.choice(INTERESTS + 1, 1 + (u % 2), replace=False)
        pool = [i for i in np.flatnonzero(np.isin(interest, picks)) if i not in hidden]
        items = rng.choice(pool, min(len(pool), int(rng.integers(6, 13))), replace=False)
        start = NOW - rng.uniform(1, 60) * DAY
        for n, item in enumerate(items):
            rows.append((u, int(item), ["view", "click", "add_to_cart", "purchase"][rng.integers(0, 4)],
                         start + n * 600.0))
    return EventLog.from_records(rows)


def history(items, start: float = NOW - 3600.0, kind: str = "click") -> list[dict]:
    return [{"item": int(i), "type": kind, "ts": start + n * 60.0} for n, i in enumerate(items)]


@pytest.fixture(scope="module")
def fitted():
    vectors, interest = catalog()
    model = HybridModel(HybridConfig(factors=16, iterations=10)).fit(events(interest), vectors, n_users=300)
    return model, vectors, interest


def test_two_interests_get_both(fitted):
    model, vectors, interest = fitted
    beach, ski = np.flatnonzero(interest == BEACH), np.flatnonzero(interest == SKI)
    events_ = history([i for pair in zip(beach[:4], ski[:4]) for i in pair])  # interleaved: equal recency
    recs = model.recommend(events_, k=10, now=NOW)
    got = [int(interest[r.item]) for r in recs]
    assert BEACH in got and SKI in got, f"interests in the top 10: {got}"
    # today's one-centroid profile lands between the two: its nearest items are lake items
    centroid = vectors[[*beach[:4], *ski[:4]]].sum(axis=0)
    nearest = [int(interest[i]) for i in np.argsort(-(vectors @ centroid)) if i not in set(beach[:4]) | set(ski[:4])]
    assert nearest[:10].count(LAKE) >= 8
    assert got.count(LAKE) <= 3
    # the content source alone, a soft maximum over the history items, ranks beach and ski above lake
    h = model.history(events_, NOW)
    content = model.source_scores([h], [NOW])["content"][0]
    assert content[beach[4:]].mean() > content[interest == LAKE].mean()
    assert content[ski[4:]].mean() > content[interest == LAKE].mean()
    assert all(r.source in ("als", "knn", "sequence", "content", "trending", "popular") for r in recs)
    assert all(r.because is None or r.because in set(beach[:4]) | set(ski[:4]) for r in recs)


def test_seen_and_excluded_never_return(fitted):
    model, _, interest = fitted
    seen = np.flatnonzero(interest == 2)[:5]
    exclude = np.flatnonzero(interest == 2)[5:8]
    recs = model.recommend(history(seen), k=model.n_items, exclude=exclude.tolist(), now=NOW)
    items = {r.item for r in recs}
    assert not items & set(seen.tolist()) and not items & set(exclude.tolist())
    assert len(recs) == model.n_items - len(seen) - len(exclude)


def test_dismiss_holds_and_pushes_similar_items_down(fitted):
    model, vectors, interest = fitted
    beach = np.flatnonzero(interest == 0)
    base = history(beach[:5])
    before = model.recommend(base, k=model.n_items, now=NOW)
    top = before[0].item
    after = model.recommend(base + [{"item": top, "type": "dismiss", "ts": NOW - 10.0}], k=model.n_items, now=NOW)
    assert top not in {r.item for r in after}  # never comes back, at any k
    # the push is measured: dismiss_penalty x (cosine above dismiss_floor) to the dismissed item, in z units
    h = model.history(base + [{"item": top, "type": "dismiss", "ts": NOW - 10.0}], NOW)
    penalty = model.source_scores([h], [NOW])["penalty"][0]
    cfg = model.config
    expected = cfg.dismiss_penalty * np.maximum(vectors @ vectors[top] - cfg.dismiss_floor, 0) / (1 - cfg.dismiss_floor)
    assert np.allclose(penalty, expected, atol=1e-5)
    similar = [r.item for r in before[1:6] if interest[r.item] == 0]
    # against merely excluding the same item, each item drops by exactly that amount
    excluded = {r.item: r.score for r in model.recommend(base, k=model.n_items, exclude=[top], now=NOW)}
    drops = np.array([excluded[r.item] - r.score for r in after])
    assert np.allclose(drops, [expected[r.item] for r in after], atol=1e-4)
    scores_after = {r.item: r.score for r in after}
    drop = lambda items: float(np.mean([excluded[i] - scores_after[i] for i in items]))
    unrelated = np.flatnonzero(interest == 3)
    assert drop(similar) > 0.5 and drop(unrelated) < 0.2
    # a dismissal after a view cancels the view: the item no longer pulls its neighbours up
    viewed = history([*beach[:5], top])
    dismissed = viewed + [{"item": top, "type": "dismiss", "ts": NOW}]
    assert model.history(dismissed, NOW).items.tolist() == sorted(beach[:5].tolist())


def test_new_items_reach_users_whose_history_they_resemble():
    vectors, interest = catalog()
    hidden = frozenset(int(i) for c in range(INTERESTS) for i in np.flatnonzero(interest == c)[-2:])
    model = HybridModel(HybridConfig(factors=16, iterations=10)).fit(
        events(interest, hidden=hidden), vectors, n_users=300)
    assert all(model.collaborative.interactions[i] == 0 for i in hidden)
    for c in (1, 6):
        warm = [i for i in np.flatnonzero(interest == c) if i not in hidden]
        recs = model.recommend(history(warm[:6]), k=10, now=NOW)
        got = {r.item for r in recs}
        mine = {i for i in hidden if interest[i] == c}
        assert mine <= got, f"new items of interest {c} missing from {sorted(got)}"
        assert not (hidden - mine) & got  # and no new item of another interest
        assert {r.source for r in recs if r.item in mine} <= {"content", "als"}


def test_items_added_after_training_get_scores_from_content(fitted):
    model, vectors, interest = fitted
    model = HybridModel(model.config, weights=model.weights).fit(events(interest), vectors, n_users=300)
    new = model.add_items(vectors[np.flatnonzero(interest == 3)[:2]] * 0.999)
    recs = model.recommend(history(np.flatnonzero(interest == 3)[:6]), k=10, now=NOW)
    assert set(new.tolist()) <= {r.item for r in recs}


def test_also_viewed_falls_back_to_content_for_a_new_item():
    vectors, interest = catalog()
    hidden = frozenset(int(i) for i in np.flatnonzero(interest == 4)[-2:])
    model = HybridModel(HybridConfig(factors=16, iterations=10)).fit(
        events(interest, hidden=hidden), vectors, n_users=300)
    warm = int(np.flatnonzero(interest == 4)[0])
    also = model.also(warm, k=5)
    assert len(also) == 5 and {r.source for r in also} == {"knn"} and warm not in {r.item for r in also}
    new = min(hidden)
    also = model.also(new, k=5)
    assert len(also) == 5 and {r.source for r in also} == {"content"}
    assert {int(interest[r.item]) for r in also} == {4} and new not in {r.item for r in also}


def test_saved_model_recommends_the_same(fitted, tmp_path):
    model, _, interest = fitted
    card = model.card()
    assert card["weights"] == model.weights and card["config"]["factors"] == 16 and card["bytes"] > 0
    h = history(np.flatnonzero(interest == 3)[:4])
    model.save(tmp_path / "users.joblib")
    loaded = HybridModel.load(tmp_path / "users.joblib")
    assert loaded.recommend(h, k=10, now=NOW) == model.recommend(h, k=10, now=NOW)


def test_fold_in_a_user_who_arrived_after_training(fitted):
    model, _, interest = fitted
    ski = np.flatnonzero(interest == 5)
    recs = model.recommend(history(ski[:3]), k=5, now=NOW)
    assert {int(interest[r.item]) for r in recs} == {5}


def test_new_user_gets_trending_or_popular(fitted):
    model, _, _ = fitted
    recs = model.recommend([], k=5, now=NOW)
    assert len(recs) == 5 and {r.source for r in recs} <= {"trending", "popular"}
    assert all(r.because is None for r in recs)


def test_observed_events_count_in_trending_at_once(fitted):
    model, vectors, interest = fitted
    model = HybridModel(model.config, weights=model.weights).fit(events(interest), vectors, n_users=300)
    item = int(np.flatnonzero(interest == 7)[0])
    before = model.trending(NOW + DAY)[item]
    model.observe(EventLog.from_records([(999, item, "purchase", NOW + DAY - 60.0)] * 20))
    assert model.trending(NOW + DAY)[item] > before + 100


def test_trending_counts_only_events_strictly_before_now(fitted):
    model, vectors, interest = fitted
    model = HybridModel(model.config, weights=model.weights).fit(events(interest), vectors, n_users=300)
    item, at = int(np.flatnonzero(interest == 7)[0]), NOW + DAY
    before = model.trending(at)[item]
    model.observe(EventLog.from_records([(999, item, "purchase", at)] * 20))
    assert model.trending(at)[item] == pytest.approx(before)
    assert model.trending(at + 1.0)[item] > before + 100


def test_shared_scores_of_a_later_request_are_not_reused_for_an_earlier_one(fitted):
    """Requests in the same minute share trending, but one at ``t`` never sees an event after ``t``, whatever
    order they come in (an evaluation replays users' requests out of time order)."""
    model, vectors, interest = fitted
    item, minute = int(np.flatnonzero(interest == 7)[0]), (NOW + DAY) // 60 * 60
    trained = HybridModel(model.config, weights=model.weights).fit(events(interest), vectors, n_users=300)
    trained.observe(EventLog.from_records([(999, item, "purchase", minute + 30.0)] * 20))
    fresh = trained.source_scores([trained.history([], minute + 10.0)], [minute + 10.0])["trending"][0, item]
    trained._shared_cache.clear()
    trained.source_scores([trained.history([], minute + 50.0)], [minute + 50.0])  # the later request first
    again = trained.source_scores([trained.history([], minute + 10.0)], [minute + 10.0])["trending"][0, item]
    assert again == pytest.approx(fresh, abs=1e-6)


def test_closed_sale_windows_are_never_recommended():
    vectors, interest = catalog()
    windows = np.full((len(vectors), 2), np.nan)
    beach = np.flatnonzero(interest == 0)
    windows[beach[6:9]] = [NOW - 10 * DAY, NOW - DAY]  # ended yesterday
    windows[beach[9:]] = [NOW + DAY, NOW + 2 * DAY]  # starts tomorrow
    model = HybridModel(HybridConfig(factors=16, iterations=10)).fit(events(interest), vectors, windows, n_users=300)
    recs = model.recommend(history(beach[:6]), k=model.n_items, now=NOW)
    assert not {r.item for r in recs} & set(beach[6:].tolist())
    assert set(beach[9:].tolist()) <= {r.item for r in model.recommend(history(beach[:6]), k=5, now=NOW + 1.5 * DAY)}


def test_weights_fall_back_to_defaults_with_too_few_events():
    vectors, interest = catalog()
    few = events(interest, users=20)
    choice = choose_weights(few, vectors, n_users=20)
    assert not choice.chosen and choice.weights == DEFAULT_WEIGHTS and choice.reason


def test_weights_are_chosen_on_enough_events():
    vectors, interest = catalog()
    log = events(interest, users=400)
    choice = choose_weights(log, vectors, config=HybridConfig(factors=16, iterations=5), n_users=400)
    assert choice.chosen and set(choice.weights) == {"thin", "away", "full"}
    assert choice.validation["full"]["hr"] > 0


def test_away_weights_are_chosen_on_users_who_came_back():
    """Users whose last event came a day after their first 5 give the "away" bucket its own validation."""
    vectors, interest = catalog()
    rng = np.random.default_rng(3)
    rows = []
    for u in range(400):
        items = rng.choice(np.flatnonzero(interest == u % INTERESTS), 8, replace=False)
        start = NOW - rng.uniform(2, 60) * DAY
        for n, item in enumerate(items):
            rows.append((u, int(item), "click", start + n * 60.0 + (DAY if n == 7 and u % 2 else 0.0)))
    choice = choose_weights(EventLog.from_records(rows), vectors, config=HybridConfig(factors=16, iterations=5),
                            n_users=400)
    assert choice.chosen and choice.validation["away"]["users"] == pytest.approx(200)
    assert choice.validation["thin"]["users"] == pytest.approx(400)


def test_a_thin_history_back_after_a_gap_blends_with_the_away_weights(fitted):
    model, vectors, interest = fitted
    only = lambda source: {s: float(s == source) for s in ("als", "knn", "sequence", "content", "trending", "popular")}
    served = HybridModel(model.config, weights={"thin": only("content"), "away": only("trending"),
                                                "full": only("content")}).fit(events(interest), vectors, n_users=300)
    beach = np.flatnonzero(interest == BEACH)[:3]
    in_session = served.recommend(history(beach, start=NOW - 600.0), k=5, now=NOW)
    back = served.recommend(history(beach, start=NOW - 3 * 3600.0), k=5, now=NOW)
    assert {r.source for r in in_session} == {"content"} and {r.source for r in back} <= {"trending", "popular"}
    assert served.bucket(served.history(history(beach, start=NOW - 3 * 3600.0), NOW)) == "away"


def test_weights_recorded_before_the_away_bucket_serve_it_with_the_thin_ones(fitted):
    model, vectors, interest = fitted
    old = HybridModel(model.config, weights={b: dict(model.weights[b]) for b in ("thin", "full")}).fit(
        events(interest), vectors, n_users=300)
    beach = history(np.flatnonzero(interest == BEACH)[:3], start=NOW - 3 * 3600.0)
    assert old.recommend(beach, k=5, now=NOW)
    h = old.history(beach, NOW)
    assert old.blend(old.source_scores([h], [NOW]), ["away"]).shape == (1, old.n_items)


def test_ties_count_at_random_not_for_the_target():
    scores = np.array([[1.0, 1.0, 1.0, 1.0, 0.0]])
    r = rank_of(scores, np.array([0]))
    assert r.tolist() == [[0, 3]]
    assert hit_ndcg(r, k=2)[0] == pytest.approx(0.5)
