"""`vistas reindex`: rebuild and publish a new index version, or roll back to the one before."""

from __future__ import annotations

import click

from indexer.cli.common import open_store
from indexer.reindex import Reindex, ReindexError
from indexer.rollback import rollback as roll_back
from recommender.settings import Settings


@click.command("reindex")
@click.option("--reuse-features", is_flag=True,
              help="Use the tags and features stored at indexing time instead of re-tagging every photo.")
@click.option("--distributed", is_flag=True, help="Re-tag on the running `vistas worker` processes, not here.")
@click.option("--rollback", is_flag=True, help="Serve the newest kept version before the current one again.")
@click.pass_obj
def command(settings: Settings, reuse_features: bool, distributed: bool, rollback: bool) -> None:
    """Rebuild the index as a new version and switch every API to it at once.

    Re-tags every photo (or reuses stored features), refits the topic model
    (on VISTAS_FIT_SAMPLE items at most), transforms every item, writes
    version N+1 next to N and flips the `current` pointer in Redis in one
    step. Running APIs load N+1 in the background and swap between requests;
    items indexed by workers meanwhile are moved to N+1 too. The newest
    VISTAS_KEEP_VERSIONS versions are kept; --rollback goes back to the one
    before the current.
    """
    if rollback and (reuse_features or distributed):
        raise click.UsageError("--rollback takes no other option")
    if reuse_features and distributed:
        raise click.UsageError("--distributed re-tags on the workers; with --reuse-features nothing is re-tagged")
    store = open_store(settings)
    try:
        report = roll_back(settings, store) if rollback else Reindex(settings, store).run(reuse_features, distributed)
    except ReindexError as exc:
        raise click.ClickException(str(exc)) from None
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in report.phases.items())
    click.echo(f"index version {report.version} is current: {report.items} items, {report.failed} failed, "
               f"{report.retransformed} re-transformed after the flip, {report.seconds:.1f}s ({phases})")
    for refit in report.refits:
        click.echo(f"refitted with fewer topics: {refit}")
    if report.topics is not None:
        click.echo(f"topics: {report.topics.summary()}")
