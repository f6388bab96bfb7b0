"""Reading catalogs to ingest: folders, CSV and JSON-lines manifests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from indexer.manifest import ManifestError, read_catalog
from tests.conftest import DEMO

PHOTO = DEMO / "images" / "scratch" / "nature-beach-malibu.jpg"


def test_folder_of_photos(tmp_path: Path) -> None:
    (tmp_path / "beaches").mkdir()
    shutil.copy(PHOTO, tmp_path / "beaches" / "Malibu Beach.jpg")
    shutil.copy(PHOTO, tmp_path / "top.png")
    (tmp_path / "notes.txt").write_text("not a photo")
    entries = read_catalog(tmp_path)
    assert [e.item.id for e in entries] == ["beaches-Malibu-Beach", "top"]
    assert entries[0].item.category == "beaches" and entries[0].item.title == "Malibu beach"
    assert entries[0].photo == tmp_path / "beaches" / "Malibu Beach.jpg"


def test_csv_manifest(tmp_path: Path) -> None:
    shutil.copy(PHOTO, tmp_path / "p.jpg")
    (tmp_path / "m.csv").write_text(
        "id,title,kind,category,image,price,starts_at,ends_at,tags,brand\n"
        "s1,Beach week,sale,travel,p.jpg,99.5,2026-12-01T00:00:00Z,2026-12-08T00:00:00+01:00,sun|sea,acme\n"
        "s2,Tags only,sale,travel,,,,,Beach| sand ,\n"
    )
    first, second = read_catalog(tmp_path / "m.csv")
    assert first.photo == tmp_path / "p.jpg" and first.item.price == 99.5
    assert first.item.given_tags == ["sun", "sea"] and first.item.attrs == {"brand": "acme"}
    assert second.photo is None and second.item.given_tags == ["Beach", "sand"]


def test_jsonl_manifest(tmp_path: Path) -> None:
    lines = [{"id": "a", "image": str(PHOTO)}, {"id": "b", "tags": ["x", "y"], "title": "B"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    a, b = read_catalog(tmp_path / "m.jsonl")
    assert a.photo == PHOTO and b.item.given_tags == ["x", "y"] and b.item.title == "B"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("id,title\nbad id!,x\n", "must be 1-128 characters"),
        ("id,title\nx,no image no tags\n", "neither an image nor tags"),
        ("id,price,tags\nx,cheap,a\n", "not a number"),
        ("id,starts_at,tags\nx,tomorrow,a\n", "not an ISO-8601"),
        ("id,tags\nx,a\nx,b\n", "appears twice"),
        ("title\nx\n", "must have an 'id' column"),
    ],
)
def test_bad_csv_says_what_and_where(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(ManifestError, match=message):
        read_catalog(tmp_path / "m.csv")


def test_bad_json_line_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text('{"id": "a", "tags": ["x"]}\n{oops\n')
    with pytest.raises(ManifestError, match=r"m.jsonl:2: not valid JSON"):
        read_catalog(tmp_path / "m.jsonl")


def test_unknown_file_type(tmp_path: Path) -> None:
    (tmp_path / "m.xml").write_text("<x/>")
    with pytest.raises(ManifestError, match="expected a folder"):
        read_catalog(tmp_path / "m.xml")
