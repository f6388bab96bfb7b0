"""Ingesting a catalog inline: store items, tag photos, give them topic vectors.

On an empty catalog this fits the topic model and builds version 1; on a
catalog that already has a version, the new items get vectors from the
current model (no refit) and a place on its map, and are announced on the
changes stream so running API processes serve them at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from indexer.build import build_version, load_model
from indexer.images import ImageError
from indexer.manifest import Entry
from indexer.projection import place_items
from indexer.tagger import Tagger, Tagging
from indexer.vocabulary import normalize_tag
from recommender.catalog import UPSERT, Catalog
from recommender.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """What an ingest did, for the log and the CLI's summary."""

    stored: int = 0
    indexed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    version: int = 0
    built: bool = False
    seconds: float = 0.0


def merge_tags(labels: Sequence[tuple[str, float]], given: Sequence[str]) -> list[tuple[str, float]]:
    """Backbone labels plus the item's given tags, which count as certain."""
    merged = {label: score for label, score in labels}
    for tag in given:
        merged[normalize_tag(tag)] = 1.0
    return sorted(merged.items(), key=lambda kv: -kv[1])


def ingest(
    entries: Sequence[Entry], settings: Settings, catalog: Catalog, tagger: Tagger | None = None,
    progress: bool = True,
) -> IngestReport:
    """Store, tag and index ``entries``; unreadable photos mark their item failed and the rest go on."""
    started = time.monotonic()
    report = IngestReport()
    for entry in tqdm(entries, desc="storing", unit="item", disable=not progress, leave=False):
        catalog.put(entry.item)
    report.stored = len(entries)

    photos = [(e.item.id, e.photo) for e in entries if e.photo is not None]
    taggings: dict[str, Tagging] = {}
    if photos:
        tagger = tagger or Tagger(settings)
        with tqdm(total=len(photos), desc="tagging", unit="photo", disable=not progress) as bar:
            for item_id, result in tagger.tag(photos, on_done=bar.update):
                if isinstance(result, ImageError):
                    catalog.mark_failed(item_id, str(result))
                    report.failed.append((item_id, str(result)))
                    log.warning("item %s failed: %s", item_id, result)
                else:
                    taggings[item_id] = result
    ready = [e.item for e in entries if e.item.id in taggings or (e.photo is None and e.item.given_tags)]
    if not ready:
        report.seconds = time.monotonic() - started
        return report

    tags = [merge_tags(taggings[i.id].labels if i.id in taggings else [], i.given_tags) for i in ready]
    features = None
    if taggings:
        dim = next(iter(taggings.values())).features.shape[0]
        zeros = np.zeros(dim, dtype=np.float32)
        features = np.stack([taggings[i.id].features if i.id in taggings else zeros for i in ready])

    version = catalog.current_version()
    if version == 0:
        version, vectors = build_version(settings, catalog, [i.id for i in ready], [i.num for i in ready], tags, features)
        report.built = True
    else:
        vectors = load_model(settings, version).transform(tags, features)
        place_items(settings, catalog, version, [i.id for i in ready], tags, features)
    for row, item in enumerate(tqdm(ready, desc="writing", unit="item", disable=not progress, leave=False)):
        feats = taggings[item.id].features if item.id in taggings else None
        catalog.mark_indexed(item.id, tags[row], vectors[row], version, feats)
        if not report.built:
            catalog.publish_change(UPSERT, item.id, item.num)
    if report.built:
        catalog.set_current_version(version)
    report.indexed, report.version = len(ready), version
    report.seconds = time.monotonic() - started
    log.info(
        "ingested %d items: %d indexed, %d failed, version %d%s, %.1fs",
        report.stored, report.indexed, len(report.failed), version, " (new)" if report.built else "", report.seconds,
    )
    return report
