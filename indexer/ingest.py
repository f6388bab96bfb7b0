"""Ingesting a catalog inline: store items, tag photos, give them topic vectors.

On an empty catalog this fits the topic model and builds version 1; on a
catalog that already has a version, the new items get vectors from the
current model (no refit) and a place on its map, and are announced on the
changes stream so running API processes serve them at once. :func:`enqueue`
instead leaves the tagging to `vistas worker` processes.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from tqdm import tqdm

from indexer.build import build_version
from indexer.manifest import Entry
from indexer.reindex import LOCK_TTL_S
from indexer.vectors import CurrentModel, Tagged, feature_matrix, index_tagged, place_on_map
from recommender.model.tagger import Tagger, Tagging
from recommender.model.vocabulary import merge_tags
from recommender.photos import ImageError
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.queue import Settled
from recommender.store.reindex import Lease, LockHeld
from recommender.versions import VersionStore

log = logging.getLogger(__name__)
#: Seconds between looks at the reindex lock while another job builds the first version.
FIRST_VERSION_POLL_S = 0.5


@dataclass
class IngestReport:
    """What an ingest did, for the log and the CLI's summary."""

    stored: int = 0
    indexed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    version: int = 0
    built: bool = False
    seconds: float = 0.0
    #: Seconds per phase: tagging, then the topic fit, map and write when a first version was built.
    phases: dict[str, float] = field(default_factory=dict)


def ingest(
    entries: Sequence[Entry], settings: Settings, store: Store, tagger: Tagger | None = None,
    progress: bool = True,
) -> IngestReport:
    """Store, tag and index ``entries``; unreadable photos mark their item failed and the rest go on."""
    started = time.monotonic()
    report = IngestReport()
    for entry in tqdm(entries, desc="storing", unit="item", disable=not progress, leave=False):
        store.items.put(entry.item)
    report.stored = len(entries)

    photos = [(e.item.id, e.photo) for e in entries if e.photo is not None]
    taggings: dict[str, Tagging] = {}
    if photos:
        tagger = tagger or Tagger(settings)
        tagging_started = time.monotonic()
        with tqdm(total=len(photos), desc="tagging", unit="photo", disable=not progress) as bar:
            for item_id, result in tagger.tag(photos, on_done=bar.update):
                if isinstance(result, ImageError):
                    store.items.mark_failed(item_id, str(result))
                    report.failed.append((item_id, str(result)))
                    log.warning("item %s failed: %s", item_id, result)
                else:
                    taggings[item_id] = result
        report.phases["tagging"] = time.monotonic() - tagging_started
    ready = [e.item for e in entries if e.item.id in taggings or (e.photo is None and e.item.given_tags)]
    if not ready:
        report.seconds = time.monotonic() - started
        return report

    tags = [merge_tags(taggings[i.id].labels if i.id in taggings else [], i.given_tags) for i in ready]
    tagged = [Tagged(i.id, i.num, tags[row], taggings[i.id].features if i.id in taggings else None,
                     seen=i.updated_at) for row, i in enumerate(ready)]
    first = _first_version(settings, store, tagged, progress, report.phases) if store.versions.current() == 0 else None
    if first is not None:
        report.version, report.built, report.indexed = first, True, len(ready)
    else:
        codes = index_tagged(store, CurrentModel(settings, store), tagged,
                             on_settled=lambda items, version: place_on_map(settings, store, items, version))
        report.version, report.indexed = store.versions.current(), codes.count(Settled.SETTLED)
    report.seconds = time.monotonic() - started
    log.info(
        "ingested %d items: %d indexed, %d failed, version %d%s, %.1fs",
        report.stored, report.indexed, len(report.failed), report.version, " (new)" if report.built else "",
        report.seconds,
    )
    return report


def _first_version(
    settings: Settings, store: Store, tagged: list[Tagged], progress: bool, phases: dict[str, float]
) -> int | None:
    """Fit the topic model on the first items, build version 1 and make it current; None when another job made a
    version current first (the caller then indexes into that one).

    Two first ingests at once would each build a version, and the later flip would hide the other's items from
    every answer, so this runs under the reindex lock and flips through it (fenced, as a reindex flips).
    """
    lease = _first_version_lease(store)
    if lease is None:
        return None
    try:
        if store.versions.current():  # made while this job waited for the lock
            return None
        version, vectors = build_version(
            settings, store, [t.item_id for t in tagged], [t.num for t in tagged], [t.tags for t in tagged],
            feature_matrix(tagged), phases,
        )
        for t, vector in zip(tqdm(tagged, desc="writing", unit="item", disable=not progress, leave=False), vectors):
            store.items.mark_indexed(t.item_id, t.tags, vector, version, t.features)
        if not lease.flip(version):
            raise RuntimeError(f"ingest {lease.job} lost the reindex lock before making version {version} current "
                               "(it stalled past its renewals); nothing was published: run the ingest again")
        return version
    finally:
        lease.release()


def _first_version_lease(store: Store) -> Lease | None:
    """The reindex lock for a first build, waiting while another job holds it; None once a version is current."""
    job, waiting = f"ingest-{uuid.uuid4().hex[:12]}", None
    while not store.versions.current():
        try:
            return store.reindex.lock(job, LOCK_TTL_S)
        except LockHeld as held:
            if held.holder != waiting:
                log.info("ingest %s: %s holds the reindex lock; waiting for its version", job, held.holder)
                waiting = held.holder
            time.sleep(FIRST_VERSION_POLL_S)
    return None


def enqueue(entries: Sequence[Entry], store: Store, progress: bool = True) -> int:
    """Store items and queue them for `vistas worker` (their photos must be readable by the workers).

    As ``PUT /v1/items/{id}`` does, the write is announced at once: a replaced item leaves the
    running APIs' answers until a worker has indexed its new photo.
    """
    for entry in tqdm(entries, desc="queueing", unit="item", disable=not progress, leave=False):
        store.submit(entry.item)
    return len(entries)


def forget_everything(settings: Settings, store: Store) -> None:
    """Delete every item, stream and version of this key prefix and data directory (`ingest --reset`)."""
    store.clear()
    for folder in ("versions", "user-models"):
        VersionStore.for_settings(settings, folder).delete_all()
