"""`vistas reindex --rollback`: serve the newest kept version before the current one again.

It goes through a reindex's own steps (lock, publish, finish), so the flip is fenced like a
reindex's and items get that version's vectors the same way.
"""

from __future__ import annotations

import logging

from indexer.reindex import Reindex, ReindexError, ReindexReport
from recommender.index import TopicIndex
from recommender.model.topics import load_model
from recommender.settings import Settings
from recommender.store import Store

log = logging.getLogger(__name__)


def rollback(settings: Settings, store: Store, progress: bool = True) -> ReindexReport:
    """Serve the newest kept version before the current one again, items' vectors included."""
    job = Reindex(settings, store, progress=progress)
    current = store.versions.current()
    earlier = [v for v in job.files.versions() if v < current]
    if not earlier:
        raise ReindexError(f"no index version before {current} is kept under {job.files.root}; nothing to roll back to")
    target = max(earlier)
    with job.locked():
        job.begin()
        job.changes_from = job.files.manifest(target).get("changes_from", "0-0")
        # The changes stream is capped: when it no longer reaches back to the target's build, announce all.
        changed = None if store.changes.kept_after(job.changes_from) else set(store.items.ids())
        job.publish(target, load_model(settings, target, store), None, changed)
        job.report.items = len(TopicIndex.load(job.files.path(target)))
        log.info("rolled back from index version %d to %d", current, target)
        return job.finish()
