"""Rebuild the bundled demo catalog from the labelled photo collection.

The demo catalog in ``demo/catalog`` was made with this script from the
523-photo collection extracted from three Debian packages (see
``demo/catalog/ATTRIBUTION.md``). It is kept so the derivation can be
repeated: ``python demo/make_catalog.py SOURCE_DIR``, where SOURCE_DIR holds
``manifest.csv`` and ``images/``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
import shutil
from pathlib import Path

from PIL import Image

MAX_SIDE = 512
DESTINATION_GROUPS = {"landmark", "underwater", "energy_plant", "indoors", "nature", "outdoors", "sports"}
SOURCES = {
    "gcompris": ("gcompris-qt-data 3.1-2", "Wikimedia Commons public domain, CC0 or CC-BY-SA (per-activity README in the package)"),
    "scratch": ("scratch 1.4.0.6~dfsg1-6.1", "CC-BY-SA-3.0"),
    "tuxpaint_stamps": ("tuxpaint-stamps-default 2022.06.04-1", "GPL-2+"),
}
FIELDS = ["id", "title", "kind", "category", "image", "price", "starts_at", "ends_at", "tags",
          "label", "landmark", "source_package", "license"]


def title_from_stem(stem: str) -> str:
    """'eiffelTower' -> 'Eiffel Tower', 'beach-malibu' -> 'Beach Malibu'."""
    words = re.sub(r"([a-z])([A-Z])", r"\1 \2", stem).replace("-", " ").replace("_", " ").split()
    return " ".join(w.capitalize() for w in words)


def price_for(item_id: str) -> str:
    """A stable made-up price, so product items look like a shop's."""
    cents = int(hashlib.sha1(item_id.encode()).hexdigest(), 16) % 20000 + 499
    return f"{cents / 100:.2f}"


def copy_photo(src: Path, dst: Path) -> None:
    """Copy a photo, shrinking it when its long side is over MAX_SIDE."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(src) as im:
        if max(im.size) <= MAX_SIDE:
            shutil.copyfile(src, dst)
            return
        im = im.convert("RGB")
        im.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        im.save(dst, "JPEG", quality=88)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="folder with manifest.csv and images/")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "catalog")
    args = parser.parse_args()
    rows = list(csv.DictReader((args.source / "manifest.csv").open()))
    seen: set[str] = set()
    out_rows = []
    for row in rows:
        src = args.source / row["path"]
        base_id = re.sub(r"[^a-z0-9._:-]", "-", f"{row['group']}-{src.stem}".lower())
        item_id, n = base_id, 1
        while item_id in seen:  # the collection has the same stem in two cases
            n += 1
            item_id = f"{base_id}-{n}"
        seen.add(item_id)
        rel = Path("images") / row["source_pkg"] / f"{item_id}{src.suffix.lower()}"
        copy_photo(src, args.out / rel)
        kind = "destination" if row["group"] in DESTINATION_GROUPS else "product"
        package, licence = SOURCES[row["source_pkg"]]
        out_rows.append({
            "id": item_id, "title": title_from_stem(src.stem), "kind": kind, "category": row["group"],
            "image": rel.as_posix(), "price": price_for(item_id) if kind == "product" else "",
            "starts_at": "", "ends_at": "", "tags": "", "label": row["label"], "landmark": row["landmark"],
            "source_package": package, "license": licence,
        })
    with (args.out / "manifest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(out_rows)
    print(f"wrote {len(out_rows)} items to {args.out}")


if __name__ == "__main__":
    main()
