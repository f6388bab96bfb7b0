"""How readable the demo's served topics are, before and after distinctive naming, side by side.

Tags the 523 demo photos as `make demo` serves them (backbone + the shipped
``groups`` head, whose labels read as its ``names.json`` says), fits the
served topic model (fixed seed), and prints for the same fit:

* the names "before": each topic's 3 largest tag weights (probability-weighted
  loadings), as topics were named until distinctive names;
* the names "after": what the API serves now;
* NPMI coherence of each side's top-5 tags (mean, worst 5), distinct names,
  and the most names a single tag appears in;
* same-place recall@10 and same-group precision@10, with and without the head.

The baseline ("before") fit has near-duplicate refitting switched off, as it was.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from indexer.evaluation import category_precision, landmark_recall, neighbours
from indexer.interpretability import npmi, tag_sets
from recommender.model.exported import heads_dir
from recommender.model.tagger import Tagger
from recommender.model.topics import TopicModel
from recommender.model.vocabulary import display_names
from recommender.settings import Settings

from report import DEMO

HEADS = DEMO.parent / "heads"


def before(model: TopicModel, tags: list, features: np.ndarray) -> tuple[list[str], list[list[str]]]:
    """Names and top-5 tags as the largest probability-weighted loadings (the naming this replaced)."""
    loadings = model._weights(model._input(tags, features)).T @ model.tag_matrix(tags)
    names, tops, used = [], [], set()
    for i, row in enumerate(loadings):
        order = [j for j in np.argsort(-row)[:5] if row[j] > 0]
        top = [model.vocabulary.labels[j] for j in order]
        name = ", ".join(top[:3])
        names.append(f"{name} ({i})" if name in used else name)
        used.add(name)
        tops.append(top)
    return names, tops


def most_names_per_tag(name_tags: list[list[str]]) -> int:
    return max(Counter(t for tags in name_tags for t in set(tags)).values(), default=0)


def main() -> None:
    with (DEMO / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    data = Path(tempfile.mkdtemp())
    shutil.copytree(HEADS, heads_dir(data))
    tagger = Tagger(Settings.from_env().with_(data_dir=data))
    results = dict(tagger.tag((r["id"], DEMO / r["image"]) for r in rows))
    tags = [results[r["id"]].labels for r in rows]
    features = np.stack([results[r["id"]].features for r in rows])
    head_labels = set(display_names(heads_dir(data)))
    plain = [[(t, w) for t, w in row if t not in head_labels] for row in tags]
    groups = np.array([r["category"] for r in rows])
    landmarks = np.array([r["landmark"] for r in rows])
    items = tag_sets(tags)

    old = TopicModel(seed=0, duplicate_threshold=2.0)
    old_vectors = old.fit(tags, features)
    old_names, old_tops = before(old, tags, features)
    new = TopicModel(seed=0, display=display_names(heads_dir(data)))
    new_vectors = new.fit(tags, features)
    new_tops = [[t for t, _ in topic.top_tags[:5]] for topic in new.topics]
    print(f"{len(rows)} photos with the demo head; {old.n_topics} topics before, {new.n_topics} after")
    for refit in new.refits:
        print(f"  refitted: {refit}")
    print(f"\n{'#':>3s}  {'before':48s} after")
    for i in range(max(len(old_names), len(new.topics))):
        left = old_names[i] if i < len(old_names) else ""
        right = f"{new.topics[i].id:2d} {new.topics[i].name}" if i < len(new.topics) else ""
        print(f"{i:3d}  {left:48s} {right}")
    for label, tops, names, name_tags in (
        ("before", old_tops, old_names, [[t.strip() for t in n.split(",")] for n in old_names]),
        ("after", new_tops, [t.name for t in new.topics], [list(t.name_tags) for t in new.topics]),
    ):
        scores = sorted(npmi(tops, items))
        print(f"{label:7s} NPMI mean {np.mean(scores):6.3f}  worst 5 {np.mean(scores[:5]):6.3f}  "
              f"distinct names {len(set(names))}/{len(names)}  most names per tag {most_names_per_tag(name_tags)}")
    print("\nretrieval (k=10)                 recall  precision")
    for label, vectors in (("with the head, before", old_vectors), ("with the head, after", new_vectors),
                           ("backbone only, before", TopicModel(seed=0, duplicate_threshold=2.0).fit(plain, features)),
                           ("backbone only, after", TopicModel(seed=0).fit(plain, features))):
        top = neighbours(vectors)
        print(f"{label:32s} {landmark_recall(top, landmarks):6.3f} {category_precision(top, groups):10.3f}")


if __name__ == "__main__":
    main()
