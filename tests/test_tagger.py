"""The real backbone with its bundled weights, on real photos."""

from __future__ import annotations

import numpy as np

from recommender.model.tagger import Tagger
from recommender.model.vocabulary import imagenet_labels
from recommender.photos import ImageError
from tests.conftest import DEMO

IMAGES = DEMO / "images"


def test_labels_are_unique_and_readable() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000 == len(set(labels))
    assert "coral reef" in labels and "beach" in labels


def test_top5_labels_and_features_of_real_photos(tagger: Tagger) -> None:
    photos = {
        "beach": IMAGES / "scratch" / "nature-beach-malibu.jpg",
        "alpaca": IMAGES / "gcompris" / "animal-alpaca.jpg",
        "kitchen": IMAGES / "scratch" / "indoors-kitchen.jpg",
    }
    out = dict(tagger.tag(photos.items()))
    assert set(out) == set(photos)
    for result in out.values():
        assert len(result.labels) == 5
        scores = [s for _, s in result.labels]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0001
        assert result.features.shape == (1280,) and (result.features >= 0).all()
    assert out["beach"].labels[0][0] in {"beach", "sandbar", "promontory"}
    assert out["alpaca"].labels[0][0] == "llama"
    assert "dishwasher" in [label for label, _ in out["kitchen"].labels]


def test_a_bad_photo_does_not_stop_the_batch(tagger: Tagger, tmp_path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\x00" * 1000)
    good = sorted((IMAGES / "gcompris").glob("fish-*.jpg"))[:20]
    sources = [(p.name, p) for p in good[:10]] + [("bad", bad)] + [(p.name, p) for p in good[10:]]
    results = dict(tagger.tag(sources))
    assert isinstance(results.pop("bad"), ImageError)
    assert len(results) == 20
    assert all(r.labels for r in results.values())


def test_batching_does_not_change_results(tagger: Tagger) -> None:
    photos = [(p.name, p) for p in sorted((IMAGES / "tuxpaint_stamps").glob("*.jpg"))[:5]]
    together = dict(tagger.tag(photos))
    alone = {k: v for src in photos for k, v in tagger.tag([src])}
    for key in together:
        np.testing.assert_allclose(together[key].features, alone[key].features, rtol=1e-3, atol=1e-4)
        assert together[key].labels[0][0] == alone[key].labels[0][0]
