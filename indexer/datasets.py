"""Labelled photo sets for training heads: a folder of sub-folders (one per label) or a CSV of image,label,
and the feature rows a head trains on."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from indexer.manifest import IMAGE_SUFFIXES, ManifestError
from recommender.model.tagger import Tagger
from recommender.photos import ImageError
from recommender.settings import Settings
from recommender.store import Store


def read_labelled(path: Path, label_column: str = "label") -> list[tuple[Path, str]]:
    """(photo, label) pairs; CSV image paths are relative to the CSV, labels in ``label_column``."""
    path = Path(path)
    if path.is_dir():
        pairs = [(p.resolve(), sub.name) for sub in sorted(path.iterdir()) if sub.is_dir()
                 for p in sorted(sub.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    elif path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"image", label_column} <= set(reader.fieldnames):
                raise ManifestError(f"{path}: the header must have 'image' and '{label_column}' columns")
            pairs = [((path.parent / row["image"]).resolve(), row[label_column].strip()) for row in reader
                     if row["image"] and row[label_column].strip()]
    else:
        raise ManifestError(f"{path}: expected a folder of label sub-folders or a CSV with image,label")
    if len({label for _, label in pairs}) < 2:
        raise ManifestError(f"{path}: a head needs photos of at least 2 labels")
    return pairs


@dataclass
class LabelledFeatures:
    """A head's training set: one feature row per usable photo, its label, and what was left out."""

    features: np.ndarray
    labels: list[str]
    stored: int  # rows taken from features stored at indexing time (no forward pass)
    tagged: int  # photos that needed a forward pass, readable or not
    skipped: list[tuple[Path, str]]  # unreadable photos and why


def labelled_features(
    settings: Settings, store: Store, pairs: list[tuple[Path, str]], tagger: Tagger | None = None,
) -> LabelledFeatures:
    """Stored features for photos already indexed; a forward pass for the rest (unreadable ones skipped)."""
    by_image = {item.image: item.id for item in store.items.iter_items() if item.image}
    known = [i for i in (by_image.get(str(path)) for path, _ in pairs) if i]
    found = dict(zip(known, store.items.features_many(known)))
    features: dict[int, np.ndarray] = {}
    for n, (path, _) in enumerate(pairs):
        stored = found.get(by_image.get(str(path), ""))
        if stored is not None:
            features[n] = stored
    stored_count = len(features)
    missing = [(n, path) for n, (path, _) in enumerate(pairs) if n not in features]
    skipped = []
    if missing:
        for n, result in (tagger or Tagger(settings)).tag(missing):
            if isinstance(result, ImageError):
                skipped.append((pairs[n][0], str(result)))
            else:
                features[n] = result.features
    rows = sorted(features)
    return LabelledFeatures(np.stack([features[n] for n in rows]), [pairs[n][1] for n in rows], stored_count,
                            len(missing), skipped)
