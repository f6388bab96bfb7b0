"""`vistas worker`: tag and index queued items, one process per GPU or machine."""

from __future__ import annotations

import click

from indexer.cli.common import open_store, setting_default
from indexer.worker import Worker
from recommender.settings import Settings


@click.command("worker")
@click.option("--batch", type=click.IntRange(1, 100_000),
              help="Photos tagged together at most "
                   f"[env VISTAS_WORKER_BATCH; default {setting_default('worker_batch')}].")
@click.option("--batch-ms", type=click.IntRange(0, 60_000),
              help="...or what arrived within this many ms of the first "
                   f"[env VISTAS_WORKER_BATCH_MS; default {setting_default('worker_batch_ms')}].")
@click.option("--threads", type=click.IntRange(1, 1024),
              help="Threads to tag with, inference and decoding together [env VISTAS_THREADS; default the cores "
                   "this process may run on].")
@click.option("--name", help="Consumer name in the group [default HOST-PID]; a worker restarted under the same "
                             "name settles what it left pending at once.")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty instead of waiting for more.")
@click.pass_obj
def command(settings: Settings, batch: int | None, batch_ms: int | None, threads: int | None, name: str | None,
            burst: bool) -> None:
    """Tag and index queued items: the indexer worker (one per GPU or machine).

    Workers share the ingest stream as one Redis consumer group: run as many
    as you like, anywhere that reaches the same Redis and sees the photos.
    Each takes up to --batch photos (or what arrived within --batch-ms),
    tags them on the best device (VISTAS_DEVICE), gives them vectors from the
    current topic model and acknowledges them. Messages of a worker that died
    are claimed by another after VISTAS_CLAIM_IDLE seconds; a photo that fails
    VISTAS_MAX_ATTEMPTS times goes to the dead letters (`vistas status`) and
    its item is marked failed with the reason. SIGTERM or Ctrl-C finishes the
    current batch, then exits.
    """
    store = open_store(settings)
    chosen = (("worker_batch", batch), ("worker_batch_ms", batch_ms), ("threads", threads))
    settings = settings.with_(**{k: v for k, v in chosen if v})
    stats = Worker(settings, store, name=name, burst=burst).run()
    click.echo(f"indexed {stats.indexed}, re-tagged {stats.retagged}, failed {stats.failed}")

