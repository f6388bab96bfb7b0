"""Serves the catalog map page; the page itself draws from /v1/map, /v1/topics and /v1/items."""

from __future__ import annotations

from flask import Blueprint, render_template

from recommender.auth import auth_enabled
from recommender.state import state

bp = Blueprint("web", __name__, template_folder="templates")  # its JS and CSS are the app's static files


@bp.get("/")
@bp.get("/map")
def map_page():
    """The page holds no data, so it needs no key; it asks for one when the API does."""
    return render_template("map.html", needs_key=auth_enabled(state().settings))
