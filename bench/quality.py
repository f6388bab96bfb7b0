"""Retrieval quality of each representation on the demo catalog, side by side.

Tags the 523 demo photos with the real backbone, then for each representation
ranks every item's 10 nearest neighbours by cosine and prints:

* same-place recall@10: for photos whose ``landmark`` is set, the share of the
  other photos of the same place found in the top 10;
* same-group precision@10: the share of the top 10 in the item's category.

The baseline is the raw 1280-d features (no NMF); the serving representation
("mix, served") must lose nothing against it. Topic models are fitted with 3
seeds and the medians printed, since one NMF run can be lucky.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import warnings
from collections.abc import Callable

import numpy as np
from sklearn.decomposition import NMF

from indexer.evaluation import category_precision, landmark_recall, neighbours
from recommender.model.tagger import Tagger
from recommender.model.topics import TopicModel
from recommender.settings import Settings

from report import DEMO



def scores(vectors: np.ndarray, groups: np.ndarray, landmarks: np.ndarray) -> tuple[float, float]:
    """(same-place recall@10, same-group precision@10) under cosine similarity."""
    top = neighbours(vectors)
    return landmark_recall(top, landmarks), category_precision(top, groups)


def naive_nmf(x: np.ndarray, seed: int) -> np.ndarray:
    """Plain NMF weights, straight into cosine: what one would try first."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return NMF(30, init="nndsvda", max_iter=1000, random_state=seed).fit_transform(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()

    with (DEMO / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    tagger = Tagger(Settings.from_env(), with_heads=False)
    results = dict(tagger.tag((r["id"], DEMO / r["image"]) for r in rows))
    tags = [results[r["id"]].labels for r in rows]
    features = np.stack([results[r["id"]].features for r in rows])
    groups = np.array([r["category"] for r in rows])
    landmarks = np.array([r["landmark"] for r in rows])
    tag_matrix = TopicModel().tag_matrix(tags)
    queries = sum(1 for p in landmarks if p and (landmarks == p).sum() > 1)
    print(f"{len(rows)} photos, {queries} same-place queries, {len(set(groups))} groups; k=10")

    def topic_model(representation: str) -> Callable[[int], np.ndarray]:
        return lambda seed: TopicModel(representation=representation, seed=seed).fit(tags, features)

    fixed: dict[str, np.ndarray] = {"raw features (1280-d, baseline)": features, "top-5 tag probabilities": tag_matrix}
    seeded: dict[str, Callable[[int], np.ndarray]] = {
        "NMF on tags, plain": lambda seed: naive_nmf(tag_matrix, seed),
        "NMF on features, plain": lambda seed: naive_nmf(features, seed),
        "NMF on tags, served post-processing": topic_model("tags"),
        "NMF on features, served post-processing": topic_model("features"),
        "mix (features + tags), served": topic_model("mix"),
    }
    table = {name: scores(x, groups, landmarks) for name, x in fixed.items()}
    for name, fit in seeded.items():
        runs = [scores(fit(seed), groups, landmarks) for seed in range(args.seeds)]
        table[name] = (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
    base_recall, base_precision = table["raw features (1280-d, baseline)"]
    print(f"{'representation':42s} {'recall@10':>10s} {'ratio':>6s} {'prec@10':>8s} {'ratio':>6s}")
    for name, (recall, precision) in table.items():
        print(f"{name:42s} {recall:10.3f} {recall / base_recall:6.2f} {precision:8.3f} {precision / base_precision:6.2f}")


if __name__ == "__main__":
    main()
