"""`vistas eval`: measure every representation on the current catalog and choose the serving one;
`vistas eval --users`: choose the user model's blend weights and hyperparameters on the events."""

from __future__ import annotations

import json
from pathlib import Path

import click

from indexer.cli.common import open_store
from indexer.evaluation import evaluate_store
from indexer.users import tune_users
from recommender.model.exported import fetch_heads
from recommender.model.vocabulary import display_names
from recommender.settings import Settings


@click.command("eval")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the report here.")
@click.option("--users", is_flag=True,
              help="Instead: choose the user model's blend weights and hyperparameters on the users' events.")
@click.option("--quick", is_flag=True, help="With --users: the blend weights only, default hyperparameters.")
@click.pass_obj
def command(settings: Settings, json_path: Path | None, users: bool, quick: bool) -> None:
    """Measure every representation on the current catalog and choose the serving one.

    
    With --users: hold out each user's last event (time order), choose the
    blend weights of the hybrid (content, collaborative, viewed-next, trending,
    popular; one set for histories of at most 5 items, one for those back after
    an hour away, one for longer) and its hyperparameters by NDCG@10 on that
    holdout, each user asked a second before the event to predict, and record
    them in Redis:
    `vistas train-users` and the API use exactly those. Under 2,000 events or
    50 users with a holdout, the defaults are recorded and said so.

    \b
    For raw features and for NMF topics on tags, on features and on both:
      recall   landmark recall@10: other photos of the same place in the top 10
               (items with a `landmark` attribute)
      prec     category precision@10: share of the top 10 in the item's category
      cover    share of items that appear in someone's top 10
      npmi     NPMI coherence of the topics' top-5 tags over the items' tags (-1..1), mean
      worst5   the same, mean of the 5 least coherent topics
      names    share of topics with a name of their own
      agree    share of items whose top topic shares a tag with the item's top 5
    Serves: the most coherent topic representation among those within 0.005 of
    the best recall (and then of the best precision). The choice is recorded;
    the next build or reindex uses it.
    """
    store = open_store(settings)
    if users:
        _users(settings, store, quick, json_path)
        return
    if quick:
        raise click.UsageError("--quick goes with --users")
    scores = evaluate_store(store, settings.n_topics, display_names(fetch_heads(settings)))
    if scores is None:
        raise click.ClickException("the catalog has fewer than 3 indexed items: ingest one first")
    store.versions.set_representation(scores.best)
    click.echo(f"{scores.items} indexed items, k=10\n{'representation':15s} {'recall':>6s} {'prec':>6s} "
               f"{'cover':>6s} {'npmi':>6s} {'worst5':>6s} {'names':>6s} {'agree':>6s}")
    for r in scores.results:
        mark = "   <- serving" if r.representation == scores.best else ""
        i = r.interpretability
        measured = (i.npmi, i.npmi_worst, i.distinct_names, i.agreement) if i else (None,) * 4
        readable = " ".join(_cell(x) for x in measured)
        click.echo(f"{r.representation:15s} {_cell(r.landmark_recall)} {_cell(r.category_precision)} "
                   f"{_cell(r.coverage)} {readable}{mark}")
    click.echo(f"tag accuracy (the item's category among its tags): {_cell(scores.tag_accuracy).strip()}")
    click.echo(f"serving representation: {scores.best} (used by the next build or reindex)")
    if json_path:
        json_path.write_text(json.dumps(scores.to_json(), indent=1))


def _cell(x: float | None) -> str:
    return "     -" if x is None else f"{x:6.3f}"


def _users(settings: Settings, store, quick: bool, json_path: Path | None) -> None:
    try:
        tuning = tune_users(settings, store, quick, log_line=click.echo)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{tuning['events']} events of {tuning['users']} users")
    if not tuning["chosen"]:
        click.echo(f"too few to choose from ({tuning['reason']}): recorded the default weights")
    for bucket, weights in tuning["weights"].items():
        score = tuning["validation"].get(bucket)
        measured = (f"  HR@10 {score['hr']:.4f} NDCG@10 {score['ndcg']:.4f} on {int(score['users'])} users"
                    if score else "")
        click.echo(f"{bucket:5s} " + " ".join(f"{s} {w:g}" for s, w in weights.items()) + measured)
    click.echo("recorded in Redis: the next `vistas train-users` fits with these, and the API blends with them")
    if json_path:
        json_path.write_text(json.dumps(tuning, indent=1))
