"""Changes trimmed away before an API process applied them: counted, logged, and repaired by reading
Redis's current items (the changes stream is capped, so a process that loads a version late, or lags
behind, can find entries it needed gone; it must reload, never go on silently without them)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

from prometheus_client import Counter

from recommender.store.items import Item, Items

log = logging.getLogger(__name__)
GAPS = Counter("vistas_changes_gaps_total", "Versions reloaded because changes they needed were trimmed away")


def log_gap(version: int, after: str) -> None:
    """Say that served index ``version`` found the changes after stream entry ``after`` trimmed away."""
    log.warning("changes after %s were trimmed from the stream before index version %d applied them: "
                "reloading the version", after, version)


def current_items(items: Items, served: Iterable[int], version: int, after: str
                  ) -> Iterator[list[tuple[int, Item | None]]]:
    """Pages of (num, item) for every item Redis lists (SSCAN pages), then (num, None) for each of the
    ``served`` nums it no longer lists (deleted meanwhile): what loading ``version`` reads instead of
    the changes after ``after``, trimmed away. Counted in ``vistas_changes_gaps_total``."""
    GAPS.inc()
    log.warning("loading index version %d: the changes after %s were trimmed from the stream; reading every "
                "item's current state from Redis instead", version, after)
    started, stale, count = time.monotonic(), set(served), 0
    for page in items.pages():
        stale.difference_update(item.num for item in page)
        count += len(page)
        yield [(item.num, item) for item in page]
    yield [(num, None) for num in stale]
    log.info("read %d items (%d gone) from Redis in %.2fs", count, len(stale), time.monotonic() - started)
