"""Query by photo: a client uploads a photo and gets the catalog's most similar items.

The tagger and the topic model are loaded lazily, on the first search in a
process, so API processes that never get one stay light.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from flask import Blueprint, jsonify, request

from recommender.api.params import filters_arg, float_arg, int_arg
from recommender.app import ready_index, state
from recommender.auth import require
from recommender.errors import ApiError, photo_error
from recommender.photos import ImageError
from recommender.recommend import hydrate, ranked
from recommender.settings import Settings

if TYPE_CHECKING:
    from indexer.tagger import Tagger
    from indexer.topics import TopicModel

bp = Blueprint("search", __name__, url_prefix="/v1")


@lru_cache(maxsize=1)
def _tagger(settings: Settings) -> Tagger:
    from indexer.tagger import Tagger

    return Tagger(settings)


@lru_cache(maxsize=2)
def _model(settings: Settings, version: int) -> TopicModel:
    from indexer.build import load_model

    return load_model(settings, version)


@bp.post("/search")
@require("client")
def search_by_photo():
    s = state()
    k = int_arg("k", 10, 1, s.settings.max_k)
    diversity = float_arg("diversity", 0.0, 0.0, 1.0)
    upload = request.files.get("photo")
    if upload is None:
        raise ApiError(400, "missing_photo", "send the photo as a multipart file part named 'photo'")
    live = ready_index()
    filters = filters_arg(live, s.clock())
    (_, tagging), = _tagger(s.settings).tag([("query", upload.read())])
    if isinstance(tagging, ImageError):
        raise photo_error(tagging)
    query = _model(s.settings, live.version).transform([tagging.labels], tagging.features[None, :])[0]

    labels = {t for t, _ in tagging.labels}
    hits = ranked(live, query, k, filters, diversity)
    results = hydrate(live, hits, k, query, lambda item, _: {"tags": [t for t in item.tags if t in labels]})
    return jsonify({"items": results, "version": live.version,
                    "tags": [{"tag": t, "score": p} for t, p in tagging.labels]})
