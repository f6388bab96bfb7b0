"""Readable topics: which tags describe a topic, which name it, and which topics are the same theme.

A topic's **tag profile** is how often the items that load on it carry each tag
(presence, weighted by the item's topic weight). Presence, not probability:
a custom head's label comes with probability ~1 and a backbone label with 0.1,
so probability-weighted profiles were led by the head's coarse labels
("landmark" led six topics). Presence also matches what coherence (NPMI) is
measured on: tags that occur on the same items.

The **top tags** rank a topic's tags by relevance (Sievert and Shirley, 2014):
``RELEVANCE * log p(tag | topic) + (1 - RELEVANCE) * log lift``, lift being
``p(tag | topic) / p(tag)``: frequent in the topic and rarer elsewhere.

The **name** takes the most distinctive tags (relevance again, weighted more towards
lift, among tags carried at least ``MIN_SHARE`` as often as the topic's most frequent
one), under two rules that make names tell topics apart: a tag that is among the leading tags of more than
``MAX_TOPICS_PER_TAG`` topics names none of them (unless a topic has no other), and
a tag names at most ``MAX_TOPICS_PER_TAG`` topics. No two topics share a name.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import numpy as np

RELEVANCE = 0.6
#: Names weigh distinctiveness more than the top tags do: lift ** (1 - NAME_RELEVANCE) * p ** NAME_RELEVANCE.
NAME_RELEVANCE = 0.4
NAME_TAGS = 2
MAX_TOPICS_PER_TAG = 2
#: A tag names a topic only if the topic's items carry it at least this often, relative to its leading tag.
MIN_SHARE = 0.25
LEADING = 3  # a tag "leads" a topic when it is among its LEADING most frequent tags
#: Topics whose tag profiles have a cosine above this are near-duplicates (refitted with fewer topics).
NEAR_DUPLICATE = 0.9


def tag_profiles(weights: np.ndarray, presence: np.ndarray) -> np.ndarray:
    """topics x tags: the items' topic weights times which tags they carry (0/1)."""
    return (weights.T @ presence).astype(np.float32)


def _conditional(profiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p(tag | topic) and p(tag) over the whole catalog."""
    p_given = profiles / np.maximum(profiles.sum(axis=1, keepdims=True), 1e-12)
    p_tag = profiles.sum(axis=0) / max(float(profiles.sum()), 1e-12)
    return p_given, p_tag


def relevance(profiles: np.ndarray) -> np.ndarray:
    """How well each tag describes each topic (higher is better; -inf where no item carries it)."""
    p_given, p_tag = _conditional(profiles)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = RELEVANCE * np.log(p_given) + (1 - RELEVANCE) * np.log(p_given / p_tag)
    return np.where(profiles > 0, score, -np.inf)


def top_tags(profiles: np.ndarray, n: int) -> list[list[tuple[int, float]]]:
    """Each topic's ``n`` most relevant tags as (column, share of the topic's items' tags)."""
    p_given, _ = _conditional(profiles)
    rel = relevance(profiles)
    out = []
    for k in range(len(profiles)):
        order = [j for j in np.argsort(-rel[k], kind="stable")[:n] if np.isfinite(rel[k, j])]
        out.append([(int(j), round(float(p_given[k, j]), 4)) for j in order])
    return out


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of every row of ``a`` with every row of ``b``."""
    na = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    nb = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return na @ nb.T


def near_duplicates(profiles: np.ndarray, threshold: float = NEAR_DUPLICATE) -> list[tuple[int, int, float]]:
    """Pairs of topics (i < j) whose tag profiles have a cosine above ``threshold``, most similar first."""
    c = cosines(profiles, profiles)
    pairs = [(i, j, float(c[i, j])) for i in range(len(c)) for j in range(i + 1, len(c)) if c[i, j] > threshold]
    return sorted(pairs, key=lambda p: -p[2])


def duplicate_groups(profiles: np.ndarray, threshold: float = NEAR_DUPLICATE) -> list[int]:
    """For each topic, the lowest topic it is a near-duplicate of, through any chain (itself when none)."""
    group = list(range(len(profiles)))

    def root(i: int) -> int:
        while group[i] != i:
            i = group[i]
        return i

    for i, j, _ in near_duplicates(profiles, threshold):
        a, b = sorted((root(i), root(j)))
        group[b] = a
    return [root(i) for i in range(len(profiles))]


def readable(label: str) -> str:
    """A label as a shopper reads it: lower case, without ImageNet's glosses ("kite (bird of prey)" -> "kite")."""
    for cut in (" (", " / ", ","):
        label = label.split(cut)[0]
    return " ".join(label.replace("_", " ").lower().split())


def name_topics(
    profiles: np.ndarray, labels: Sequence[str], display: Callable[[str], str],
    fixed: Mapping[int, tuple[str, tuple[str, ...]]] | None = None, taken: Sequence[str] = (),
) -> list[tuple[str, tuple[str, ...]]]:
    """Each topic's (name, the labels it is made of), distinctive and unique.

    ``fixed`` topics keep the (name, labels) given (a topic matched to the previous
    version's); their labels count towards each tag's limit. ``taken`` names (a
    merchandiser's renames) are not handed out again.
    """
    fixed = dict(fixed or {})
    p_given, p_tag = _conditional(profiles)
    leads = Counter(int(j) for row in p_given for j in np.argsort(-row, kind="stable")[:LEADING] if row[j] > 0)
    uses = Counter(label for _, parts in fixed.values() for label in parts)
    used = {name for name, _ in fixed.values()} | set(taken)
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = np.where(profiles > 0, p_given / p_tag, 0.0)
        score = np.where(profiles > 0, NAME_RELEVANCE * np.log(p_given) + (1 - NAME_RELEVANCE) * np.log(lift), -np.inf)
    names: dict[int, tuple[str, tuple[str, ...]]] = dict(fixed)
    # Topics with the most distinctive leading tag choose first: they have the most to lose.
    free = [k for k in range(len(profiles)) if k not in fixed]
    for k in sorted(free, key=lambda k: -float(lift[k].max(initial=0.0))):
        floor = MIN_SHARE * float(p_given[k].max(initial=0.0))
        ranked = [int(j) for j in np.argsort(-score[k], kind="stable") if lift[k, j] > 0 and p_given[k, j] >= floor]
        names[k] = _pick(k, [j for j in ranked if leads[j] <= MAX_TOPICS_PER_TAG], labels, display, uses, used)
        if not names[k][1]:  # every tag it has leads many topics: better one of them than "topic 7"
            names[k] = _pick(k, ranked, labels, display, uses, used)
        used.add(names[k][0])
        uses.update(names[k][1])
    return [names[k] for k in range(len(profiles))]


def _pick(k: int, candidates: list[int], labels: Sequence[str], display: Callable[[str], str],
          uses: Counter, used: set[str]) -> tuple[str, tuple[str, ...]]:
    parts: list[str] = []
    words: list[str] = []
    for j in candidates:
        label = labels[j]
        word = display(label)
        if uses[label] >= MAX_TOPICS_PER_TAG or not word or word in words:
            continue
        trial = ", ".join([*words, word])
        if len(words) + 1 == NAME_TAGS and trial in used:
            continue
        parts.append(label)
        words.append(word)
        if len(words) == NAME_TAGS:
            break
    name = ", ".join(words) or f"topic {k}"
    if name in used:  # only when the catalog has too few distinctive tags left
        name = f"{name} ({k})"
    return name, tuple(parts)
