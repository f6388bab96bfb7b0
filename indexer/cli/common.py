"""What several commands share: the store, reachable or a message that says how to fix it."""

from __future__ import annotations

import click

from recommender.settings import Settings
from recommender.store import Store


def open_store(settings: Settings) -> Store:
    """The configured Redis, pinged: a click error naming the URL when it does not answer."""
    store = Store.from_settings(settings)
    try:
        store.ping()
    except Exception as exc:  # noqa: BLE001 - turned into a message that says how to fix it
        raise click.ClickException(
            f"cannot reach Redis at {settings.redis_url_or_default} ({exc}); start one or set REDIS_URL"
        ) from None
    return store


def setting_default(setting: str) -> object:
    """A setting's default, for option help texts."""
    return Settings.__dataclass_fields__[setting].default
