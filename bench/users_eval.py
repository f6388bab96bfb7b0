"""How ``bench/users.py`` scores a method: the request clock, ranks of the held-out items, per-user metrics,
the paired bootstrap and the results table (apart from the methods, so neither module passes 400 lines)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

from recommender.users.collaborative import DAY, EventLog
from recommender.users.tuning import first_events, hit_ndcg, rank_of

K = 10
CUT = 5
FOLDS = 5
Histories = Sequence[list[dict]]
#: ``scorer(users, histories, nows)`` -> a (users x items) score matrix, each user asking at their ``now``.
Scorer = Callable[[Sequence[int], Histories, Sequence[float]], np.ndarray]
#: Result columns, in print order, and their headers.
LABELS = {
    "all": "all users (last item)",
    "cut": f"first {CUT} -> last item",
    "next": f"first {CUT} -> next item",
    "cut@5th": f"first {CUT} -> last, clock at {CUT}th",
}


def request_times(histories: Mapping[int, list[dict]], at: Mapping[int, float]) -> dict[int, float]:
    """When each user asks for recommendations: when they come back, a second before the interaction to
    predict (``at``), and never before their own last history event (MovieLens has many in one second)."""
    return {u: max(max(e["ts"] for e in histories[u]), at[u] - 1.0) for u in at if histories.get(u)}


def history_times(histories: Mapping[int, list[dict]]) -> dict[int, float]:
    """The older clock: each user asks right after their last history event."""
    return {u: max(e["ts"] for e in h) for u, h in histories.items() if h}


def ranks(scorer: Scorer, histories: Mapping[int, list[dict]], targets: Mapping[int, int],
          nows: Mapping[int, float], batch: int = 256) -> np.ndarray:
    """(better, ties) of each user's target, users in sorted order, each scored at their ``nows``; the user's
    history items are excluded. No history event is after its user's ``now``."""
    users = [u for u in sorted(targets) if histories.get(u)]
    out = []
    for start in range(0, len(users), batch):
        chunk = users[start:start + batch]
        hist = [histories[u] for u in chunk]
        times = [nows[u] for u in chunk]
        assert all(e["ts"] <= t for h, t in zip(hist, times) for e in h), "a history event after the request"
        scores = np.array(scorer(chunk, hist, times), dtype=np.float64, copy=True)
        for r, h in enumerate(hist):
            scores[r, [e["item"] for e in h]] = -np.inf
        out.append(rank_of(scores, np.array([targets[u] for u in chunk])))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)


def cut_folds(train: EventLog, users: Sequence[int]) -> Iterator[tuple[list[int], EventLog]]:
    """The cut columns' ``FOLDS`` folds of ``users``: each fold's users (ascending) and what a model scoring them
    may train on, the other users' whole histories and the fold's first ``CUT`` interactions."""
    ordered = np.array(sorted(users))
    fold_of = np.random.default_rng(0).permutation(len(ordered)) % FOLDS
    for f in range(FOLDS):
        fold = ordered[fold_of == f].tolist()
        yield fold, train.subset(~np.isin(train.user, fold) | first_events(train, set(fold), CUT))


def evaluate(scorer: Scorer, histories: Mapping[int, list[dict]], targets: Mapping[int, int],
             nows: Mapping[int, float]) -> tuple[float, float]:
    return hit_ndcg(ranks(scorer, histories, targets, nows), K)


def per_user(r: np.ndarray) -> np.ndarray:
    """(users, 2): each user's expected hit and NDCG (the mean of these is ``hit_ndcg``)."""
    return np.array([hit_ndcg(row[None, :], K) for row in r]) if len(r) else np.zeros((0, 2))


def paired_ci(a: np.ndarray, b: np.ndarray, draws: int = 2000, seed: int = 0) -> np.ndarray:
    """95% bootstrap interval of mean(a - b) over users, for HR and NDCG: (2, 2) rows lo, hi."""
    rng = np.random.default_rng(seed)
    d = a - b
    means = np.array([d[rng.integers(0, len(d), len(d))].mean(axis=0) for _ in range(draws)])
    return np.percentile(means, [2.5, 97.5], axis=0)


def decayed_counts(log: EventLog, nows: Sequence[float], half_life_days: float, n_items: int) -> np.ndarray:
    """(len(nows), items): per ``now``, every event strictly before it, worth ``0.5 ** (age / half-life)``: a
    "this week's bestsellers" list as it stood at that moment (events older than 30 half-lives are dropped)."""
    keep = ~log.dismissed
    order = np.argsort(log.ts[keep], kind="stable")
    ts, items = log.ts[keep][order], log.item[keep][order]
    h = half_life_days * DAY
    out = np.zeros((len(nows), n_items), dtype=np.float64)
    for r, now in enumerate(nows):
        lo, hi = np.searchsorted(ts, [now - 30 * h, now], side="left")
        out[r] = np.bincount(items[lo:hi], weights=0.5 ** ((now - ts[lo:hi]) / h), minlength=n_items)
    return out


def report(results: Mapping[str, Mapping[str, tuple[float, float]]]) -> None:
    regimes = [r for r in LABELS if any(r in v for v in results.values())]
    print()
    print(f"{'method':<20}" + "".join(f"| {LABELS[r]:<37}" for r in regimes))
    print(f"{'':<20}" + "".join(f"| {'HR@10':>7} {'NDCG@10':>8} {'xALS':>9} {'xpop':>9} " for _ in regimes))
    for name, by in results.items():
        line = f"{name:<20}"
        for r in regimes:
            hr, ndcg = by[r]
            als = results.get("ALS", {}).get(r)
            pop = results.get("popularity", {}).get(r)
            ratio = lambda base: f"{hr / base[0]:.2f}/{ndcg / base[1]:.2f}" if base and base[0] and base[1] else "-"
            line += f"| {hr:7.4f} {ndcg:8.4f} {ratio(als):>9} {ratio(pop):>9} "
        print(line)
    print("(xALS, xpop: HR ratio / NDCG ratio)")
