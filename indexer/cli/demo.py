"""`vistas demo`: the bundled catalog indexed once, with its custom head, and served."""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from pathlib import Path

import click

from indexer.cli import ingest
from indexer.cli.common import open_store
from indexer.embedded_redis import EmbeddedRedis
from indexer.manifest import read_catalog
from recommender.model.exported import heads_dir, missing_exports, publish_heads
from recommender.server import GunicornServer
from recommender.settings import Settings

DEMO = Path(__file__).resolve().parents[2] / "demo"
DEMO_CATALOG = DEMO / "catalog" / "manifest.csv"


@click.command("demo")
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="Address to listen on.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="gunicorn workers.")
@click.option("--catalog", "catalog_path", type=click.Path(exists=True, path_type=Path), default=DEMO_CATALOG,
              show_default=True, help="Catalog to index.")
@click.pass_obj
def command(settings: Settings, bind: str, workers: int, catalog_path: Path) -> None:
    """Index the bundled demo catalog (523 real photos) and serve it.

    Uses REDIS_URL when set; otherwise starts a real redis-server of its own
    with its data under the data directory. Indexing is skipped when the
    catalog is already indexed. Ctrl-C stops everything.
    """
    _install_demo_heads(settings)
    with ExitStack() as stack:
        if settings.redis_url is None:
            server = stack.enter_context(EmbeddedRedis(settings.data_dir / "redis"))
            settings = settings.with_(redis_url=server.url)
            click.echo(f"started redis-server at {server.url}")
        store = open_store(settings)
        expected = {entry.item.id for entry in read_catalog(catalog_path)}
        if store.versions.current() and expected <= set(store.items.ids()):
            click.echo(f"demo catalog already indexed (version {store.versions.current()}, "
                       f"{store.items.count()} items)")
            if missing_exports(settings):  # query by photo in the API needs them; ingest would have made them
                from recommender.model.onnx_export import export_all

                export_all(settings)
        else:
            ingest.run(settings, catalog_path, reset=False)
        host = bind if "://" in bind else f"http://{bind}"
        sample = sorted(expected)[0] if expected else "ID"
        click.echo(
            "\nVistas demo is up. Try:\n"
            f"  {host}/                  the catalog map\n"
            f"  {host}/store             the storefront demo\n"
            f"  {host}/readyz\n  {host}/v1/topics\n  {host}/v1/items/{sample}\n"
            f"  {host}/v1/items/{sample}/similar?k=5\n"
            "Ctrl-C stops the API and everything the demo started.\n"
        )
        GunicornServer(settings, bind, workers).run()


def _install_demo_heads(settings: Settings) -> None:
    """The demo ships a head trained on its catalog's groups (`vistas train-head ... --label-column category`)."""
    for shipped in sorted((DEMO / "heads").iterdir()):
        target = heads_dir(settings.data_dir) / shipped.name
        if not target.exists():
            shutil.copytree(shipped, target)
            click.echo(f"installed the demo's custom head {shipped.name!r} (its labels join the tags)")
    publish_heads(settings)

