"""`vistas train-users`: fit the user model on every user's events and publish it as a new version."""

from __future__ import annotations

import click

from indexer.cli.common import open_store
from indexer.users import train_users
from recommender.settings import Settings


@click.command("train-users")
@click.pass_obj
def command(settings: Settings) -> None:
    """Fit the hybrid user model and switch every API to it.

    \b
    Reads every user's events from Redis, fits ALS and item-item co-occurrence
    (implicit), "viewed next" and popularity, with the blend weights and
    hyperparameters `vistas eval --users` recorded (defaults before it ran),
    writes user-model version N+1 under VISTAS_DATA_DIR/user-models and flips
    the pointer in Redis. Running APIs load it in the background and swap
    between requests. The newest VISTAS_KEEP_VERSIONS versions are kept.
    """
    store = open_store(settings)
    try:
        report = train_users(settings, store)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in report.phases.items())
    weights = "chosen by `vistas eval --users`" if report.weights_chosen else "defaults"
    click.echo(f"user model {report.version} is current: {report.users} users, {report.events} events, "
               f"{report.items} items, weights {weights}, {report.model_bytes / 1e6:.1f} MB, "
               f"{report.seconds:.1f}s ({phases})")
