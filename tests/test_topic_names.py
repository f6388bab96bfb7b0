"""Readable topics on synthetic tags: distinctive names, display names, near-duplicates, stable ids."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from recommender.model import naming
from recommender.model.topics import TopicModel
from recommender.model.vocabulary import display_names

REPO = Path(__file__).resolve().parent.parent
THEMES = {
    "beach": ["beach", "sea", "sand", "sandbar"],
    "snow": ["snow", "mountain", "ski", "alp"],
    "city": ["city", "tower", "bridge", "street"],
    "forest": ["forest", "river", "tree", "moss"],
}
EVERYWHERE = "photo"


def themed_catalog(per_theme: int = 12, seed: int = 0, everywhere: bool = True) -> list[list[tuple[str, float]]]:
    """Items of four themes (3 of their 4 tags each), every item also tagged ``photo``."""
    rng = random.Random(seed)
    items = []
    for tags in THEMES.values():
        for _ in range(per_theme):
            row = [(t, round(rng.uniform(0.3, 1.0), 3)) for t in rng.sample(tags, 3)]
            items.append(row + ([(EVERYWHERE, 1.0)] if everywhere else []))
    rng.shuffle(items)
    return items


def theme_of(labels) -> set[str]:
    return {theme for theme, tags in THEMES.items() for t in labels if t in tags}


def fit(items, n_topics: int = 4, **kw) -> TopicModel:
    model = TopicModel(n_topics=n_topics, representation="tags", **kw)
    model.fit(items, None)
    return model


def test_a_tag_on_every_item_names_no_topic() -> None:
    model = fit(themed_catalog())
    names = [t.name for t in model.topics]
    assert len(set(names)) == len(names) == 4
    for topic in model.topics:
        assert EVERYWHERE not in topic.name_tags and EVERYWHERE not in topic.name.split(", ")
        assert len(theme_of(topic.name_tags)) == 1  # each name is of one theme
    assert {next(iter(theme_of(t.name_tags))) for t in model.topics} == set(THEMES)


def test_a_tag_leading_many_topics_names_none_and_no_tag_names_more_than_two() -> None:
    # 6 topics: the first tag leads every one of them, the others are each topic's own.
    labels = ["landmark", *[f"own{k}" for k in range(6)], "shared"]
    profiles = np.zeros((6, len(labels)), dtype=np.float32)
    profiles[:, 0] = 10.0
    for k in range(6):
        profiles[k, 1 + k] = 4.0
        profiles[k, -1] = 3.0  # on every topic too, but leading none
    names = naming.name_topics(profiles, labels, naming.readable)
    assert all("landmark" not in parts for _, parts in names)
    uses = Counter(label for _, parts in names for label in parts)
    assert max(uses.values()) <= naming.MAX_TOPICS_PER_TAG
    assert len({name for name, _ in names}) == 6


def test_readable_labels() -> None:
    assert naming.readable("kite (bird of prey)") == "kite"
    assert naming.readable("handrail / baluster") == "handrail"
    assert naming.readable("tights for gymnastics, a one-piece leotard") == "tights for gymnastics"
    assert naming.readable("American robin") == "american robin"


def test_display_names_from_a_heads_file(tmp_path: Path) -> None:
    heads = tmp_path / "heads"
    (heads / "shop").mkdir(parents=True)
    (heads / "shop" / "labels.json").write_text(json.dumps(["animals_mammals", "food_fruit"]))
    (heads / "shop" / "names.json").write_text(json.dumps({"animals_mammals": "Furry Friends", "food_fruit": "fruit"}))
    (heads / "plain").mkdir()
    (heads / "plain" / "labels.json").write_text(json.dumps(["vehicles_ship", "fish", "animals_fish"]))
    names = display_names(heads)
    assert names["animals_mammals"] == "furry friends" and names["food_fruit"] == "fruit"
    assert names["vehicles_ship"] == "ship"  # no file: the folder name's last word
    assert names["fish"] == "fish" and names["animals_fish"] == "animals fish"  # never two labels read the same

    items = [[("animals_mammals", 0.99), ("pig", 0.4)], [("animals_mammals", 0.98), ("ox", 0.5)],
             [("food_fruit", 0.97), ("orange", 0.6)], [("food_fruit", 0.99), ("lemon", 0.3)]] * 3
    model = fit(items, n_topics=2, display=names)
    words = {w for t in model.topics for w in t.name.split(", ")}
    assert words & {"furry friends", "fruit"} and not any("_" in t.name for t in model.topics)


def test_the_demo_heads_names_cover_its_labels_in_lower_case_words() -> None:
    head = REPO / "demo" / "heads" / "groups"
    labels = json.loads((head / "labels.json").read_text())
    names = json.loads((head / "names.json").read_text())
    assert set(names) == set(labels)
    assert all(n == n.lower() and "_" not in n and n.strip() for n in names.values())
    assert len(set(names.values())) == len(names)


def test_near_duplicate_topics_are_refitted_away() -> None:
    # Two themes asked for eight topics: NMF splits each theme into look-alikes.
    items = [row for row in themed_catalog(everywhere=False) if theme_of([t for t, _ in row]) <= {"beach", "snow"}]
    model = fit(items, n_topics=8)
    assert model.n_topics < 8 and model.refits and all("near-duplicates" in r for r in model.refits)
    left = naming.near_duplicates(model.profiles)
    groups = [t.group for t in model.topics]
    for i, j, _ in left:  # any that survived the refits are grouped for the map's legend
        assert groups[i] == groups[j]
    assert not any(r for r in model.refits if not r.strip())


def test_near_duplicates_and_groups_of_profiles() -> None:
    profiles = np.array([[1, 0, 0], [0.99, 0.05, 0], [0, 1, 0], [0, 0.1, 1]], dtype=np.float32)
    assert [(i, j) for i, j, _ in naming.near_duplicates(profiles, 0.9)] == [(0, 1)]
    assert naming.duplicate_groups(profiles, 0.9) == [0, 0, 2, 3]


def test_matching_keeps_ids_and_names_across_a_refit() -> None:
    first = fit(themed_catalog(seed=0))
    theme_ids = {next(iter(theme_of(t.name_tags))): (t.id, t.name) for t in first.topics}
    again = fit(themed_catalog(seed=5, per_theme=14))
    changes = again.adopt(first, {theme_ids["snow"][0]: "winter sports"})
    assert len(changes.kept) == 4 and not changes.new and not changes.gone
    for topic in again.topics:
        theme = theme_of([t for t, _ in topic.top_tags[:3]])
        assert len(theme) == 1 and (topic.id, topic.name) == theme_ids[theme.pop()]
    assert changes.renamed_kept == [theme_ids["snow"][0]]


def test_an_unmatched_topic_gets_a_fresh_id_and_a_name_of_its_own() -> None:
    first = fit(themed_catalog(), n_topics=3)  # three topics for four themes
    second = fit(themed_catalog(seed=2))
    changes = second.adopt(first)
    ids = [t.id for t in second.topics]
    assert len(set(ids)) == 4 and len(changes.new) >= 1
    assert all(i >= first.next_id for i, _ in changes.new) and second.next_id > max(ids)
    assert len({t.name for t in second.topics}) == 4


@pytest.mark.parametrize("n_items", [1, 3])
def test_a_catalog_with_fewer_items_than_topics(n_items: int) -> None:
    items = themed_catalog()[:n_items]
    model = fit(items, n_topics=30)
    assert 1 <= model.n_topics <= n_items and len({t.name for t in model.topics}) == model.n_topics
    assert model.transform(items, None).shape == (n_items, model.n_topics)
    assert len(model.adopt(model).kept) == model.n_topics


def test_a_kept_topic_shows_its_tags_in_the_display_names_of_now() -> None:
    first = fit(themed_catalog(seed=0))
    snow = next(t for t in first.topics if theme_of(t.name_tags) == {"snow"})
    label = snow.name_tags[0]
    again = fit(themed_catalog(seed=5), display={label: "Winter Fun"})
    again.adopt(first)
    kept = next(t for t in again.topics if t.id == snow.id)
    assert kept.name_tags == snow.name_tags and kept.name.split(", ")[0] == "winter fun"
