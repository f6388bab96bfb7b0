"""Serves the demo pages: the catalog map (from /v1/map, /v1/topics, /v1/items) and the storefront
(from /v1/items and the users' endpoints). Neither holds data, so neither needs a key; each asks for one
when the API does."""

from __future__ import annotations

from flask import Blueprint, render_template

from recommender.auth import auth_enabled
from recommender.state import state

bp = Blueprint("web", __name__, template_folder="templates")  # its JS and CSS are the app's static files


@bp.get("/")
@bp.get("/map")
def map_page():
    return render_template("map.html", needs_key=auth_enabled(state().settings))


@bp.get("/store")
def store_page():
    """What a merchandiser tries first: a shop over the catalog whose rows come from the recommender."""
    return render_template("store.html", needs_key=auth_enabled(state().settings))
