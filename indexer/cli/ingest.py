"""`vistas ingest PATH`: index a folder of photos or a manifest, inline or through the workers."""

from __future__ import annotations

from pathlib import Path

import click

from indexer.cli.common import open_store
from indexer.ingest import enqueue as enqueue_items
from indexer.ingest import forget_everything
from indexer.ingest import ingest as ingest_entries
from indexer.manifest import ManifestError, read_catalog
from recommender.settings import Settings


@click.command("ingest")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--reset", is_flag=True, help="Forget every item and version under this key prefix first.")
@click.option("--batch-size", type=click.IntRange(1, 4096), help="Photos per forward pass [env VISTAS_BATCH_SIZE].")
@click.option("--enqueue", is_flag=True,
              help="Store the items and leave the tagging to `vistas worker` processes (returns at once).")
@click.pass_obj
def command(settings: Settings, path: Path, reset: bool, batch_size: int | None, enqueue: bool) -> None:
    """Index the items in PATH: a folder of photos, or a CSV / JSON-lines manifest.

    \b
    Manifest columns: id, title, kind, category, image, price, starts_at,
    ends_at, tags (CSV: separated by "|"; JSON: a list). Image paths are
    relative to the manifest; an item without an image needs tags. Other
    columns are kept as item attributes.

    On an empty catalog this fits the topic model and builds index version 1;
    otherwise the new items get vectors from the current model and appear in
    running APIs at once. Either way the tagging happens here, so no worker
    is needed. With --enqueue (a built catalog only) the items are stored and
    queued for `vistas worker` processes instead, which is the way to spread
    a large batch over several machines. Unreadable photos mark their item
    failed (with the reason) and do not stop the run.
    """
    run(settings.with_(batch_size=batch_size) if batch_size else settings, path, reset, enqueue)


def run(settings: Settings, path: Path, reset: bool, enqueue: bool = False) -> None:
    """Ingest PATH and say what happened (`vistas demo` runs this too)."""
    store = open_store(settings)
    try:
        entries = read_catalog(path)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None
    if not entries:
        raise click.ClickException(f"{path} holds no items (photos: .jpg .png .webp ...; or a manifest)")
    if reset:
        forget_everything(settings, store)
    if enqueue:
        if not store.versions.current():
            raise click.ClickException(
                "the catalog has no index version yet, so workers have no topic model to index with: "
                "run `vistas ingest PATH` without --enqueue for the first batch"
            )
        queued = enqueue_items(entries, store)
        workers = len(store.workers.running())
        click.echo(f"{queued} items queued for the workers ({workers} running); `vistas status` shows progress")
        if not workers:
            click.echo("no worker is running: start `vistas worker` to index them", err=True)
        return
    try:
        report = ingest_entries(entries, settings, store)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{report.indexed} of {report.stored} items indexed, {len(report.failed)} failed, "
        f"index version {report.version}{' (new)' if report.built else ''}, {report.seconds:.1f}s"
    )
    if report.phases:
        click.echo("  " + ", ".join(f"{phase} {seconds:.1f}s" for phase, seconds in report.phases.items()))
    for item_id, reason in report.failed[:20]:
        click.echo(f"  failed {item_id}: {reason}", err=True)

