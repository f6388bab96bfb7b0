"""The NMF topic model on real tags and features."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from recommender.model.tagger import Tagger
from recommender.model.topics import TopicModel
from recommender.model.vocabulary import normalize_tag
from tests.conftest import DEMO, sample_rows


@pytest.fixture(scope="module")
def tagged(tagger: Tagger) -> tuple[list, np.ndarray, list[dict]]:
    rows = sample_rows()
    results = dict(tagger.tag((r["id"], DEMO / r["image"]) for r in rows))
    tags = [results[r["id"]].labels for r in rows]
    features = np.stack([results[r["id"]].features for r in rows])
    return tags, features, rows


def test_fit_names_topics_by_their_tags(tagged) -> None:
    tags, features, _ = tagged
    model = TopicModel(n_topics=10)
    vectors = model.fit(tags, features)
    assert vectors.shape == (len(tags), model.n_topics) and 5 <= model.n_topics <= 10
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    names = [t.name for t in model.topics]
    assert len(set(names)) == model.n_topics
    every_tag = {normalize_tag(label) for row in tags for label, _ in row}
    for topic in model.topics:
        assert topic.top_tags and all(tag in every_tag for tag, _ in topic.top_tags)
        assert topic.name_tags and all(tag in every_tag for tag in topic.name_tags)


def test_same_landmark_photos_share_topics(tagged) -> None:
    tags, features, rows = tagged
    vectors = TopicModel(n_topics=20).fit(tags, features)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -1)
    landmarks = [r["landmark"] for r in rows]
    hits = [landmarks[int(np.argmax(sims[i]))] == lm for i, lm in enumerate(landmarks) if lm]
    assert np.mean(hits) >= 0.6  # nearest neighbour is the same place for most landmark photos


def test_transform_matches_fit_without_refit(tagged) -> None:
    tags, features, _ = tagged
    model = TopicModel(n_topics=10)
    fitted = model.fit(tags, features)
    components = model.nmf.components_.copy()
    np.testing.assert_allclose(model.transform(tags[:5], features[:5]), fitted[:5], atol=2e-3)
    assert np.array_equal(components, model.nmf.components_)


def test_fewer_items_than_topics_still_works(tagged, caplog) -> None:
    tags, features, _ = tagged
    model = TopicModel(n_topics=30)
    with caplog.at_level(logging.WARNING):
        vectors = model.fit(tags[:6], features[:6])
    assert model.n_topics == 6 and vectors.shape == (6, 6) and len(model.topics) == 6
    assert "fitting 6 topics instead of 30" in caplog.text


def test_given_tags_join_the_vocabulary_and_tag_only_items_work(tagged) -> None:
    tags, features, _ = tagged
    extra = [[("flash sale shoes", 1.0)], [("flash sale shoes", 1.0), ("beach", 1.0)]]
    model = TopicModel(n_topics=8, representation="tags")
    vectors = model.fit(list(tags) + extra, None)
    assert model.vocabulary.get("Flash Sale  Shoes") is not None
    assert float(vectors[-1] @ vectors[-2]) > 0.5


def test_save_and_load(tagged, tmp_path) -> None:
    tags, features, _ = tagged
    model = TopicModel(n_topics=5)
    model.fit(tags, features)
    model.save(tmp_path / "m.joblib")
    again = TopicModel.load(tmp_path / "m.joblib")
    np.testing.assert_allclose(again.transform(tags, features), model.transform(tags, features), atol=1e-6)
    assert [t.name for t in again.topics] == [t.name for t in model.topics]
