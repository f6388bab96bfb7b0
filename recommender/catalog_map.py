"""The catalog map: every item's 2-D position in three representations, as the API serves it.

The indexer lays the map out when it builds a version (``indexer/projection.py``)
and writes it into the version directory; items indexed later are placed on
that map without recomputing it, and their rows are kept in Redis. This
module holds the format of both and the merge the API answers with: the map
file, updated and extended by the later rows, without items the live index no
longer holds.

Points are coloured by their dominant served topic (the topics of
``/v1/topics``), so an item keeps its colour when the page switches
representation; the two NMF representations also carry their own dominant
topic, which is what their clusters form around.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Container, Sequence
from dataclasses import dataclass
from itertools import compress
from pathlib import Path
from typing import Any

import numpy as np

from recommender.store.items import Item
from recommender.versions import MAP, VersionStore

REPRESENTATIONS: tuple[str, ...] = ("features", "tag_topics", "feature_topics")
LABELS = {"features": "raw features", "tag_topics": "NMF on tags", "feature_topics": "NMF on features"}
THUMBNAIL_URL = "/v1/items/{id}/thumbnail"
NO_TOPIC = -1
ROW_WIDTH = 3  # per representation in a Redis map row: x, y, own topic


@dataclass
class Layout:
    """One representation's map: positions, and its own topics when it has a topic model."""

    xy: np.ndarray  # (n, 2) float32
    own_topics: np.ndarray | None = None  # (n,) int; NO_TOPIC where an item loads on none
    own_topic_names: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "x": _rounded(self.xy[:, 0]), "y": _rounded(self.xy[:, 1]),
            "own_topics": None if self.own_topics is None else self.own_topics.tolist(),
            "own_topic_names": self.own_topic_names,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Layout:
        own = data.get("own_topics")
        return cls(
            np.column_stack([data["x"], data["y"]]).astype(np.float32),
            None if own is None else np.asarray(own, dtype=np.int64), data.get("own_topic_names"),
        )


def _rounded(values: np.ndarray, digits: int = 3) -> list[float]:
    """float32 -> short JSON numbers (float64 first, or 12.34 prints as 12.340000152587891)."""
    return np.asarray(values, dtype=np.float64).round(digits).tolist()


def dominant_topics(vectors: np.ndarray) -> np.ndarray:
    """Each row's strongest topic, NO_TOPIC for rows that load on none."""
    vectors = np.asarray(vectors)
    if vectors.shape[1] == 0:
        return np.full(len(vectors), NO_TOPIC, dtype=np.int64)
    return np.where(vectors.max(axis=1) > 0, vectors.argmax(axis=1), NO_TOPIC).astype(np.int64)


def map_rows(layouts: dict[str, Layout]) -> np.ndarray:
    """Layouts of some items -> one float32 row per item, as Versions.set_map_rows stores them."""
    n = len(next(iter(layouts.values())).xy)
    rows = np.full((n, ROW_WIDTH * len(REPRESENTATIONS)), np.nan, dtype=np.float32)
    for i, representation in enumerate(REPRESENTATIONS):
        layout = layouts.get(representation)
        if layout is None:
            continue
        rows[:, ROW_WIDTH * i:ROW_WIDTH * i + 2] = layout.xy
        rows[:, ROW_WIDTH * i + 2] = NO_TOPIC if layout.own_topics is None else layout.own_topics
    return rows


@dataclass
class CatalogMap:
    """A version's map: parallel per-item lists plus one layout per representation."""

    ids: list[str]
    nums: list[int]
    titles: list[str]
    photos: list[bool]
    topics: list[int]  # dominant served topic
    layouts: dict[str, Layout]
    summary: dict[str, Any]

    def save(self, directory: Path) -> None:
        data = {
            "ids": self.ids, "nums": self.nums, "titles": self.titles, "photos": [int(p) for p in self.photos],
            "topics": self.topics, "layouts": {r: layout.to_json() for r, layout in self.layouts.items()},
            "summary": self.summary,
        }
        (Path(directory) / MAP).write_text(json.dumps(data, separators=(",", ":")))

    @classmethod
    def load(cls, directory: Path) -> CatalogMap:
        data = json.loads((Path(directory) / MAP).read_text())
        return cls(
            data["ids"], data["nums"], data["titles"], [bool(p) for p in data["photos"]], data["topics"],
            {r: Layout.from_json(layout) for r, layout in data["layouts"].items()}, data["summary"],
        )

    def default_representation(self) -> str:
        """The representation whose map separates the served topics best (the summary says which)."""
        best = self.summary.get("best")
        return best if best in self.layouts else next(r for r in REPRESENTATIONS if r in self.layouts)

    def points(
        self, representation: str, version: int, later: Sequence[tuple[Item, np.ndarray]], served: Container[int],
    ) -> dict[str, Any]:
        """The map as /v1/map answers it: parallel arrays, compact enough for 50,000 points.

        ``later`` are items placed on this map after it was built, with their
        Redis rows; ``served`` holds the numeric ids the live index serves, so
        deleted items drop out.
        """
        layout = self.layouts[representation]
        column = ROW_WIDTH * REPRESENTATIONS.index(representation)
        fresh = [
            (item, row) for item, row in later
            if item.num in served and item.version == version and not math.isnan(row[column])
        ]
        replaced = {item.id for item, _ in fresh}
        keep = [num in served and item_id not in replaced for num, item_id in zip(self.nums, self.ids)]
        own = layout.own_topics
        body: dict[str, Any] = {
            "ids": list(compress(self.ids, keep)) + [item.id for item, _ in fresh],
            "titles": list(compress(self.titles, keep)) + [item.title for item, _ in fresh],
            "x": _rounded(layout.xy[keep, 0]) + _rounded([row[column] for _, row in fresh]),
            "y": _rounded(layout.xy[keep, 1]) + _rounded([row[column + 1] for _, row in fresh]),
            "topics": list(compress(self.topics, keep)) + [_served_topic(item) for item, _ in fresh],
            "own_topics": None if own is None else own[keep].tolist() + [int(row[column + 2]) for _, row in fresh],
            "own_topic_names": layout.own_topic_names,
            "photos": [int(p) for p in compress(self.photos, keep)] + [int(bool(item.image)) for item, _ in fresh],
        }
        return {
            "version": version, "representation": representation, "label": LABELS[representation],
            "count": len(body["ids"]), **body, "thumbnail_url": THUMBNAIL_URL,
            "representations": [
                {"id": r, "label": LABELS[r], "available": r in self.layouts} for r in REPRESENTATIONS
            ],
            "summary": self.summary,
        }


def _served_topic(item: Item) -> int:
    if item.vector is None or not len(item.vector):
        return NO_TOPIC
    return int(dominant_topics(item.vector.reshape(1, -1))[0])


class MapCache:
    """The served version's map file, loaded on first use (not at start-up) and kept until the version changes."""

    def __init__(self, files: VersionStore):
        self.files = files
        self._loaded: tuple[int, CatalogMap] | None = None
        self._lock = threading.Lock()

    def get(self, version: int) -> CatalogMap | None:
        """The map of ``version``, or None when that version was built without one."""
        with self._lock:
            if self._loaded is None or self._loaded[0] != version:
                if not (self.files.path(version) / MAP).is_file():
                    return None
                self._loaded = (version, CatalogMap.load(self.files.path(version)))
            return self._loaded[1]
