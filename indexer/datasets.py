"""Labelled photo sets for training heads: a folder of sub-folders (one per label) or a CSV of image,label."""

from __future__ import annotations

import csv
from pathlib import Path

from indexer.manifest import IMAGE_SUFFIXES, ManifestError


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
