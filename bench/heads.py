"""Time to train a custom label head on 10,000 stored feature vectors, against a logistic regression.

Synthetic 1280-d features (50 labels, non-negative like pooled CNN features,
imbalanced) stand in for a catalog's stored features. Prints the head's
training time (target: under a minute on CPU here), its held-out accuracy,
and both as ratios to a logistic regression fitted on the same split in the
same run (`train_head` fits that baseline itself and reports it).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.linear_model import LogisticRegression

from indexer.heads import train_head


def synthetic(n: int, labels: int, dim: int, seed: int) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(labels, 0.7))  # imbalanced label frequencies
    y = rng.choice(labels, size=n, p=weights)
    centres = rng.gamma(0.5, 1.0, size=(labels, dim))
    x = np.maximum(centres[y] + rng.normal(0, 3.0, size=(n, dim)), 0).astype(np.float32)
    return x, [f"label-{i}" for i in y]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--labels", type=int, default=50)
    args = parser.parse_args()
    x, y = synthetic(args.items, args.labels, 1280, seed=0)

    started = time.perf_counter()
    _, report = train_head("bench", x, y, seed=0)
    head_seconds = time.perf_counter() - started

    started = time.perf_counter()
    standardised = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    LogisticRegression(max_iter=500, class_weight="balanced").fit(standardised, y)
    baseline_seconds = time.perf_counter() - started

    print(f"{args.items} vectors x 1280-d, {args.labels} labels")
    print(f"head training (incl. its own baseline fit): {head_seconds:6.1f}s   target < 60s")
    print(f"logistic regression alone:                  {baseline_seconds:6.1f}s")
    print(f"time ratio head / logistic regression:      {head_seconds / baseline_seconds:6.2f}")
    print(f"held-out accuracy: head {report.heldout_accuracy:.3f}, logistic regression "
          f"{report.logistic_regression_accuracy:.3f}, ratio {report.heldout_accuracy / report.logistic_regression_accuracy:.2f}"
          f" ({report.epochs} epochs)")


if __name__ == "__main__":
    main()
