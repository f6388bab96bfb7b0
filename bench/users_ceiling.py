"""How far the blend's weights are from the best its sources allow, for ``bench/users.py --ceiling``.

The "first 5 -> last item" column is the one where Vistas does not lead popularity by a wide margin. This asks
whether better weights could: the product's own weight search (:func:`search_weights`, coordinate ascent over
``WEIGHT_GRID``) run on the test targets themselves, per bucket, from the weights ``vistas eval --users`` chose
and from the defaults. No served weight can see its test targets, so the result bounds what any choice of
weights over today's sources reaches on this column: a new signal, not new weights, is what would move it."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from recommender.users.collaborative import EventLog
from recommender.users.config import DEFAULT_WEIGHTS, HybridConfig
from recommender.users.hybrid import HybridModel
from recommender.users.tuning import hit_ndcg, rank_of, search_weights, user_histories

from users_eval import CUT, K, cut_folds, request_times


def ceiling(train: EventLog, test: Mapping[int, int], test_at: Mapping[int, float], vectors: np.ndarray,
            n_users: int, config: HybridConfig, chosen: Mapping[str, Mapping[str, float]],
            popularity: tuple[float, float] | None = None) -> None:
    """Print HR@10 / NDCG@10 of the "first 5 -> last item" column with the chosen weights and with weights
    searched on its test targets, over the folds of the cut columns (:func:`cut_folds`: each user scored by a
    model that saw no more of them than their first ``CUT`` interactions)."""
    first = user_histories(train, test, CUT)
    nows = request_times(first, test_at)
    parts, buckets, targets, model = [], [], [], None
    for fold, fold_train in cut_folds(train, test):
        fold = [u for u in fold if first.get(u)]
        model = HybridModel(config).fit(fold_train, vectors, n_users=n_users)
        hist = [model.history(first[u], nows[u]) for u in fold]
        parts.append(model.source_scores(hist, [nows[u] for u in fold]))
        buckets += [model.bucket(h) for h in hist]
        targets += [test[u] for u in fold]
    assert model is not None
    sources = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
    targets_ = np.array(targets)
    buckets_ = np.array(buckets)

    def measured(weights: Mapping[str, Mapping[str, float]], rows: np.ndarray | slice = slice(None)) -> tuple:
        part = {key: v[rows] for key, v in sources.items()}
        return hit_ndcg(rank_of(model.blend(part, buckets_[rows].tolist(), weights), targets_[rows]), K)

    searched: dict[str, dict[str, float]] = {}
    for bucket in sorted(set(buckets)):
        rows = np.flatnonzero(buckets_ == bucket)
        part = {key: v[rows] for key, v in sources.items()}
        tries = [search_weights(model, part, targets_[rows], bucket, start[bucket], k=K)
                 for start in (chosen, DEFAULT_WEIGHTS)]
        searched[bucket] = max(tries, key=lambda t: t[1])[0]
        print(f"  {bucket:<5} {len(rows):4d} users: chosen on validation {_figure(measured(chosen, rows))}, "
              f"searched on these targets {_figure(measured(searched, rows))}  {searched[bucket]}")
    for label, weights in (("chosen on validation", chosen), ("searched on the test targets", searched)):
        hr, ndcg = measured(weights)
        ratio = f" ({hr / popularity[0]:.2f} / {ndcg / popularity[1]:.2f} x popularity)" if popularity else ""
        print(f"  weights {label:<29} HR@10 {hr:.4f}  NDCG@10 {ndcg:.4f}{ratio}")


def _figure(hr_ndcg: tuple[float, float]) -> str:
    return f"{hr_ndcg[0]:.4f} / {hr_ndcg[1]:.4f}"
