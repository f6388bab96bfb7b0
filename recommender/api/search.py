"""Query by photo: a client uploads a photo and gets the catalog's most similar items."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from recommender.api.params import filters_arg, float_arg, int_arg
from recommender.auth import require
from recommender.embed import embed
from recommender.errors import ApiError, photo_error
from recommender.model.exported import MissingExport
from recommender.photos import ImageError
from recommender.state import recommender, state

bp = Blueprint("search", __name__, url_prefix="/v1")


@bp.post("/search")
@require("client")
def search_by_photo():
    s = state()
    k = int_arg("k", 10, 1, s.settings.max_k)
    diversity = float_arg("diversity", 0.0, 0.0, 1.0)
    upload = request.files.get("photo")
    if upload is None:
        raise ApiError(400, "missing_photo", "send the photo as a multipart file part named 'photo'")
    rec = recommender()
    filters = filters_arg(rec.live, s.clock())
    try:
        query = embed(s.settings, rec.live.version, upload.read())
    except ImageError as exc:
        raise photo_error(exc) from None
    except MissingExport as exc:  # the indexer exports the backbone; an API process cannot (no torch)
        raise ApiError(503, "model_not_exported", str(exc)) from None
    results = rec.search(query.vector, k, filters, diversity, tags=[t for t, _ in query.labels])
    return jsonify({"items": results, "version": rec.live.version,
                    "tags": [{"tag": t, "score": p} for t, p in query.labels]})
