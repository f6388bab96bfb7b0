"""`vistas`: the command line for indexing a catalog and serving recommendations.

One module per command, loaded when that command runs (as in click's "complex"
example), so `vistas status` never imports the backbone. Every option that is
also a setting can come from the environment (REDIS_URL, VISTAS_DATA_DIR,
VISTAS_KEY_PREFIX, ...); a flag wins over the environment.
"""

from __future__ import annotations

import importlib
import logging
import sys
from pathlib import Path

import click

from recommender.settings import Settings

#: Command name -> its module under indexer/cli/, in the order `vistas --help` lists them.
COMMANDS = {
    "ingest": "ingest", "serve": "serve", "demo": "demo", "train-head": "train_head", "eval": "evaluate",
    "worker": "worker", "reindex": "reindex", "train-users": "train_users", "status": "status",
}


class Commands(click.Group):
    """Finds each command in its own module, imported only when it is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        return importlib.import_module(f"indexer.cli.{module}").command if module else None


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("openTSNE").setLevel(logging.WARNING)  # it narrates every optimisation phase at INFO


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--redis-url", help="Redis holding the catalog [env REDIS_URL; default redis://127.0.0.1:6379/0].")
@click.option("--data-dir", type=click.Path(path_type=Path),
              help="Index versions and embedded Redis data [env VISTAS_DATA_DIR; default .vistas].")
@click.option("--key-prefix",
              help="Prefix of every Redis key, to share one Redis [env VISTAS_KEY_PREFIX; default vistas].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]),
              help="Where the backbone runs [env VISTAS_DEVICE; default auto = CUDA when present].")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.pass_context
def main(ctx: click.Context, redis_url: str | None, data_dir: Path | None, key_prefix: str | None,
         device: str | None, verbose: bool) -> None:
    """Vistas: content-based image recommendations from photos.

    Photos are tagged by a pretrained CNN, tags and features are grouped into
    30 readable topics with NMF, and each item's topic vector goes into a FAISS
    index that the API searches for "similar items".

    \b
    Typical use:
      vistas demo                      index the bundled catalog and serve it
      vistas ingest photos/            index a folder (or a CSV / JSON-lines manifest)
      vistas serve --workers 4         serve the API with gunicorn
      vistas worker                    tag and index queued items (run one per GPU / machine)
      vistas reindex --reuse-features  refit topics and publish a new index version
      vistas eval --users              choose the user model's blend weights on the events
      vistas train-users               fit the user model and publish a new version of it
      vistas status                    queue, workers, dead letters, versions
    """
    _setup_logging(verbose)
    try:
        ctx.obj = Settings.from_env(redis_url=redis_url, data_dir=data_dir, key_prefix=key_prefix, device=device)
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from None
