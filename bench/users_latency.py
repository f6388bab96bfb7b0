"""The pure user model's time per ``recommend`` call, in process, against scoring every item densely.

The hybrid (``recommender/users/hybrid.py``) is fitted on synthetic clustered events (``users_data.synthetic``:
100k users, 1M events, 100k items by default, a quarter of them sales with windows), then answers histories
of 5, 10 and 20 clicks. Two ways, interleaved call by call so a busy machine slows both alike:

* ``recommend``: what the API calls: candidates per source, every source scored on their union only;
* ``dense``: the reference: every source scored over every item (``source_scores``), blended, top ``k``.

Prints the median and p99 of each, their ratio, and how much of the dense top 10 ``recommend`` returns (at
small catalogs and narrow histories it is all of it; content candidates are approximate beyond 5k items).
One thread. Also runs on an older checkout (``PYTHONPATH=that checkout``), where ``recommend`` was dense.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from recommender.users.config import HybridConfig  # noqa: E402
from recommender.users.hybrid import HybridModel  # noqa: E402

from users_data import synthetic  # noqa: E402

K = 10


def dense_top(model: HybridModel, events: list[dict], k: int, now: float) -> list[int]:
    """Every source over every item, blended, top ``k`` (seen items excluded)."""
    h = model.history(events, now)
    scores = model.blend(model.source_scores([h], [now]), [model.bucket(h)])[0]
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top], kind="stable")].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=300, help="calls of each way")
    args = parser.parse_args()
    threadpool_limits(1)
    t = time.perf_counter()
    data = synthetic(args.users, args.events, args.items)
    model = HybridModel(HybridConfig()).fit(data.events, data.vectors, data.windows, n_users=args.users, now=data.now)
    print(f"synthetic {args.users} users x {args.events} events x {args.items} items, fitted in "
          f"{time.perf_counter() - t:.1f}s")
    rng = np.random.default_rng(1)
    histories = [data.history(rng, args.users, (5, 10, 20)[i % 3]) for i in range(args.calls)]
    now = data.now
    model.recommend(histories[0], K, now=now)  # builds what a loaded model builds once
    dense_top(model, histories[0], K, now)
    times: dict[str, list[float]] = {"recommend": [], "dense": []}
    overlap = []
    for events in histories:
        t = time.perf_counter()
        got = [r.item for r in model.recommend(events, K, now=now)]
        times["recommend"].append(time.perf_counter() - t)
        t = time.perf_counter()
        want = dense_top(model, events, K, now)
        times["dense"].append(time.perf_counter() - t)
        overlap.append(len(set(got) & set(want)) / K)
    median = {w: float(np.median(v)) * 1000 for w, v in times.items()}
    for way, values in times.items():
        print(f"{way:<10} median {median[way]:.2f} ms  p99 {np.percentile(values, 99) * 1000:.2f} ms "
              f"({len(values)} calls, histories of 5, 10 and 20 clicks)")
    print(f"recommend / dense: {median['recommend'] / median['dense']:.3f} of the time "
          f"({median['dense'] / median['recommend']:.1f}x faster); the dense top {K} returned: "
          f"{np.mean(overlap):.3f} (worst call {min(overlap):.1f})")


if __name__ == "__main__":
    main()
