"""What the benchmark scripts share: where the demo photos are, and how rounds are printed."""

from __future__ import annotations

import csv
from pathlib import Path

DEMO = Path(__file__).resolve().parent.parent / "demo" / "catalog"


def demo_photos() -> list[Path]:
    """The demo catalog's photos, in manifest order."""
    with (DEMO / "manifest.csv").open() as f:
        return [DEMO / row["image"] for row in csv.DictReader(f)]


def fmt(values: list[float], digits: int = 1) -> str:
    """Each round's figure, so the spread behind a median shows."""
    return "[" + ", ".join(f"{v:.{digits}f}" for v in values) + "]"
