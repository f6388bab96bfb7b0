"""Topics that stay put across reindexes: the new model's topics matched to the previous version's.

NMF numbers its topics arbitrarily, and a refit on a slightly different catalog
reorders them, so "topic 7" would mean beaches in one version and guitars in the
next, and a merchandiser's rename would land on the wrong theme. A reindex
therefore matches the new topics to the previous ones by their tag profiles
(one-to-one, maximising the summed cosine: the Hungarian method). A pair whose
cosine reaches ``MATCH_MIN`` is the same theme: the new topic takes the old id
and name. The other new topics get ids never used before in this lineage and
fresh names around the kept ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from recommender.model.naming import cosines

#: Cosine of two topics' tag profiles from which they are the same theme (a rename follows it).
MATCH_MIN = 0.5


@dataclass
class TopicChanges:
    """What a reindex did to the topics: (id, name) pairs, for the log and the report."""

    kept: list[tuple[int, str]] = field(default_factory=list)
    new: list[tuple[int, str]] = field(default_factory=list)
    gone: list[tuple[int, str]] = field(default_factory=list)
    renamed_kept: list[int] = field(default_factory=list)  # renamed topics whose match held

    def summary(self) -> str:
        words = f"{len(self.kept)} matched the served version's (same id), {len(self.new)} new, {len(self.gone)} gone"
        if self.new:
            words += "; new: " + ", ".join(f"{i} {n!r}" for i, n in self.new)
        if self.gone:
            words += "; gone: " + ", ".join(f"{i} {n!r}" for i, n in self.gone)
        if self.renamed_kept:
            words += f"; {len(self.renamed_kept)} renamed topics keep their names"
        return words

    def to_json(self) -> dict:
        return {"kept": [i for i, _ in self.kept], "new": [{"id": i, "name": n} for i, n in self.new],
                "gone": [{"id": i, "name": n} for i, n in self.gone], "renamed_kept": self.renamed_kept}


def aligned(a: np.ndarray, a_labels: Sequence[str], b: np.ndarray, b_labels: Sequence[str]) -> np.ndarray:
    """Cosines of ``a``'s rows with ``b``'s, over the union of their tag vocabularies."""
    union = {label: i for i, label in enumerate(dict.fromkeys([*a_labels, *b_labels]))}
    wide_a = np.zeros((len(a), len(union)), dtype=np.float64)
    wide_b = np.zeros((len(b), len(union)), dtype=np.float64)
    wide_a[:, [union[x] for x in a_labels[:a.shape[1]]]] = a[:, :len(a_labels)]
    wide_b[:, [union[x] for x in b_labels[:b.shape[1]]]] = b[:, :len(b_labels)]
    return cosines(wide_a, wide_b)


def match(new: np.ndarray, new_labels: Sequence[str], old: np.ndarray, old_labels: Sequence[str],
          minimum: float = MATCH_MIN) -> dict[int, int]:
    """new topic row -> old topic row, one-to-one, for the pairs that are the same theme."""
    if not len(new) or not len(old):
        return {}
    c = aligned(new, new_labels, old, old_labels)
    rows, cols = linear_sum_assignment(-c)
    return {int(r): int(k) for r, k in zip(rows, cols) if c[r, k] >= minimum}


def profile_of_top_tags(top_tags: Sequence[Sequence[tuple[str, float]]], labels: Sequence[str]) -> np.ndarray:
    """A tag profile from each topic's top tags only (a model saved before profiles were kept)."""
    index = {label: i for i, label in enumerate(labels)}
    out = np.zeros((len(top_tags), len(labels)), dtype=np.float32)
    for k, tags in enumerate(top_tags):
        for tag, weight in tags:
            if tag in index:
                out[k, index[tag]] = weight
    return out


def carry_over(new_ids: int, pairs: Mapping[int, int], old_ids: Sequence[int], next_id: int) -> tuple[list[int], int]:
    """The new topics' ids: the matched old topic's, else a fresh one; and the next fresh id."""
    ids = []
    for k in range(new_ids):
        if k in pairs:
            ids.append(old_ids[pairs[k]])
        else:
            ids.append(next_id)
            next_id += 1
    return ids, next_id
