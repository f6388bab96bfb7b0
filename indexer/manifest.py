"""Reading a catalog to ingest: a folder of photos, or a CSV / JSON-lines manifest.

Manifest columns: ``id, title, kind, category, image, price, starts_at,
ends_at, tags`` (tags separated by ``|`` in CSV, a list in JSON). Image paths
are relative to the manifest; an item without an image needs tags. Any other
column is kept in the item's ``attrs``.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recommender.store.items import Item, parse_timestamp, valid_item_id

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
COLUMNS = ("id", "title", "kind", "category", "image", "price", "starts_at", "ends_at", "tags")


class ManifestError(ValueError):
    """A catalog file that cannot be ingested; the message names the line and the fix."""


@dataclass
class Entry:
    """An item to ingest and the photo to tag (None when only tags are given)."""

    item: Item
    photo: Path | None


def read_catalog(path: Path) -> list[Entry]:
    """Entries of a folder of photos, a ``.csv`` or a ``.jsonl``/``.ndjson`` manifest."""
    path = Path(path)
    if path.is_dir():
        entries = list(_from_folder(path))
    elif path.suffix.lower() == ".csv":
        entries = list(_from_rows(path, _csv_rows(path)))
    elif path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        entries = list(_from_rows(path, _json_rows(path)))
    elif path.exists():
        raise ManifestError(f"{path}: expected a folder of photos, a .csv or a .jsonl manifest")
    else:
        raise ManifestError(f"{path}: no such file or folder")
    seen: set[str] = set()
    for entry in entries:
        if entry.item.id in seen:
            raise ManifestError(f"{path}: item id {entry.item.id!r} appears twice")
        seen.add(entry.item.id)
    return entries


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._:-]+", "-", text).strip("-")[:128] or "item"


def _from_folder(root: Path) -> Iterator[Entry]:
    for photo in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
        rel = photo.relative_to(root)
        category = rel.parent.as_posix().replace("/", "-") if rel.parent != Path(".") else ""
        item = Item(
            id=_slug(rel.with_suffix("").as_posix().replace("/", "-")),
            title=photo.stem.replace("-", " ").replace("_", " ").strip().capitalize(),
            category=category, image=str(photo.resolve()),
        )
        yield Entry(item, photo)


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "id" not in reader.fieldnames:
            raise ManifestError(f"{path}: the header must have an 'id' column (columns: {', '.join(COLUMNS)})")
        for row in reader:
            tags = row.get("tags") or ""
            row["tags"] = [t for t in tags.split("|") if t.strip()]
            yield reader.line_num, row


def _json_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{path}:{line_no}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise ManifestError(f"{path}:{line_no}: each line must be a JSON object")
            yield line_no, row


def _from_rows(path: Path, rows: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[Entry]:
    for line_no, row in rows:
        where = f"{path}:{line_no}"
        item_id = str(row.get("id") or "").strip()
        if not valid_item_id(item_id):
            raise ManifestError(f"{where}: id {item_id!r} must be 1-128 characters of A-Z a-z 0-9 . _ : -")
        tags = row.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ManifestError(f"{where}: tags must be a list of strings")
        image = str(row.get("image") or "").strip()
        photo = (path.parent / image).resolve() if image else None
        if photo is None and not tags:
            raise ManifestError(f"{where}: item {item_id!r} has neither an image nor tags")
        attrs = {k: v for k, v in row.items() if k not in COLUMNS and v not in (None, "")}
        item = Item(
            id=item_id, title=str(row.get("title") or ""), kind=str(row.get("kind") or ""),
            category=str(row.get("category") or ""), price=_price(row.get("price"), where),
            starts_at=_timestamp(row.get("starts_at"), where), ends_at=_timestamp(row.get("ends_at"), where),
            attrs=attrs, image=str(photo) if photo else "", given_tags=[t.strip() for t in tags if t.strip()],
        )
        yield Entry(item, photo)


def _price(value: Any, where: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ManifestError(f"{where}: price {value!r} is not a number") from None


def _timestamp(value: Any, where: str) -> str:
    """ISO-8601, kept as given after checking it parses."""
    if value in (None, ""):
        return ""
    try:
        parse_timestamp(str(value))
    except ValueError:
        raise ManifestError(f"{where}: {value!r} is not an ISO-8601 timestamp (e.g. 2026-12-01T09:00:00+01:00)") from None
    return str(value)
