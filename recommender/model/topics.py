"""The topic model: NMF over what the backbone saw, 30 readable topics per catalog.

Three inputs are supported, as in the original study:

* ``tags``: the item x tag matrix (top-5 label probabilities + given tags);
* ``features``: the pooled last-layer features;
* ``mix`` (the default): both side by side, ``[l2(features), w * l2(tags)]``.

``mix`` is what serves recommendations: the feature half keeps the retrieval
quality of the raw features, the tag half pulls items with the same labels
together (``bench/quality.py`` measures all three). A topic is named by the
tags of the items that load on it: "beach, sandbar, promontory".

Topic weights are then divided by their spread over the catalog (so a rare
topic counts as much as a common one) and square-rooted (so one dominant topic
does not drown the rest) before the L2 normalisation that makes inner product
a cosine. Without those two steps NMF loses a quarter of same-place recall.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import joblib
import numpy as np
from sklearn.decomposition import NMF
from sklearn.decomposition._cdnmf_fast import _update_cdnmf_fast  # the solver nmf.transform runs
from sklearn.exceptions import ConvergenceWarning

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
NAME_TAGS = 3


@dataclass(frozen=True)
class Topic:
    """One topic: its readable name and the tags that define it."""

    id: int
    name: str
    top_tags: list[tuple[str, float]]

    def to_json(self) -> dict:
        return {"id": self.id, "name": self.name, "top_tags": [{"tag": t, "weight": w} for t, w in self.top_tags]}


@dataclass
class TopicModel:
    """NMF topics over tags and/or features, with the post-processing that makes cosine work."""

    n_topics: int = 30
    representation: Representation = DEFAULT_REPRESENTATION
    tag_weight: float = 0.5
    seed: int = 0
    vocabulary: TagVocabulary = field(default_factory=lambda: TagVocabulary(imagenet_labels()))
    feature_dim: int = 0
    nmf: NMF | None = None
    scale: np.ndarray | None = None
    topics: list[Topic] = field(default_factory=list)

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
        self.n_topics = n_topics
        self.nmf = NMF(n_topics, init="nndsvda", max_iter=1000, tol=1e-5, random_state=self.seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.nmf.fit(x)
        weights = self._weights(x)
        spread = weights.std(axis=0)
        self.scale = np.where(spread > 1e-9, spread, 1.0).astype(np.float32)
        self.topics = self._describe(weights, self.tag_matrix(tags))
        return self._serving(weights)

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
    def _describe(self, weights: np.ndarray, tag_matrix: np.ndarray) -> list[Topic]:
        """Each topic is named by the tags of the items that load on it (a weighted
        average), which works the same for every representation."""
        return self._topics_from_loadings(weights.T @ tag_matrix)

    def _topics_from_loadings(self, loadings: np.ndarray) -> list[Topic]:
        topics: list[Topic] = []
        used: set[str] = set()
        for i, row in enumerate(loadings):
            order = np.argsort(-row)[:TOP_TAGS_PER_TOPIC]
            total = float(row[order].sum()) or 1.0
            top = [(self.vocabulary.labels[j], round(float(row[j]) / total, 4)) for j in order if row[j] > 0]
            name = ", ".join(t for t, _ in top[:NAME_TAGS]) or f"topic {i}"
            if name in used:
                name = f"{name} ({i})"
            used.add(name)
            topics.append(Topic(i, name, top))
        return topics

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
    """The topic model of a version: from its directory, else from Redis (a worker on another machine)."""
    files = VersionStore(settings.data_dir)
    if files.exists(version):
        return TopicModel.load(files.path(version) / MODEL)
    data = store.versions.model_bytes(version) if store is not None else None
    if data is None:
        raise FileNotFoundError(
            f"Redis says index version {version} is current, but {files.path(version)} does not exist: "
            "point VISTAS_DATA_DIR at the directory the index was built in, or start over with --reset"
        )
    return TopicModel.loads(data)
