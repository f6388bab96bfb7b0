"""Reindexing: new versions published in one step, under load, without losing writes; rollback."""

from __future__ import annotations

import random
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from indexer.ingest import ingest
from indexer.manifest import Entry, read_catalog
from indexer.reindex import Reindex, ReindexError
from indexer.rollback import rollback
from indexer.vectors import CurrentModel, Tagged, index_tagged
from indexer.worker import Worker
from recommender.app import create_app
from recommender.index import TopicIndex
from recommender.live_index import LiveIndex
from recommender.model.tagger import Tagger
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.items import Item
from recommender.store.queue import Settled
from recommender.versions import VersionStore
from tests.conftest import sample_rows, write_manifest
from tests.helpers import VISTAS, env_for, free_port, start_api, stop

TAGS = ["beach", "sea", "sand", "snow", "mountain", "ski", "city", "tower", "bridge", "forest", "river", "boat"]


def build_first_version(settings: Settings, store: Store, tagger: Tagger, tmp_path: Path, photos: int = 24) -> None:
    ingest(read_catalog(write_manifest(sample_rows()[:photos], tmp_path / "v1")), settings, store, tagger,
           progress=False)
    rng = random.Random(3)
    ingest([Entry(Item(id=f"tagged-{i}", given_tags=rng.sample(TAGS, 3)), None) for i in range(20)], settings,
           store, tagger, progress=False)


def live_index(settings: Settings, store: Store) -> LiveIndex:
    live = LiveIndex(store, VersionStore(settings.data_dir))
    live.sync()
    return live


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_reindex_under_load_answers_every_request_from_one_version(
    settings: Settings, store: Store, tagger: Tagger, tmp_path: Path
) -> None:
    build_first_version(settings.with_(n_topics=10), store, tagger, tmp_path)
    port = free_port()
    api = start_api(settings, port)
    queries = [r["id"] for r in sample_rows()[:24:3]]
    answers: list[tuple[str, int, dict]] = []
    stopping = threading.Event()

    def client() -> None:
        session = requests.Session()
        while not stopping.is_set():
            for query in queries:
                r = session.get(f"http://127.0.0.1:{port}/v1/items/{query}/similar?k=5&active_at=any", timeout=10)
                answers.append((query, r.status_code, r.json()))

    thread = threading.Thread(target=client, daemon=True)
    try:
        thread.start()
        time.sleep(1.0)
        for topics in ("8", "12"):  # different topic counts: every version answers differently
            done = subprocess.run([*VISTAS, "reindex", "--reuse-features"], capture_output=True, text=True,
                                  env={**env_for(settings), "VISTAS_TOPICS": topics})
            assert done.returncode == 0, done.stderr
            time.sleep(1.5)
    finally:
        stopping.set()
        thread.join(20)
        stop(api)

    assert answers and all(status == 200 for _, status, _ in answers), {s for _, s, _ in answers}
    versions = [body["version"] for _, _, body in answers]
    assert versions[0] == 1 and versions[-1] == 3
    files = VersionStore(settings.data_dir)
    nums = {item.id: item.num for item in store.items.iter_items()}
    for version in set(versions):
        index = TopicIndex.load(files.path(version))
        vectors = index.vectors[list(index.ids)]
        by_num = dict(zip(index.ids, range(len(vectors))))
        for query, _, body in (a for a in answers if a[2]["version"] == version):
            scores = vectors @ vectors[by_num[nums[query]]]
            expected = {index.ids[n]: float(scores[i]) for n, i in by_num.items() if index.ids[n] != query}
            got = {r["id"]: r["score"] for r in body["items"]}
            assert len(got) == 5
            for item_id, score in got.items():  # every score is this version's, none another's
                assert abs(expected[item_id] - score) < 1e-3, (version, query, item_id)
            best_left_out = max(s for i, s in expected.items() if i not in got)
            assert min(got.values()) >= best_left_out - 1e-3  # and they are its top 5


@pytest.mark.cluster
def test_items_indexed_during_a_reindex_land_in_the_new_version(
    settings: Settings, store: Store, tagger: Tagger, tmp_path: Path
) -> None:
    build_first_version(settings, store, tagger, tmp_path)
    stale_worker_model = CurrentModel(settings, store)
    stale_worker_model.get()  # a worker that loaded version 1's model before the flip
    job = Reindex(settings.with_(n_topics=8), store, progress=False)
    with job.locked():
        job.begin()
        model = job.fit(reuse_features=True)
        built = job.transform(model, reuse_features=True)

        # meanwhile: a photo and a tag-only item are indexed with version 1's model, an item is deleted
        eiffel = next(r for r in sample_rows() if r["id"] == "landmark-eiffeltower")
        late = [dict(eiffel, id="eiffel-late", title="late"), dict(eiffel, id="tags-late", image="", tags="beach|sea")]
        ingest(read_catalog(write_manifest(late, tmp_path / "late")), settings, store, tagger, progress=False)
        assert store.items.get("eiffel-late").version == 1
        assert store.delete_item("tagged-0")

        version = job.write(model, built)
        job.publish(version, model, built)
    assert version == 2 and job.report.retransformed == 2

    # a worker still holding version 1's model cannot write with it any more: it transforms again
    store.items.put(Item(id="tags-later", given_tags=["snow", "ski"]))
    codes = index_tagged(store, stale_worker_model, [Tagged("tags-later", store.items.get("tags-later").num,
                                                            [("snow", 1.0), ("ski", 1.0)], None)])
    assert codes == [Settled.SETTLED] and stale_worker_model.version == 2

    for item_id in ("eiffel-late", "tags-late", "tags-later", "landmark-eiffeltower"):
        assert store.items.get(item_id).version == 2
    live = live_index(settings, store)
    assert live.version == 2
    ids = set(live.index.ids.values())
    assert {"eiffel-late", "tags-late", "tags-later"} <= ids and "tagged-0" not in ids
    body = create_app(settings).test_client().get("/v1/items/landmark-eiffeltower/similar?k=1").get_json()
    assert body["version"] == 2 and body["items"][0]["id"] == "eiffel-late"


def test_live_index_loads_the_new_version_in_the_background_and_swaps_between_requests(
    settings: Settings, store: Store, tagger: Tagger, tmp_path: Path
) -> None:
    build_first_version(settings, store, tagger, tmp_path, photos=12)
    live = live_index(settings, store)
    served_v1 = live.index
    Reindex(settings.with_(n_topics=6), store, progress=False).run(reuse_features=True)
    live.sync()
    assert live.version == 1 and live.index is served_v1  # the load runs beside the requests
    wait_until(lambda: live._loaded is not None)
    assert live.version == 1
    live.remove(store.delete_item("tagged-1"))  # what the API process handling the DELETE does
    live.sync()  # the next request swaps
    assert live.version == 2 and live.index is not served_v1
    assert "tagged-1" not in live.index.ids.values() and len(live.topics) == 6


def test_full_reindex_retags_keeps_the_newest_versions_and_rolls_back(
    settings: Settings, store: Store, tagger: Tagger, tmp_path: Path
) -> None:
    build_first_version(settings, store, tagger, tmp_path, photos=12)
    settings = settings.with_(keep_versions=2)
    report = Reindex(settings, store, tagger, progress=False).run()
    assert report.version == 2 and report.items == store.items.count() and report.failed == 0
    assert store.items.features_many(["landmark-eiffeltower"])[0] is not None
    Reindex(settings.with_(n_topics=7), store, progress=False).run(reuse_features=True)
    files = VersionStore(settings.data_dir)
    assert files.versions() == [2, 3] and store.versions.model_bytes(1) is None and store.versions.model_bytes(3)

    ingest([Entry(Item(id="added-at-3", given_tags=["beach", "sea"]), None)], settings, store, tagger,
           progress=False)
    report = rollback(settings, store, progress=False)
    assert report.version == 2 and store.versions.current() == 2
    assert {i.version for i in store.items.iter_items()} == {2}
    live = live_index(settings, store)
    assert live.version == 2 and "added-at-3" in live.index.ids.values()  # added after 2 was built: still served
    assert len(live.topics) == len(files.topics(2))
    body = create_app(settings).test_client().get("/v1/items/added-at-3/similar?k=3").get_json()
    assert body["version"] == 2 and len(body["items"]) == 3
    with pytest.raises(ReindexError, match="nothing to roll back to"):
        rollback(settings, store, progress=False)


@pytest.mark.cluster
def test_distributed_reindex_tags_on_the_running_workers(
    settings: Settings, store: Store, tagger: Tagger, tmp_path: Path
) -> None:
    build_first_version(settings, store, tagger, tmp_path, photos=12)
    workers = [Worker(settings, store, tagger=tagger, name=f"w{i}") for i in range(2)]
    threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(store.workers.running()) == 2)
        report = Reindex(settings, store, progress=False).run(distributed=True)
    finally:
        for w in workers:
            w.stop()
        for thread in threads:
            thread.join(30)
    assert report.version == 2 and report.items == store.items.count()
    assert sum(w.stats.retagged for w in workers) == store.items.count()
    state = store.reindex.state()
    assert state["phase"] == "done" and int(state["tagged"]) == store.items.count()
    queues = store.queue.stats()[store.keys.retag]
    assert queues["pending"] == 0 and queues["waiting"] == 0


def test_status_and_reindex_on_the_command_line(settings: Settings, store: Store, tagger: Tagger,
                                                tmp_path: Path) -> None:
    for command in (["worker"], ["reindex"], ["status"]):
        out = subprocess.run([*VISTAS, *command, "--help"], capture_output=True, text=True, check=True).stdout
        assert "Usage:" in out and len(out.splitlines()) > 5
    build_first_version(settings, store, tagger, tmp_path, photos=12)
    env = env_for(settings)
    done = subprocess.run([*VISTAS, "reindex", "--rollback"], capture_output=True, text=True, env=env)
    assert done.returncode == 1 and "nothing to roll back to" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([*VISTAS, "reindex", "--reuse-features"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and "index version 2 is current: 32 items" in done.stdout, done.stderr
    store.items.put(Item(id="queued-one", given_tags=["beach"]))
    store.queue.enqueue("queued-one")
    out = subprocess.run([*VISTAS, "status"], capture_output=True, text=True, env=env, check=True).stdout
    assert "index      version 2: 32 items" in out and "(kept in the store: 1, 2)" in out
    assert "ingest: 1 waiting, 0 being indexed" in out and "0 dead letters" in out
    assert "workers    0 running" in out and "made version 2 (32 items" in out
    assert np.isfinite(float(out.split("built in ")[1].split("s")[0]))
