"""``HybridModel.recommend`` scores candidates only (``recommender/users/candidates.py``): it must rank as the
dense path (every source over every item) does, and ``vistas eval --users`` must score its validation requests
as ``recommend`` answers them.

Synthetic clustered catalogs, the real ``implicit``; no Redis.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from recommender.users import candidates
from recommender.users.collaborative import EventLog
from recommender.users.config import HybridConfig
from recommender.users.hybrid import HybridModel
from recommender.users.tuning import rank_of, request_scores

pytest.importorskip("implicit")
threadpool_limits(1, "blas")

DAY = 86400.0
NOW = 1_700_000_000.0
KINDS = ["view", "click", "add_to_cart", "purchase"]


def clustered(n_items: int, n_users: int, n_events: int, seed: int = 0):
    """Items in 40 clusters (each near one of 30 axes), users with one taste cluster and 70% of events in it;
    a quarter of the items are sales, a tenth of those closed at ``NOW``."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, 40, n_items)
    vectors = np.abs(rng.normal(0, 0.25, (n_items, 30))).astype(np.float32)
    vectors[np.arange(n_items), cluster % 30] += 1.0
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    taste = rng.integers(0, 40, n_users)
    users = rng.integers(0, n_users, n_events)
    popular = rng.random(n_items) ** 3
    items = rng.choice(n_items, n_events, p=popular / popular.sum())
    own = rng.random(n_events) < 0.7
    members = [np.flatnonzero(cluster == c) for c in range(40)]
    for row in np.flatnonzero(own):
        items[row] = rng.choice(members[taste[users[row]]])
    ts = NOW - rng.uniform(0, 60, n_events) * DAY
    events = EventLog(users, items, rng.choice(KINDS, n_events), ts)
    windows = np.full((n_items, 2), np.nan)
    windows[::4] = NOW - DAY, NOW + DAY
    windows[::40] = NOW - 2 * DAY, NOW - DAY
    windows[3::50] = np.inf, -np.inf  # not served (how train-users marks a number without an item)
    windows[5::50] = -np.inf, np.inf
    histories = []
    for u in range(60):
        size = (1, 3, 5, 12, 30)[u % 5]
        picks = rng.choice(members[taste[u]], size)
        history = [{"item": int(i), "type": KINDS[u % 4], "ts": NOW - 3600 + 60 * n} for n, i in enumerate(picks)]
        if u % 7 == 0:
            history.append({"item": int(rng.choice(members[(taste[u] + 1) % 40])), "type": "dismiss", "ts": NOW - 30})
        histories.append(history)
    model = HybridModel(HybridConfig(factors=16, iterations=8)).fit(events, vectors, windows, n_users=n_users, now=NOW)
    return model, histories


def dense(model: HybridModel, events: list[dict], allowed: np.ndarray | None = None) -> np.ndarray:
    """Every item's blended score, -inf where it may not be recommended (the reference)."""
    h = model.history(events, NOW)
    scores = model.blend(model.source_scores([h], [NOW]), [model.bucket(h)])[0]
    if allowed is not None:
        scores[~allowed] = -np.inf
    return scores


@pytest.fixture(scope="module")
def small():
    return clustered(1500, 400, 8000)


@pytest.fixture(scope="module")
def large():
    return clustered(2 * max(candidates.EXACT_MAX_ITEMS, candidates.STAT_SAMPLE), 1500, 30000, seed=1)


def test_small_catalogs_rank_exactly_as_the_dense_path(small):
    model, histories = small
    assert model.n_items <= min(candidates.EXACT_MAX_ITEMS, candidates.STAT_SAMPLE)
    for events in histories:
        want = dense(model, events)
        recs = model.recommend(events, k=10, now=NOW)
        got = np.array([r.score for r in recs])
        np.testing.assert_allclose(got, np.sort(want)[::-1][:10], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(want[[r.item for r in recs]], got, rtol=1e-4, atol=1e-4)


def test_only_open_windows_are_eligible(small):
    model, _ = small
    eligible = model.eligible(NOW)
    rows = np.arange(model.n_items)
    closed = ((rows % 40 == 0) | (rows % 50 == 3)) & (rows % 50 != 5)
    assert not eligible[closed].any() and eligible[~closed].all()


def test_a_narrow_filter_still_gets_k_allowed_items(small):
    model, histories = small
    allowed = np.zeros(model.n_items, dtype=bool)
    allowed[::97] = True
    for events in histories[:10]:
        want = dense(model, events, allowed)
        recs = model.recommend(events, k=10, now=NOW, allowed=allowed)
        assert len(recs) == min(10, int(np.isfinite(want).sum()))
        assert all(allowed[r.item] for r in recs)
        np.testing.assert_allclose([r.score for r in recs], np.sort(want)[::-1][:len(recs)], rtol=1e-4, atol=1e-4)


def test_asking_for_more_than_the_candidates_scores_every_item(small):
    model, histories = small
    events = histories[3]
    want = dense(model, events)
    recs = model.recommend(events, k=model.n_items, now=NOW)
    assert len(recs) == int(np.isfinite(want).sum())
    np.testing.assert_allclose([r.score for r in recs], np.sort(want[np.isfinite(want)])[::-1], rtol=1e-4, atol=1e-4)


def test_large_catalogs_keep_the_dense_top_10(large):
    """Beyond the exact limits content's candidates come from an IVF index and its statistics from a sample."""
    model, histories = large
    assert model.n_items > max(candidates.EXACT_MAX_ITEMS, candidates.STAT_SAMPLE)
    overlap = []
    for events in histories:
        want = dense(model, events)
        top = set(np.argsort(-want, kind="stable")[:10].tolist())
        overlap.append(len(top & {r.item for r in model.recommend(events, k=10, now=NOW)}) / 10)
    assert np.mean(overlap) >= 0.9, overlap
    assert min(overlap) >= 0.6, overlap


def test_items_added_after_training_are_content_candidates():
    model, histories = clustered(1500, 400, 8000)
    events = histories[4]
    h = model.history(events, NOW)
    twin = model.item_vectors[h.items[np.argmax(h.weights)]]
    new = model.add_items(np.repeat(twin[None, :], 3, axis=0))
    got = {r.item for r in model.recommend(events, k=20, now=NOW)}
    assert set(new.tolist()) <= got


def test_weights_are_chosen_on_the_requests_as_recommend_answers_them(large):
    """Each validation request is a row over its candidates: its blended top 10 is what ``recommend`` returns,
    a target among them is found at its column, one that is not (a seen item) ranks last, and the rows do not
    grow with the catalog (whole-catalog rows held 2.8 GB for 5,000 requests at 10,000 items)."""
    model, histories = large
    answers = [model.recommend(events, k=10, now=NOW) for events in histories]
    targets = [recs[0].item for recs in answers[:-1]] + [histories[-1][0]["item"]]
    sources, columns = request_scores(model, histories, targets, [NOW + 1.0] * len(histories), 10)
    assert len(columns) == len(sources["eligible"]) == len(histories)
    assert sources["eligible"].shape[1] < model.n_items / 4
    blended = model.blend(sources, [model.bucket(model.history(events, NOW)) for events in histories])
    for row, recs in zip(blended, answers):
        np.testing.assert_allclose(np.sort(row[np.isfinite(row)])[::-1][:10], [r.score for r in recs],
                                   rtol=1e-4, atol=1e-4)
    ranks = rank_of(blended, columns)
    assert (ranks[:-1, 0] == 0).all() and ranks[-1, 0] == blended.shape[1]


def test_the_shared_sources_best_items_are_the_head_of_their_stable_sort():
    values = np.random.default_rng(0).integers(0, 50, 5000).astype(np.float32)  # many ties
    for n in (1, 7, 200, 1600, 5000, 6000):
        np.testing.assert_array_equal(candidates.best_first(values, n), np.argsort(-values, kind="stable")[:n])
