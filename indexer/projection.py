"""2-D maps of the catalog (t-SNE) for the map page, one per representation.

As in the original study, the same items are laid out from three inputs: raw
last-layer features (no NMF; reduced to 50 dimensions by PCA first), NMF
topics fitted on the top-5 tag matrix, and NMF topics fitted on the
features. The layout comes from openTSNE, because it can place new points
into an existing map (``TSNEEmbedding.transform``): items ingested between
reindexes get a position without recomputing the map, and the positions of
the others do not move. A catalog of a handful of items is laid out by PCA
instead; t-SNE needs neighbours to work with.

How clustered each map is, is measured here once, at build time: the
silhouette of each item's dominant topic in 2-D.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import joblib
import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits

from recommender.catalog_map import LABELS, NO_TOPIC, REPRESENTATIONS, CatalogMap, Layout, dominant_topics, map_rows
from recommender.model.topics import Representation, TopicModel
from recommender.settings import Settings
from recommender.store import Store
from recommender.versions import MAP_MODEL, VersionStore

if TYPE_CHECKING:
    from openTSNE import TSNEEmbedding

log = logging.getLogger(__name__)

PERPLEXITY = 30.0
#: openTSNE's default for placing new points: a few close neighbours, not the map's global balance.
PLACE_PERPLEXITY = 5.0
#: Raw features are reduced to this many dimensions by PCA first (openTSNE's advice): the nearest-neighbour
#: search gets cheaper and the stored map model 4x smaller, neighbourhoods stay the same.
INPUT_DIMS = 50
#: The map is computed on every core from this many items on. Below, one thread is faster: each of t-SNE's
#: 750 iterations (and NMF's) is short, and with threads it waits for the slowest one. Measured on 2 busy
#: cores: the demo's 523 items after tagging, 5 s in one thread and 15 s in two; 10,000 items, 29 s and 39 s.
PARALLEL_FROM = 50_000
#: Below this many items the map is a PCA: t-SNE's perplexity would have almost no neighbours to spread over.
MIN_TSNE_ITEMS = 12
#: Silhouette is quadratic in the number of points; above this it is estimated on a sample.
SILHOUETTE_SAMPLE = 5000
#: Silhouette above which topics form clusters you can see on the map.
VISIBLE_CLUSTERS = 0.25
_TOPIC_INPUT: dict[str, Representation] = {"tag_topics": "tags", "feature_topics": "features"}

Tags = Sequence[Sequence[tuple[str, float]]]


@dataclass
class Projector:
    """Places items on one representation's map: the input model (NMF or PCA), then t-SNE (or PCA)."""

    representation: str
    feature_dim: int = 0
    topic_model: TopicModel | None = None
    reduce: PCA | None = None  # raw features -> INPUT_DIMS
    embedding: TSNEEmbedding | None = None  # the t-SNE map, or for tiny catalogs a linear one:
    linear_origin: np.ndarray | None = None
    linear_axes: np.ndarray | None = None

    @property
    def method(self) -> str:
        return "PCA" if self.embedding is None else "t-SNE"

    def fit(self, tags: Tags, features: np.ndarray | None, n_topics: int, threads: int = 1,
            display: dict[str, str] | None = None) -> Layout:
        """Fit the input model and lay the catalog out (``display``: head labels' names, as served topics use)."""
        if self.representation in _TOPIC_INPUT:
            self.topic_model = TopicModel(n_topics=n_topics, representation=_TOPIC_INPUT[self.representation],
                                          display=dict(display or {}))
            x = self.topic_model.fit(tags, features)
        else:
            x = self._features(features, len(tags))
            if x.shape[1] > INPUT_DIMS and len(x) > INPUT_DIMS:
                self.reduce = PCA(INPUT_DIMS, random_state=0).fit(x)
                x = self.reduce.transform(x)
        if len(x) < MIN_TSNE_ITEMS:
            self.linear_origin = x.mean(axis=0)
            axes = np.linalg.svd(x - self.linear_origin, full_matrices=False)[2][:2]  # the 2 principal axes
            self.linear_axes = np.vstack([axes, np.zeros((2 - len(axes), x.shape[1]), dtype=axes.dtype)])
            return self._layout(self._project(x), x)
        from openTSNE import TSNE  # here, not at the top: the API's query-by-photo imports indexer.build

        tsne = TSNE(perplexity=min(PERPLEXITY, (len(x) - 1) / 3), n_jobs=threads, random_state=0)
        embedding = tsne.fit(x)
        # transform() re-centres the embedding in place; centring it now keeps the stored positions valid
        embedding -= (embedding.max(axis=0) + embedding.min(axis=0)) / 2
        embedding.affinities.P = None  # the catalog's own affinities: only fitting needs them, and they are big
        self.embedding = embedding
        return self._layout(np.asarray(embedding, dtype=np.float32), x)

    def place(self, tags: Tags, features: np.ndarray | None) -> Layout:
        """Positions of new items on the existing map (the map itself does not move)."""
        if self.topic_model is not None:
            x = self.topic_model.transform(tags, features)
        else:
            x = self._features(features, len(tags))
            if self.reduce is not None:
                x = self.reduce.transform(x)
        if self.embedding is None:
            return self._layout(self._project(x), x)
        perplexity = min(PLACE_PERPLEXITY, (len(self.embedding) - 1) / 3)
        return self._layout(np.asarray(self.embedding.transform(x, perplexity=perplexity), dtype=np.float32), x)

    def _features(self, features: np.ndarray | None, n: int) -> np.ndarray:
        """L2-normalised features; rows of zeros for items without a photo."""
        if features is None:
            return np.zeros((n, self.feature_dim), dtype=np.float32)
        return normalize(np.asarray(features, dtype=np.float32))

    def _project(self, x: np.ndarray) -> np.ndarray:
        assert self.linear_origin is not None and self.linear_axes is not None
        return ((x - self.linear_origin) @ self.linear_axes.T).astype(np.float32)

    def _layout(self, xy: np.ndarray, x: np.ndarray) -> Layout:
        if self.topic_model is None:
            return Layout(xy)
        return Layout(xy, dominant_topics(x), [t.name for t in self.topic_model.topics])


def build_map(
    ids: Sequence[str], nums: Sequence[int], titles: Sequence[str], photos: Sequence[bool], tags: Tags,
    features: np.ndarray | None, served: np.ndarray, n_topics: int, display: dict[str, str] | None = None,
) -> tuple[CatalogMap, list[Projector]]:
    """Lay the catalog out in every representation its data allows, and measure how clustered each is.

    ``served`` are the items' serving topic vectors: their dominant topic
    colours the map and is what the silhouette is measured on.
    """
    started = time.monotonic()
    topics = dominant_topics(served)
    projectors: list[Projector] = []
    layouts: dict[str, Layout] = {}
    threads = (os.cpu_count() or 1) if len(ids) >= PARALLEL_FROM else 1
    with threadpool_limits(threads):  # BLAS and OpenMP too: NMF and PCA have the same short steps
        for representation in REPRESENTATIONS:
            if features is None and representation != "tag_topics":
                continue  # no photos in the catalog: only the tags have something to say
            projector = Projector(representation, feature_dim=0 if features is None else features.shape[1])
            layouts[representation] = projector.fit(tags, features, n_topics, threads, display)
            projectors.append(projector)
        summary = summarize(layouts, topics, {p.representation: p.method for p in projectors})
    log.info("laid out the catalog map (%d items) in %.1fs: %s", len(ids), time.monotonic() - started, summary["text"])
    catalog_map = CatalogMap(
        list(ids), [int(n) for n in nums], list(titles), list(photos), topics.tolist(), layouts, summary,
    )
    return catalog_map, projectors


def summarize(layouts: dict[str, Layout], topics: np.ndarray, methods: dict[str, str]) -> dict:
    """How clustered each map is: silhouettes of the served and the map's own topics, the best map, in words."""
    silhouettes = {
        representation: {
            "served": _silhouette(layout.xy, topics),
            "own": None if layout.own_topics is None else _silhouette(layout.xy, layout.own_topics),
        }
        for representation, layout in layouts.items()
    }
    return {
        "silhouette": silhouettes,
        "best": max(silhouettes, key=lambda r: _or_low(silhouettes[r]["served"])),
        "methods": methods,
        "text": describe(silhouettes, len(topics), "t-SNE" if "t-SNE" in methods.values() else "PCA"),
    }


def _or_low(value: float | None) -> float:
    return -2.0 if value is None else value


def _silhouette(xy: np.ndarray, labels: np.ndarray) -> float | None:
    """Silhouette of ``labels`` in 2-D (-1..1); None when it is undefined (one topic, or one item per topic)."""
    known = labels != NO_TOPIC
    xy, labels = xy[known], labels[known]
    if not 2 <= len(np.unique(labels)) <= len(labels) - 1:
        return None
    sample = SILHOUETTE_SAMPLE if len(labels) > SILHOUETTE_SAMPLE else None
    return round(float(silhouette_score(xy, labels, sample_size=sample, random_state=0)), 3)


def describe(silhouettes: dict[str, dict[str, float | None]], n_items: int, method: str) -> str:
    """The paragraph the map page shows: how clustered each representation is, in words and numbers."""
    def score(value: float | None) -> str:
        return "undefined" if value is None else f"{value:.2f}".replace("-", "\u2212")

    ranked = sorted(silhouettes, key=lambda r: -_or_low(silhouettes[r]["served"]))
    served = ", ".join(f"{LABELS[r]} {score(silhouettes[r]['served'])}" for r in ranked)
    text = (
        f"How clustered is each map? The silhouette of each item's dominant served topic in 2-D "
        f"(from \u22121 to 1: near 0 the topics overlap, above {VISIBLE_CLUSTERS} they form clusters you can see) "
        f"is {served}."
    )
    own = {r: s["own"] for r, s in silhouettes.items() if s["own"] is not None}
    if own:
        best = max(own, key=lambda r: own[r])
        text += (
            " Coloured by their own topics, the NMF maps score "
            + ", ".join(f"{score(v)} ({LABELS[r]})" for r, v in own.items())
            + f": {LABELS[best]} {'forms visible clusters' if own[best] > VISIBLE_CLUSTERS else 'barely clusters'}."
        )
    layout = "t-SNE (openTSNE)" if method == "t-SNE" else "PCA (too few items for t-SNE)"
    return f"{text} {n_items} items, laid out by {layout}."


def save_projectors(projectors: list[Projector], path: Path) -> None:
    joblib.dump(projectors, path)


def place_items(
    settings: Settings, store: Store, version: int, ids: Sequence[str], tags: Tags, features: np.ndarray | None,
) -> None:
    """Put items indexed after ``version`` was built on its map; the rows go to Redis, the map file stays."""
    if not ids:
        return
    path = VersionStore.for_settings(settings).path(version) / MAP_MODEL
    if not path.is_file():
        log.info("index version %d has no map; new items appear on it after the next reindex", version)
        return
    projectors: list[Projector] = joblib.load(path)
    layouts = {projector.representation: projector.place(tags, features) for projector in projectors}
    store.versions.set_map_rows(version, dict(zip(ids, map_rows(layouts))))
