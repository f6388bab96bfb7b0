"""`vistas`: the command line for indexing a catalog and serving recommendations.

Every option that is also a setting can come from the environment
(REDIS_URL, VISTAS_DATA_DIR, VISTAS_KEY_PREFIX, ...); a flag wins over the
environment.
"""

from __future__ import annotations

import logging
import sys
from contextlib import ExitStack
from pathlib import Path

import click

from recommender.settings import Settings

DEMO = Path(__file__).resolve().parent.parent / "demo"
DEMO_CATALOG = DEMO / "catalog" / "manifest.csv"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("openTSNE").setLevel(logging.WARNING)  # it narrates every optimisation phase at INFO


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--redis-url", help="Redis holding the catalog [env REDIS_URL; default redis://127.0.0.1:6379/0].")
@click.option("--data-dir", type=click.Path(path_type=Path),
              help="Index versions and embedded Redis data [env VISTAS_DATA_DIR; default .vistas].")
@click.option("--key-prefix", help="Prefix of every Redis key, to share one Redis [env VISTAS_KEY_PREFIX; default vistas].")
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
      vistas status                    queue, workers, dead letters, versions
    """
    _setup_logging(verbose)
    try:
        ctx.obj = Settings.from_env(redis_url=redis_url, data_dir=data_dir, key_prefix=key_prefix, device=device)
    except (ValueError, TypeError) as exc:
        raise click.UsageError(str(exc)) from None


def _store(settings: Settings):
    from recommender.store import Store

    store = Store.from_url(settings.redis_url_or_default, settings.key_prefix)
    try:
        store.ping()
    except Exception as exc:  # noqa: BLE001 - turned into a message that says how to fix it
        raise click.ClickException(
            f"cannot reach Redis at {settings.redis_url_or_default} ({exc}); start one or set REDIS_URL"
        ) from None
    return store


@main.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--reset", is_flag=True, help="Forget every item and version under this key prefix first.")
@click.option("--batch-size", type=click.IntRange(1, 4096), help="Photos per forward pass [env VISTAS_BATCH_SIZE].")
@click.option("--enqueue", is_flag=True,
              help="Store the items and leave the tagging to `vistas worker` processes (returns at once).")
@click.pass_obj
def ingest(settings: Settings, path: Path, reset: bool, batch_size: int | None, enqueue: bool) -> None:
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
    _ingest(settings.with_(batch_size=batch_size) if batch_size else settings, path, reset, enqueue)


def _ingest(settings: Settings, path: Path, reset: bool, enqueue: bool = False) -> None:
    from indexer.ingest import enqueue as enqueue_items
    from indexer.ingest import ingest as run_ingest
    from indexer.manifest import ManifestError, read_catalog

    store = _store(settings)
    try:
        entries = read_catalog(path)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None
    if not entries:
        raise click.ClickException(f"{path} holds no items (photos: .jpg .png .webp ...; or a manifest)")
    if reset:
        import shutil

        store.clear()
        shutil.rmtree(settings.data_dir / "versions", ignore_errors=True)
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
        report = run_ingest(entries, settings, store)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{report.indexed} of {report.stored} items indexed, {len(report.failed)} failed, "
        f"index version {report.version}{' (new)' if report.built else ''}, {report.seconds:.1f}s"
    )
    for item_id, reason in report.failed[:20]:
        click.echo(f"  failed {item_id}: {reason}", err=True)


@main.command()
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="Address to listen on.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True,
              help="gunicorn worker processes; each holds the index in memory.")
@click.pass_obj
def serve(settings: Settings, bind: str, workers: int) -> None:
    """Serve the recommender API (gunicorn).

    Endpoints: /healthz, /readyz, /v1/items/ID, /v1/items/ID/similar?k=10, /v1/topics,
    /v1/map, /v1/items/ID/thumbnail; the catalog map page is at /.
    """
    from recommender.server import GunicornServer

    _store(settings)
    GunicornServer(settings, bind, workers).run()


@main.command()
@click.option("--bind", default="127.0.0.1:8000", show_default=True, help="Address to listen on.")
@click.option("--workers", type=click.IntRange(1, 64), default=2, show_default=True, help="gunicorn workers.")
@click.option("--catalog", "catalog_path", type=click.Path(exists=True, path_type=Path), default=DEMO_CATALOG,
              show_default=True, help="Catalog to index.")
@click.pass_obj
def demo(settings: Settings, bind: str, workers: int, catalog_path: Path) -> None:
    """Index the bundled demo catalog (523 real photos) and serve it.

    Uses REDIS_URL when set; otherwise starts a real redis-server of its own
    with its data under the data directory. Indexing is skipped when the
    catalog is already indexed. Ctrl-C stops everything.
    """
    from indexer.embedded_redis import EmbeddedRedis
    from indexer.manifest import read_catalog
    from recommender.server import GunicornServer

    _install_demo_heads(settings)
    with ExitStack() as stack:
        if settings.redis_url is None:
            server = stack.enter_context(EmbeddedRedis(settings.data_dir / "redis"))
            settings = settings.with_(redis_url=server.url)
            click.echo(f"started redis-server at {server.url}")
        store = _store(settings)
        expected = {entry.item.id for entry in read_catalog(catalog_path)}
        if store.versions.current() and expected <= set(store.items.ids()):
            click.echo(f"demo catalog already indexed (version {store.versions.current()}, "
                       f"{store.items.count()} items)")
        else:
            _ingest(settings, catalog_path, reset=False)
        host = bind if "://" in bind else f"http://{bind}"
        sample = sorted(expected)[0] if expected else "ID"
        click.echo(
            "\nVistas demo is up. Try:\n"
            f"  {host}/                  the catalog map\n"
            f"  {host}/readyz\n  {host}/v1/topics\n  {host}/v1/items/{sample}\n"
            f"  {host}/v1/items/{sample}/similar?k=5\n"
            "Ctrl-C stops the API and everything the demo started.\n"
        )
        GunicornServer(settings, bind, workers).run()


def _install_demo_heads(settings: Settings) -> None:
    """The demo ships a head trained on its catalog's groups (`vistas train-head ... --label-column category`)."""
    import shutil

    from recommender.model.heads import heads_dir

    for shipped in sorted((DEMO / "heads").iterdir()):
        target = heads_dir(settings.data_dir) / shipped.name
        if not target.exists():
            shutil.copytree(shipped, target)
            click.echo(f"installed the demo's custom head {shipped.name!r} (its labels join the tags)")


@main.command("train-head")
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option("--name", required=True, help="Head name; its labels become tags (saved under DATA_DIR/heads/NAME).")
@click.option("--label-column", default="label", show_default=True, help="CSV column holding the labels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split and the training.")
@click.pass_obj
def train_head_command(settings: Settings, dataset: Path, name: str, label_column: str, seed: int) -> None:
    """Learn custom labels (your taxonomy) from DATASET: a folder of label sub-folders, or a CSV image,label.

    Uses the stored features of photos already indexed (no second forward
    pass) and tags the others. Trains a 2-layer head (hidden layer, dropout,
    class weights, early stopping), prints its held-out accuracy beside a
    logistic regression's, and saves it: the tagger applies it from then on,
    and the next reindex folds its labels into the topics.
    """
    from tqdm import tqdm

    from indexer.datasets import read_labelled
    from indexer.heads import train_head
    from recommender.model.heads import heads_dir
    from indexer.manifest import ManifestError

    if not name.replace("-", "").replace("_", "").isalnum():
        raise click.BadParameter("use letters, digits, - and _", param_hint="--name")
    try:
        pairs = read_labelled(dataset, label_column)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None
    features, labels = _features_of(settings, pairs)
    try:
        with tqdm(desc="training", unit="epoch") as bar:
            head, report = train_head(name, features, labels, seed=seed, on_epoch=lambda *_: bar.update())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    head.save(heads_dir(settings.data_dir) / name, report)
    click.echo(
        f"head {name}: {report.labels} labels, {report.train_size} training / {report.heldout_size} held-out photos\n"
        f"  held-out accuracy       {report.heldout_accuracy:.3f}   (top-5 {report.heldout_top5_accuracy:.3f})\n"
        f"  logistic regression     {report.logistic_regression_accuracy:.3f}   (same features, same split)\n"
        f"saved to {heads_dir(settings.data_dir) / name}; reindex (or re-ingest) to use its tags in topics"
    )


def _features_of(settings: Settings, pairs: list[tuple[Path, str]]):
    """Stored features for photos already indexed; a forward pass for the rest (unreadable ones skipped)."""
    import numpy as np

    from recommender.photos import ImageError
    from recommender.model.tagger import Tagger

    store = _store(settings)
    by_image = {item.image: item.id for item in store.items.iter_items() if item.image}
    known = [i for i in (by_image.get(str(path)) for path, _ in pairs) if i]
    found = dict(zip(known, store.items.features_many(known)))
    features: dict[int, np.ndarray] = {}
    for n, (path, _) in enumerate(pairs):
        stored = found.get(by_image.get(str(path), ""))
        if stored is not None:
            features[n] = stored
    missing = [(n, path) for n, (path, _) in enumerate(pairs) if n not in features]
    click.echo(f"{len(features)} photos have stored features, {len(missing)} need tagging")
    if missing:
        for n, result in Tagger(settings).tag(missing):
            if isinstance(result, ImageError):
                click.echo(f"  skipped {pairs[n][0]}: {result}", err=True)
            else:
                features[n] = result.features
    rows = sorted(features)
    return np.stack([features[n] for n in rows]), [pairs[n][1] for n in rows]


@main.command("eval")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the report here.")
@click.pass_obj
def eval_command(settings: Settings, json_path: Path | None) -> None:
    """Measure every representation on the current catalog and choose the serving one.

    \b
    For raw features and for NMF topics on tags, on features and on both:
      recall   landmark recall@10: other photos of the same place in the top 10
               (items with a `landmark` attribute)
      prec     category precision@10: share of the top 10 in the item's category
      cover    share of items that appear in someone's top 10
      coher    how often a topic's top tags occur on the same items
    The best topic representation is recorded; the next build or reindex uses it.
    """
    import json

    import numpy as np

    from indexer.evaluation import best_representation, evaluate, tag_accuracy
    from recommender.store.items import Status

    store = _store(settings)
    items = [i for i in store.items.iter_items() if i.status == Status.INDEXED]
    if len(items) < 3:
        raise click.ClickException("the catalog has fewer than 3 indexed items: ingest one first")
    stored = store.items.features_many([i.id for i in items])
    dim = next((f.shape[0] for f in stored if f is not None), 0)
    features = np.stack([f if f is not None else np.zeros(dim, np.float32) for f in stored])
    tags = [i.tags for i in items]
    categories = [i.category for i in items]
    landmarks = [str(i.attrs.get("landmark", "")) for i in items]
    results = evaluate(tags, features, categories, landmarks, n_topics=settings.n_topics)
    best = best_representation(results)
    store.versions.set_representation(best)

    def cell(x: float | None) -> str:
        return "     -" if x is None else f"{x:6.3f}"

    click.echo(f"{len(items)} indexed items, k=10\n{'representation':15s} {'recall':>6s} {'prec':>6s} "
               f"{'cover':>6s} {'coher':>6s}")
    for r in results:
        mark = "   <- serving" if r.representation == best else ""
        click.echo(f"{r.representation:15s} {cell(r.landmark_recall)} {cell(r.category_precision)} "
                   f"{cell(r.coverage)} {cell(r.topic_coherence)}{mark}")
    accuracy = tag_accuracy(tags, categories)
    click.echo(f"tag accuracy (the item's category among its tags): {cell(accuracy).strip()}")
    click.echo(f"serving representation: {best} (used by the next build or reindex)")
    if json_path:
        json_path.write_text(json.dumps({"items": len(items), "serving": best, "tag_accuracy": accuracy,
                                         "representations": [r.to_json() for r in results]}, indent=1))


def _default(setting: str) -> object:
    return Settings.__dataclass_fields__[setting].default


@main.command()
@click.option("--batch", type=click.IntRange(1, 100_000),
              help=f"Photos tagged together at most [env VISTAS_WORKER_BATCH; default {_default('worker_batch')}].")
@click.option("--batch-ms", type=click.IntRange(0, 60_000),
              help="...or what arrived within this many ms of the first "
                   f"[env VISTAS_WORKER_BATCH_MS; default {_default('worker_batch_ms')}].")
@click.option("--name", help="Consumer name in the group [default HOST-PID]; a worker restarted under the same "
                             "name settles what it left pending at once.")
@click.option("--burst", is_flag=True, help="Exit when the queue is empty instead of waiting for more.")
@click.pass_obj
def worker(settings: Settings, batch: int | None, batch_ms: int | None, name: str | None, burst: bool) -> None:
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
    from indexer.worker import Worker

    store = _store(settings)
    settings = settings.with_(**{k: v for k, v in (("worker_batch", batch), ("worker_batch_ms", batch_ms)) if v})
    stats = Worker(settings, store, name=name, burst=burst).run()
    click.echo(f"indexed {stats.indexed}, re-tagged {stats.retagged}, failed {stats.failed}")


@main.command()
@click.option("--reuse-features", is_flag=True,
              help="Use the tags and features stored at indexing time instead of re-tagging every photo.")
@click.option("--distributed", is_flag=True, help="Re-tag on the running `vistas worker` processes, not here.")
@click.option("--rollback", is_flag=True, help="Serve the newest kept version before the current one again.")
@click.pass_obj
def reindex(settings: Settings, reuse_features: bool, distributed: bool, rollback: bool) -> None:
    """Rebuild the index as a new version and switch every API to it at once.

    Re-tags every photo (or reuses stored features), refits the topic model
    (on VISTAS_FIT_SAMPLE items at most), transforms every item, writes
    version N+1 next to N and flips the `current` pointer in Redis in one
    step. Running APIs load N+1 in the background and swap between requests;
    items indexed by workers meanwhile are moved to N+1 too. The newest
    VISTAS_KEEP_VERSIONS versions are kept; --rollback goes back to the one
    before the current.
    """
    from indexer.reindex import Reindex, ReindexError
    from indexer.reindex import rollback as roll_back

    if rollback and (reuse_features or distributed):
        raise click.UsageError("--rollback takes no other option")
    if reuse_features and distributed:
        raise click.UsageError("--distributed re-tags on the workers; with --reuse-features nothing is re-tagged")
    store = _store(settings)
    try:
        report = roll_back(settings, store) if rollback else Reindex(settings, store).run(reuse_features, distributed)
    except ReindexError as exc:
        raise click.ClickException(str(exc)) from None
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in report.phases.items())
    click.echo(f"index version {report.version} is current: {report.items} items, {report.failed} failed, "
               f"{report.retransformed} re-transformed after the flip, {report.seconds:.1f}s ({phases})")


@main.command()
@click.pass_obj
def status(settings: Settings) -> None:
    """Queue length, pending and dead letters, running workers, versions, the last reindex."""
    from indexer.status import report

    click.echo(report(settings, _store(settings)))


if __name__ == "__main__":
    main()
