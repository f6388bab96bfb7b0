"""Choosing the hybrid's blend weights and hyperparameters on the catalog's own events (time-ordered
holdout), and the ranking metrics they are chosen by (also used by ``bench/users.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from recommender.users.collaborative import EventLog
from recommender.users.config import (
    AWAY_S, BUCKETS, DEFAULT_WEIGHTS, MIN_EVENTS, MIN_VALIDATION_USERS, SOURCES, THIN_FOLDS, THIN_ITEMS, WEIGHT_GRID,
    HybridConfig,
)
from recommender.users.hybrid import HybridModel


def rank_of(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Each row's target position as (items scored strictly higher, other items tied with it), shape (n, 2).

    A target that is not finite (seen, ineligible, not returned) counts as ranked last."""
    rows = np.arange(len(targets))
    target = scores[rows, targets]
    better = (scores > target[:, None]).sum(axis=1)
    ties = (scores == target[:, None]).sum(axis=1) - 1
    finite = np.isfinite(target)
    return np.stack([np.where(finite, better, scores.shape[1]), np.where(finite, ties, 0)], axis=1)


def hit_ndcg(ranks: np.ndarray, k: int = 10) -> tuple[float, float]:
    """HR@k and NDCG@k, expected under random tie-breaking (a method gains nothing from ties).

    ``ranks``: (better, ties) rows from :func:`rank_of`, or plain 0-based ranks."""
    ranks = np.asarray(ranks)
    if ranks.ndim == 1:
        ranks = np.stack([ranks, np.zeros_like(ranks)], axis=1)
    better, ties = ranks[:, 0].astype(np.int64), ranks[:, 1].astype(np.int64)
    gains = 1.0 / np.log2(np.arange(k) + 2.0)
    cum = np.concatenate([[0.0], np.cumsum(gains)])  # cum[j]: gain of positions < j
    lo = np.minimum(better, k)
    hi = np.minimum(better + ties + 1, k)  # positions [better, better + ties] are equally likely
    span = ties + 1
    hit = (hi - lo) / span
    ndcg = (cum[hi] - cum[lo]) / span
    return float(hit.mean()), float(ndcg.mean())


def split_last(events: EventLog, min_events: int = 3) -> tuple[EventLog, dict[int, int], dict[int, float]]:
    """Time-ordered holdout: each user's last non-dismiss event (users with ``min_events`` or more).

    Returns (the other events, user -> held-out item, user -> ts of the held-out event)."""
    order = np.lexsort((np.arange(len(events)), events.ts, events.user))
    held = np.zeros(len(events), dtype=bool)
    targets: dict[int, int] = {}
    at: dict[int, float] = {}
    users, starts, counts = np.unique(events.user[order], return_index=True, return_counts=True)
    for user, start, count in zip(users.tolist(), starts.tolist(), counts.tolist()):
        rows = order[start:start + count]
        rows = rows[~events.dismissed[rows]]
        if len(rows) >= min_events:
            last = rows[-1]
            held[last] = True
            targets[user] = int(events.item[last])
            at[user] = float(events.ts[last])
    return events.subset(~held), targets, at


def user_histories(events: EventLog, users: Iterable[int], first: int | None = None) -> dict[int, list[dict]]:
    """Per user, their events as dicts (time order), cut to the first ``first`` when given."""
    wanted = set(users)
    out: dict[int, list[dict]] = {u: [] for u in wanted}
    order = np.lexsort((np.arange(len(events)), events.ts))
    for j in order:
        u = int(events.user[j])
        if u in wanted:
            out[u].append({"item": int(events.item[j]), "type": str(events.kind[j]), "ts": float(events.ts[j])})
    if first is not None:
        out = {u: h[:first] for u, h in out.items()}
    return out


def first_events(events: EventLog, users: set[int], first: int) -> np.ndarray:
    """Mask of the events of ``users`` that are among their first ``first`` (time order, as ``user_histories``)."""
    order = np.lexsort((np.arange(len(events)), events.ts))
    counts: dict[int, int] = {}
    keep = np.zeros(len(events), dtype=bool)
    for j in order[np.isin(events.user[order], list(users))]:
        u = int(events.user[j])
        c = counts.get(u, 0)
        keep[j] = c < first
        counts[u] = c + 1
    return keep


def search_weights(model: HybridModel, sources: Mapping[str, np.ndarray], targets: np.ndarray, bucket: str,
                   start: Mapping[str, float], rounds: int = 3, k: int = 10) -> tuple[dict[str, float], float]:
    """Coordinate ascent over :data:`WEIGHT_GRID` maximising NDCG@k (HR@k breaks ties)."""
    weights = dict(start)
    buckets = [bucket] * len(targets)

    def value(w: Mapping[str, float]) -> tuple[float, float]:
        hr, ndcg = hit_ndcg(rank_of(model.blend(sources, buckets, {bucket: w}), targets), k)
        return ndcg, hr

    best = value(weights)
    for _ in range(rounds):
        improved = False
        for s in SOURCES:
            for g in WEIGHT_GRID:
                if g == weights[s]:
                    continue
                trial = {**weights, s: g}
                if not any(trial.values()):
                    continue
                v = value(trial)
                if v > best:
                    best, weights, improved = v, trial, True
        if not improved:
            break
    return weights, best[0]


@dataclass
class Choice:
    weights: dict[str, dict[str, float]]
    chosen: bool
    validation: dict[str, dict[str, float]]
    users: int
    reason: str = ""


def request_time(history: Sequence[Mapping], at: float) -> float:
    """When a validation user asks: a second before the event to predict (they came back for it), never before
    their own last history event (as a served request, it sees nothing from after it)."""
    return max(float(history[-1]["ts"]), at - 1.0)


def choose_weights(
    events: EventLog, item_vectors: np.ndarray, item_windows: np.ndarray | None = None,
    config: HybridConfig | None = None, n_users: int | None = None, k: int = 10, max_users: int = 5000,
    seed: int = 0,
) -> Choice:
    """The blend's weights from a time-ordered holdout of ``events``, per bucket, each predicting an event from
    the history before it, asked a second before it: ``full``, each user's last event from all before it;
    ``thin``, each user's event number ``THIN_ITEMS + 1`` from the ``THIN_ITEMS`` before it (nearly always in
    the same session); ``away``, each user's last event from their first ``THIN_ITEMS``, for the users whose
    last event came more than :data:`AWAY_S` after those (they came back). Every request is scored as the API
    answers it, over its candidates (:func:`request_scores`): memory is bounded by the validation users
    (``max_users``), not by the catalog.

    Falls back to :data:`DEFAULT_WEIGHTS` under :data:`MIN_EVENTS` events or :data:`MIN_VALIDATION_USERS` users
    (per bucket for the thin ones)."""
    defaults = {b: dict(w) for b, w in DEFAULT_WEIGHTS.items()}
    if len(events) < MIN_EVENTS:
        return Choice(defaults, False, {}, 0, f"{len(events)} events < {MIN_EVENTS}")
    train, targets, at = split_last(events)
    if len(targets) < MIN_VALIDATION_USERS:
        return Choice(defaults, False, {}, len(targets), f"{len(targets)} validation users < {MIN_VALIDATION_USERS}")
    users = sorted(targets)
    if len(users) > max_users:
        users = sorted(np.random.default_rng(seed).choice(users, max_users, replace=False).tolist())
    config = config or HybridConfig()
    result: dict[str, dict[str, float]] = {}
    validation: dict[str, dict[str, float]] = {}
    whole = user_histories(train, users)
    # full: each user's whole history -> the held-out last event, one model on all the other events
    model = HybridModel(config).fit(train, item_vectors, item_windows, n_users=n_users)
    searched = {"full": [request_scores(model, [whole[u] for u in users], [targets[u] for u in users],
                                        [at[u] for u in users], k)], "thin": [], "away": []}
    # thin and away: the first THIN_ITEMS events -> the event right after them, or the last one when it came
    # after a gap; in each of THIN_FOLDS folds the fold's users are cut to those events in training too, so no
    # model has seen more of them
    thin_users = [u for u in users if len(whole[u]) > THIN_ITEMS]
    away = {u for u in thin_users if at[u] - whole[u][THIN_ITEMS - 1]["ts"] > AWAY_S}
    folds = np.random.default_rng(seed).permutation(len(thin_users)) % THIN_FOLDS
    if len(thin_users) >= MIN_VALIDATION_USERS:
        for f in range(THIN_FOLDS):
            fold = [u for u, g in zip(thin_users, folds.tolist()) if g == f]
            keep = ~np.isin(train.user, fold) | first_events(train, set(fold), THIN_ITEMS)
            fold_model = HybridModel(config).fit(train.subset(keep), item_vectors, item_windows, n_users=n_users)
            searched["thin"].append(request_scores(fold_model, [whole[u][:THIN_ITEMS] for u in fold],
                                                   [whole[u][THIN_ITEMS]["item"] for u in fold],
                                                   [whole[u][THIN_ITEMS]["ts"] for u in fold], k))
            back = [u for u in fold if u in away]
            if back:
                searched["away"].append(request_scores(fold_model, [whole[u][:THIN_ITEMS] for u in back],
                                                       [targets[u] for u in back], [at[u] for u in back], k))
    if len(away) < MIN_VALIDATION_USERS:
        searched["away"] = []
    for bucket in BUCKETS:
        if not searched[bucket]:
            result[bucket] = defaults[bucket]
            continue
        sources, t = _stacked(searched[bucket])
        w, _ = search_weights(model, sources, t, bucket, defaults[bucket], k=k)
        hr, ndcg = hit_ndcg(rank_of(model.blend(sources, [bucket] * len(t), {bucket: w}), t), k)
        result[bucket], validation[bucket] = w, {"hr": hr, "ndcg": ndcg, "users": float(len(t))}
    return Choice(result, True, validation, len(users))


def request_scores(model: HybridModel, histories: Sequence[Sequence[Mapping]], targets: Sequence[int],
                   at: Sequence[float], k: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The requests of ``histories``, each asked just before its target's time ``at``, as the API answers
    them: one row per request over its candidates (:meth:`HybridModel.candidates`), every source's z-scores
    there, rows padded to the longest with ineligible columns; and each target's column, a padding one (ranked
    last) when it is no candidate. Memory grows with the candidates (a few thousand), not the catalog: whole
    catalog rows held 2.8 GB for 5,000 requests at 10,000 items (``bench/users_tuning.py``), 28 GB at 100,000."""
    nows = [request_time(h, t) for h, t in zip(histories, at)]
    hist = [model.history(h, t) for h, t in zip(histories, nows)]
    drawn = [model.candidates(h, t, k) for h, t in zip(hist, nows)]
    width = max((len(d[0]) for d in drawn if d is not None), default=0) + 1
    out = {s: np.zeros((len(hist), width), dtype=np.float32) for s in (*SOURCES, "penalty")}
    out["eligible"] = np.zeros((len(hist), width), dtype=bool)
    columns = np.full(len(hist), width - 1, dtype=np.int64)
    for r, (h, d, target) in enumerate(zip(hist, drawn, targets)):
        if d is None:
            continue
        items, z = d
        for s in SOURCES:
            out[s][r, :len(items)] = z[s]
        if len(h.dismissed):
            out["penalty"][r, :len(items)] = model.dismiss_push(h.dismissed, items)
        out["eligible"][r, :len(items)] = True
        found = np.flatnonzero(items == target)
        if len(found):
            columns[r] = found[0]
    return out, columns


def _stacked(parts: Sequence[tuple[dict[str, np.ndarray], np.ndarray]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """:func:`request_scores` parts as one, the narrower ones padded with ineligible columns."""
    width = max(p[0]["eligible"].shape[1] for p in parts)
    sources = {key: np.concatenate([np.pad(p[0][key], ((0, 0), (0, width - p[0][key].shape[1]))) for p in parts])
               for key in parts[0][0]}
    return sources, np.concatenate([p[1] for p in parts])


#: What :func:`tune` tries, one parameter at a time, from :class:`HybridConfig`'s defaults.
TUNE_SPACE: dict[str, tuple] = {
    "recent_events": (3.0, 5.0, None),
    "sequence_window": (1, 5),
    "trend_half_life_days": (1.0, 14.0),
    "history_half_life_days": (7.0, None),
    "regularization": (0.01, 0.5),
    "alpha": (1.0, 8.0),
    "knn_k": (100,),
}
# content_power stays 4 by design, not by search: a soft maximum over the history items, so each interest
# pulls its own neighbours (1 would be the centroid). MovieLens genres are too coarse to measure the difference
# (validation NDCG moves by 0.002 between 1, 4 and 16); tests/test_hybrid.py shows it on two interests.


def tune(events: EventLog, item_vectors: np.ndarray, space: Mapping[str, Sequence] | None = None,
         base: HybridConfig | None = None, log: Callable[[str], None] | None = None,
         **kwargs) -> tuple[HybridConfig, Choice, list[tuple[dict, float]]]:
    """Hyperparameters by coordinate search on the validation holdout of :func:`choose_weights`: each parameter
    of ``space`` in turn, keeping a value when it raises the buckets' validation NDCG@10, averaged over their users."""
    space = TUNE_SPACE if space is None else space
    best_cfg = base or HybridConfig()

    def score(c: Choice) -> float:  # each bucket counts by its validation users, as the served requests do
        if not c.validation:
            return -1.0
        return float(np.average([v["ndcg"] for v in c.validation.values()],
                                weights=[v["users"] for v in c.validation.values()]))

    best = choose_weights(events, item_vectors, config=best_cfg, **kwargs)
    tried = [({}, score(best))]
    if not best.chosen:
        return best_cfg, best, tried
    for name, values in space.items():
        for value in values:
            cfg = replace(best_cfg, **{name: value})
            choice = choose_weights(events, item_vectors, config=cfg, **kwargs)
            tried.append(({name: value}, score(choice)))
            if log:
                log(f"  {name}={value}: validation NDCG@10 {score(choice):.4f} (best {score(best):.4f})")
            if score(choice) > score(best):
                best_cfg, best = cfg, choice
    return best_cfg, best, tried
