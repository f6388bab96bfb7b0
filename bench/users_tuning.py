"""``vistas eval --users`` at catalog scale: the time and memory of choosing the blend weights, on synthetic
clustered events (``users_data.synthetic``), one thread.

The figure: scoring the validation requests (the "full" bucket's 5,000 users, each user's last event held out)
as ``choose_weights`` does now, each request over its candidates (``request_scores``, as the API answers it),
against the whole-catalog scoring it did before (``HybridModel.source_scores``: every source over every item),
in the same run on the same requests. Memory is the peak of what the call allocates (``tracemalloc``, which
numpy reports its buffers to); time is measured in a second, untraced call. The whole-catalog scoring runs only
where it fits in ``--dense-max-gb``; beyond, its peak is the measured bytes per request and item times the size.
Then the whole ``choose_weights`` (``eval --users --quick``) once, with its peak."""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from collections.abc import Callable

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from recommender.users.config import HybridConfig  # noqa: E402
from recommender.users.hybrid import HybridModel  # noqa: E402
from recommender.users.tuning import (  # noqa: E402
    choose_weights, request_scores, request_time, split_last, user_histories,
)

from users_data import synthetic  # noqa: E402

GB = 1e9


def measured(call: Callable[[], object]) -> tuple[float, float]:
    """(seconds of an untraced call, peak bytes a traced call allocates)."""
    tracemalloc.start()
    call()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    start = time.perf_counter()
    call()
    return time.perf_counter() - start, float(peak)


def one_size(n_items: int, n_users: int, n_events: int, requests: int, dense_max_gb: float) -> float | None:
    """Print one catalog size's figures; the whole-catalog bytes per request and item when it ran."""
    data = synthetic(n_users, n_events, n_items)
    config = HybridConfig()
    train, targets, at = split_last(data.events)
    chosen = np.random.default_rng(0).choice(sorted(targets), min(requests, len(targets)), replace=False)
    users = sorted(chosen.tolist())
    whole = user_histories(train, users)
    histories, wanted, times = [whole[u] for u in users], [targets[u] for u in users], [at[u] for u in users]
    start = time.perf_counter()
    model = HybridModel(config).fit(train, data.vectors, data.windows, n_users=n_users)
    print(f"{n_items} items, {n_users} users, {n_events} events: fit {time.perf_counter() - start:.1f}s; "
          f"{len(users)} validation requests")
    seconds, peak = measured(lambda: request_scores(model, histories, wanted, times, 10))
    print(f"  candidates (now):    {seconds:6.1f}s  peak {peak / GB:6.2f} GB")
    per_cell = None
    nows = [request_time(h, t) for h, t in zip(histories, times)]

    def dense() -> None:
        model.source_scores([model.history(h, t) for h, t in zip(histories, nows)], nows)

    if len(users) * n_items * 48 / GB <= dense_max_gb:
        dense_seconds, dense_peak = measured(dense)
        per_cell = dense_peak / (len(users) * n_items)
        print(f"  whole catalog (was): {dense_seconds:6.1f}s  peak {dense_peak / GB:6.2f} GB  "
              f"({per_cell:.0f} bytes per request and item)")
        print(f"  candidates / whole catalog: {seconds / dense_seconds:.2f} of the time, "
              f"{peak / dense_peak:.3f} of the memory")
    else:
        print(f"  whole catalog (was): not run, over --dense-max-gb {dense_max_gb:g}")
    start = time.perf_counter()
    tracemalloc.start()
    choice = choose_weights(data.events, data.vectors, data.windows, config=config, n_users=n_users)
    total_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    counts = ", ".join(f"{b} {v['users']:.0f}" for b, v in choice.validation.items())
    print(f"  choose_weights (eval --users --quick, traced): {time.perf_counter() - start:.0f}s, peak "
          f"{total_peak / GB:.2f} GB; validation requests: {counts}")
    return per_cell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000:20000:200000,100000:100000:1000000",
                        help="comma-separated ITEMS:USERS:EVENTS")
    parser.add_argument("--requests", type=int, default=5000, help="validation requests (choose_weights' max_users)")
    parser.add_argument("--dense-max-gb", type=float, default=8.0,
                        help="run the whole-catalog scoring only while it needs at most this much")
    args = parser.parse_args()
    per_cell = None
    for size in args.sizes.split(","):
        n_items, n_users, n_events = (int(x) for x in size.split(":"))
        found = one_size(n_items, n_users, n_events, args.requests, args.dense_max_gb)
        if found is None and per_cell is not None:
            print(f"  whole catalog would peak at about {per_cell * args.requests * n_items / GB:.0f} GB "
                  f"({per_cell:.0f} bytes per request and item, as measured above)")
        per_cell = found or per_cell


if __name__ == "__main__":
    main()
