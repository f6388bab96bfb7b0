"""Photo -> vector, for query by photo: the backbone's labels and features, through the served
version's topic model, give the vector the index is searched with.

The backbone runs on the compiled CPU runtime (OpenVINO or ONNX Runtime over the exported
weights, :mod:`recommender.model.runtime`), never torch unless VISTAS_RUNTIME=torch asks: the
API process does not import torch. The indexer exports the backbone and heads under
``VISTAS_DATA_DIR/runtime/`` (`vistas export` does it alone); until then a query by photo
raises MissingExport. The backbone and the topic model load on the first query in a process,
so API processes that never get one stay light.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from recommender.photos import ImageError
from recommender.settings import Settings

if TYPE_CHECKING:
    from recommender.model.tagger import Tagger
    from recommender.model.topics import TopicModel


@dataclass(frozen=True)
class Embedding:
    """A photo's serving vector and the labels the backbone saw in it, best first."""

    vector: np.ndarray
    labels: list[tuple[str, float]]


@lru_cache(maxsize=1)
def _tagger(settings: Settings) -> Tagger:
    from recommender.model.tagger import Tagger

    return Tagger(settings, serving=True)


@lru_cache(maxsize=2)
def _model(settings: Settings, version: int) -> TopicModel:
    from recommender.model.topics import load_model

    return load_model(settings, version)


def embed(settings: Settings, version: int, photo: bytes) -> Embedding:
    """The vector of ``photo`` in index version ``version``'s topic space; ImageError when it cannot be read."""
    (_, tagging), = _tagger(settings).tag([("query", photo)])
    if isinstance(tagging, ImageError):
        raise tagging
    vector = _model(settings, version).transform([tagging.labels], tagging.features[None, :])[0]
    return Embedding(vector, tagging.labels)
