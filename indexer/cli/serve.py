"""`vistas serve`: the recommender API under gunicorn."""

from __future__ import annotations

import click

from indexer.cli.common import open_store
from recommender.server import GunicornServer
from recommender.settings import Settings


@click.command("serve")
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="Address to listen on.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="gunicorn worker processes; each holds the index in memory.")
@click.pass_obj
def command(settings: Settings, bind: str, workers: int) -> None:
    """Serve the recommender API (gunicorn).

    Endpoints: /healthz, /readyz, /v1/items/ID, /v1/items/ID/similar?k=10, /v1/topics,
    /v1/map, /v1/items/ID/thumbnail; the catalog map page is at /.
    """
    open_store(settings)
    GunicornServer(settings, bind, workers).run()
