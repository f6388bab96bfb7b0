"""`vistas status`: what the indexing side is doing."""

from __future__ import annotations

import click

from indexer.cli.common import open_store
from indexer.status import report
from recommender.settings import Settings


@click.command("status")
@click.pass_obj
def command(settings: Settings) -> None:
    """Queue length, pending and dead letters, running workers, versions, the last reindex."""
    click.echo(report(settings, open_store(settings)))
