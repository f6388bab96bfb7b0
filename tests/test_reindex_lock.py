"""The reindex lock cannot be stolen: renewed while a long step runs, and a reindex that lost it
(expired, another one took over) cannot flip the pointer."""

from __future__ import annotations

import random
import time

import pytest

import indexer.reindex
from indexer.ingest import ingest
from indexer.reindex import Reindex, ReindexError
from recommender.settings import Settings
from recommender.store import Store
from tests.helpers import tag_only


@pytest.fixture
def built(settings: Settings, store: Store) -> Settings:
    """Version 1 of tag-only items (no photos: nothing to re-tag with ``reuse_features``)."""
    settings = settings.with_(n_topics=4)
    rng = random.Random(5)
    ingest([tag_only(f"item-{i}", rng) for i in range(30)], settings, store, progress=False)
    return settings


def test_a_reindex_that_lost_its_lock_cannot_flip_and_the_next_one_can(built: Settings, store: Store) -> None:
    first = Reindex(built, store, progress=False)
    with pytest.raises(ReindexError, match="lost its lock"):
        with first.locked():
            first.begin()
            model = first.fit(reuse_features=True)
            result = first.transform(model, reuse_features=True)
            stale = first.write(model, result)
            store.r.delete(store.keys.reindex_lock)  # it expired while the build ran

            second = Reindex(built, store, progress=False)
            report = second.run(reuse_features=True)
            assert store.versions.current() == report.version != stale
            assert second.lease.token > first.lease.token  # fencing tokens only grow

            first.publish(stale, model, result)
    assert store.versions.current() == report.version  # the stale build did not flip
    assert not store.r.exists(store.keys.reindex_lock)  # and freed nothing of the second's
    assert Reindex(built, store, progress=False).run(reuse_features=True).version > report.version


def test_the_lock_is_renewed_through_a_long_step(built: Settings, store: Store, monkeypatch) -> None:
    monkeypatch.setattr(indexer.reindex, "LOCK_TTL_S", 0.6)
    first = Reindex(built, store, progress=False)
    with first.locked():
        time.sleep(1.5)  # one long step (an HNSW build, an NMF fit) with no chunk in between
        with pytest.raises(ReindexError, match=f"reindex {first.job} is running"):
            Reindex(built, store, progress=False).run(reuse_features=True)
        assert store.r.pttl(store.keys.reindex_lock) > 0
        assert not first.lease.lost
    assert not store.r.exists(store.keys.reindex_lock)
