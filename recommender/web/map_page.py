"""Serves the catalog map page; the page itself draws from /v1/map, /v1/topics and /v1/items."""

from __future__ import annotations

from flask import Blueprint, render_template

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/web")


@bp.get("/")
@bp.get("/map")
def map_page():
    return render_template("map.html")
