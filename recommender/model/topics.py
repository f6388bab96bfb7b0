"""The topic model: NMF over what the backbone saw, 30 readable topics per catalog.

Three inputs are supported, as in the original study:

* ``tags``: the item x tag matrix (top-5 label probabilities + given tags);
* ``features``: the pooled last-layer features;
* ``mix`` (the default): both side by side, ``[l2(features), w * l2(tags)]``.

``mix`` is what serves recommendations: the feature half keeps the retrieval
quality of the raw features, the tag half pulls items with the same labels
together (``bench/quality.py`` measures all three). A topic is named by the
tags that set it apart (``recommender.model.naming``): "sandbar, beach". Near-duplicate
topics (the same tags) make the model refit with fewer; ``VISTAS_TOPICS`` is the upper bound.
Topic ids outlive a refit: a reindex matches the new topics to the previous version's
(``recommender.model.identity``), and a matched topic keeps its id and name.

Topic weights are then divided by their spread over the catalog (so a rare
topic counts as much as a common one) and square-rooted (so one dominant topic
does not drown the rest) before the L2 normalisation that makes inner product
a cosine. Without those two steps NMF loses a quarter of same-place recall.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import joblib
import numpy as np
from sklearn.decomposition import NMF
from sklearn.decomposition._cdnmf_fast import _update_cdnmf_fast  # the solver nmf.transform runs
from sklearn.exceptions import ConvergenceWarning

from recommender.model import identity, naming
from recommender.model.identity import TopicChanges
from recommender.model.vocabulary import TagVocabulary, imagenet_labels
from recommender.ranking import unit
from recommender.settings import Settings
from recommender.store import Store
from recommender.versions import MODEL, VersionStore

log = logging.getLogger(__name__)

Representation = Literal["mix", "features", "tags"]
REPRESENTATIONS: tuple[Representation, ...] = ("mix", "features", "tags")
#: Serves until `vistas eval` ranks the representations on a labelled catalog (bench/quality.py: best on the demo).
DEFAULT_REPRESENTATION: Representation = "mix"
TOP_TAGS_PER_TOPIC = 8
#: Refits with fewer topics while near-duplicates remain, at most this many times (each is one more NMF fit).
MAX_REFITS = 3


@dataclass(frozen=True)
class Topic:
    """One topic: its stable id, readable name and the tags that define it.

    ``group`` is the id of the first topic it is a near-duplicate of (its own id when none),
    so the map's legend can show such topics together; ``name_tags`` are the labels the name
    was made of (each label names at most two topics)."""

    id: int
    name: str
    top_tags: list[tuple[str, float]]
    group: int = -1
    name_tags: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "group": self.id if self.group < 0 else self.group,
                "top_tags": [{"tag": t, "weight": w} for t, w in self.top_tags]}


@dataclass
class TopicModel:
    """NMF topics over tags and/or features, with the post-processing that makes cosine work."""

    n_topics: int = 30
    representation: Representation = DEFAULT_REPRESENTATION
    tag_weight: float = 0.5
    seed: int = 0
    vocabulary: TagVocabulary = field(default_factory=lambda: TagVocabulary(imagenet_labels()))
    feature_dim: int = 0
    #: label -> the word a shopper reads (a custom head's ``names.json``); other labels: ``naming.readable``.
    display: dict[str, str] = field(default_factory=dict)
    duplicate_threshold: float = naming.NEAR_DUPLICATE
    nmf: NMF | None = None
    scale: np.ndarray | None = None
    topics: list[Topic] = field(default_factory=list)
    profiles: np.ndarray | None = None  # topics x vocabulary: see naming.tag_profiles
    next_id: int = 0  # the id a topic new to this model's lineage gets
    refits: list[str] = field(default_factory=list)  # the near-duplicates each refit removed, in words

    # -- building the input matrix -------------------------------------------------
    def tag_matrix(self, tags: Sequence[Sequence[tuple[str, float]]]) -> np.ndarray:
        """Rows of (label, weight) pairs -> item x vocabulary matrix; unknown labels are dropped."""
        matrix = np.zeros((len(tags), len(self.vocabulary)), dtype=np.float32)
        for row, pairs in enumerate(tags):
            for label, weight in pairs:
                col = self.vocabulary.get(label)
                if col is not None:
                    matrix[row, col] = max(matrix[row, col], weight)
        return matrix

    def _input(self, tags: Sequence[Sequence[tuple[str, float]]], features: np.ndarray | None) -> np.ndarray:
        parts = []
        if self.representation in ("mix", "features"):
            if features is None:
                features = np.zeros((len(tags), self.feature_dim), dtype=np.float32)
            parts.append(unit(np.asarray(features, dtype=np.float32)))
        if self.representation in ("mix", "tags"):
            weight = self.tag_weight if self.representation == "mix" else 1.0
            parts.append(weight * unit(self.tag_matrix(tags)))
        return np.hstack(parts)

    # -- fit / transform -------------------------------------------------------------
    def fit(self, tags: Sequence[Sequence[tuple[str, float]]], features: np.ndarray | None) -> np.ndarray:
        """Fit on the catalog; returns the serving vectors of the same items."""
        for pairs in tags:
            for label, _ in pairs:
                self.vocabulary.add(label)
        if features is not None:
            self.feature_dim = features.shape[1]
        x = self._input(tags, features)
        n_topics = min(self.n_topics, x.shape[0], x.shape[1])
        if n_topics < self.n_topics:
            log.warning("catalog has %d items: fitting %d topics instead of %d", x.shape[0], n_topics, self.n_topics)
        presence = (self.tag_matrix(tags) > 0).astype(np.float32)
        self.refits = []
        weights = self._fit_nmf(x, n_topics)
        for _ in range(MAX_REFITS):
            profiles = naming.tag_profiles(weights, presence)
            groups = naming.duplicate_groups(profiles, self.duplicate_threshold)
            fewer = len(set(groups))
            if fewer == self.n_topics:
                break
            self.refits.append(self._merged_in_words(profiles, groups))
            log.info("topics: %s; refitting %d topics instead of %d", self.refits[-1], fewer, self.n_topics)
            weights = self._fit_nmf(x, fewer)
        spread = weights.std(axis=0)
        self.scale = np.where(spread > 1e-9, spread, 1.0).astype(np.float32)
        self._describe(naming.tag_profiles(weights, presence))
        return self._serving(weights)

    def _fit_nmf(self, x: np.ndarray, n_topics: int) -> np.ndarray:
        """Fit NMF with ``n_topics``; the items' topic weights, computed as ``transform`` will."""
        self.n_topics = n_topics
        self.nmf = NMF(n_topics, init="nndsvda", max_iter=1000, tol=1e-5, random_state=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.nmf.fit(x)
        return self._weights(x)

    def _merged_in_words(self, profiles: np.ndarray, groups: list[int]) -> str:
        """Which topics were near-duplicates, by their would-be names ("castle, church = mosque, dome")."""
        names = [name for name, _ in naming.name_topics(profiles, self.vocabulary.labels, self.display_name)]
        merged = {g: [names[k] for k in range(len(groups)) if groups[k] == g] for g in set(groups)}
        return "near-duplicates " + "; ".join(" = ".join(ns) for ns in merged.values() if len(ns) > 1)

    def transform(self, tags: Sequence[Sequence[tuple[str, float]]], features: np.ndarray | None) -> np.ndarray:
        """Serving vectors for items the model was not fitted on (no refit)."""
        if self.nmf is None:
            raise RuntimeError("topic model is not fitted")
        return self._serving(self._weights(self._input(tags, features)))

    def _weights(self, x: np.ndarray) -> np.ndarray:
        """``nmf.transform(x)``, computed the same way (zero start, cyclic coordinate descent, same
        stopping rule) but with ``x @ components.T`` computed once instead of once per iteration:
        the same numbers, 4-7 times faster, which is what makes transforming a million items cheap."""
        assert self.nmf is not None
        components = self.nmf.components_
        fast = x.dtype == components.dtype and self.nmf.solver == "cd" and not (self.nmf.alpha_W or self.nmf.shuffle)
        if not fast or x.min(initial=0.0) < 0:  # sklearn itself then (it also refuses negative input)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                return self.nmf.transform(x)
        ht = np.ascontiguousarray(components.T)
        hht, xht = ht.T @ ht, x @ ht
        weights = np.zeros((x.shape[0], components.shape[0]), dtype=x.dtype)
        order = np.arange(components.shape[0], dtype=np.intp)
        first = 0.0
        for step in range(self.nmf.max_iter):
            violation = _update_cdnmf_fast(weights, hht, xht, order)
            if step == 0:
                first = violation
            if first == 0 or violation / first <= self.nmf.tol:
                break
        return weights

    def _serving(self, weights: np.ndarray) -> np.ndarray:
        assert self.scale is not None
        return unit(np.sqrt(np.maximum(weights, 0.0) / self.scale)).astype(np.float32)

    # -- describing topics -----------------------------------------------------------
    def display_name(self, label: str) -> str:
        """The words a label shows in topic names: its head's display name, else the label made readable."""
        return naming.readable(self.display.get(label, label))

    def _describe(self, profiles: np.ndarray) -> None:
        """Top tags, distinctive names and near-duplicate groups of fresh topics (ids 0..n-1)."""
        self.profiles = profiles
        self.next_id = len(profiles)
        self.topics = self.named(list(range(len(profiles))))

    def named(self, ids: list[int], fixed: dict[int, tuple[str, tuple[str, ...]]] | None = None,
              taken: list[str] | None = None) -> list[Topic]:
        """The topics of this model's columns under ``ids``; ``fixed`` columns keep the (name, labels)
        given, the rest are named around them and around the ``taken`` names."""
        assert self.profiles is not None
        labels = self.vocabulary.labels
        names = naming.name_topics(self.profiles, labels, self.display_name, fixed, taken or [])
        groups = naming.duplicate_groups(self.profiles, self.duplicate_threshold)
        return [
            Topic(ids[k], name, [(labels[j], w) for j, w in top], ids[groups[k]], parts)
            for k, ((name, parts), top) in enumerate(zip(names, naming.top_tags(self.profiles, TOP_TAGS_PER_TOPIC)))
        ]

    def adopt(self, previous: "TopicModel | None", renamed: Mapping[int, str] | None = None) -> TopicChanges:
        """Take the ids, and names, of the previous version's topics that these match (``identity``).

        ``renamed`` are the merchandiser's names by id: not handed out to other topics. A
        previous model saved before tag profiles were kept is matched on its top tags, and
        lends its ids only (its names were not distinctive)."""
        assert self.profiles is not None, "fit() comes first"
        changes = TopicChanges()
        old = previous.topics if previous is not None else []
        if previous is None or not old:
            changes.new = [(t.id, t.name) for t in self.topics]
            return changes
        old_labels = previous.vocabulary.labels
        old_profiles = getattr(previous, "profiles", None)
        keep_names = old_profiles is not None
        if old_profiles is None:
            old_profiles = identity.profile_of_top_tags([t.top_tags for t in old], old_labels)
        pairs = identity.match(self.profiles, self.vocabulary.labels, old_profiles, old_labels)
        fresh = max(getattr(previous, "next_id", 0), max(t.id for t in old) + 1)
        ids, self.next_id = identity.carry_over(len(self.profiles), pairs, [t.id for t in old], fresh)
        fixed: dict[int, tuple[str, tuple[str, ...]]] = {}
        for k, j in pairs.items() if keep_names else ():
            # The same tags, in the words the heads' names.json says now (an edit shows after a reindex).
            words = ", ".join(self.display_name(label) for label in old[j].name_tags)
            unique = words and words not in {name for name, _ in fixed.values()}
            fixed[k] = (words if unique else old[j].name, tuple(old[j].name_tags))
        taken = [name for i, name in (renamed or {}).items() if i in ids]
        self.topics = self.named(ids, fixed, taken)
        matched = {old[j].id for j in pairs.values()}
        changes.kept = [(t.id, t.name) for k, t in enumerate(self.topics) if k in pairs]
        changes.new = [(t.id, t.name) for k, t in enumerate(self.topics) if k not in pairs]
        changes.gone = [(t.id, t.name) for t in old if t.id not in matched]
        changes.renamed_kept = sorted(i for i in (renamed or {}) if i in matched)
        return changes

    # -- persistence -----------------------------------------------------------------
    def save(self, path: Path) -> None:
        joblib.dump(self, path)

    @staticmethod
    def load(path: Path) -> "TopicModel":
        return TopicModel._checked(joblib.load(path), str(path))

    @staticmethod
    def loads(data: bytes) -> "TopicModel":
        """A model from the bytes of a saved one (the copy kept in Redis)."""
        return TopicModel._checked(joblib.load(io.BytesIO(data)), "the stored model")

    @staticmethod
    def _checked(model: object, where: str) -> "TopicModel":
        if not isinstance(model, TopicModel):
            raise TypeError(f"{where} does not hold a TopicModel")
        return model


def load_model(settings: Settings, version: int, store: Store | None = None) -> TopicModel:
    """The topic model of a version: from its folder (fetched from the object store when this host has no copy),
    else from the copy in Redis."""
    files = VersionStore.for_settings(settings)
    if files.exists(version):
        return TopicModel.load(files.path(version) / MODEL)
    data = store.versions.model_bytes(version) if store is not None else None
    if data is None:
        raise FileNotFoundError(
            f"Redis says index version {version} is current, but {files.objects.url_of(files.key(version))} does not "
            "exist: point VISTAS_STORE_URL at the store the index was built in, or start over with --reset"
        )
    return TopicModel.loads(data)
