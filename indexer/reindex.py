"""`vistas reindex`: rebuild the whole index as version N+1 and publish it in one step.

1. **tag**: re-tag every item's photo, here or (``distributed``) on the running
   workers through the retag stream; skipped with ``reuse_features`` (the tags
   and features stored at indexing time are used instead);
2. **fit**: the topic model, on a random sample of ``fit_sample`` items; its topics take the
   ids and names of the served version's they match (``indexer.build.carry_identity``);
3. **transform**: every item, in chunks, so memory stays flat at a million;
4. **write**: the catalog map of the sample, then version N+1's directory
   (FAISS index, model, topics, map) next to N;
5. **publish**: flip the ``current`` pointer, only while the job holds the lock (API processes
   load N+1 in the background and swap between requests), then give every item its N+1 vector
   in Redis. Items written while the build ran are not lost: the build noted the changes
   stream's position before it started, and every item indexed after it is transformed again
   with the new model and announced. Workers cannot write an old-model vector after the flip
   (:meth:`recommender.store.queue.Queue.settle` refuses it);
6. **prune**: keep the newest ``keep_versions`` versions.

``indexer.rollback`` serves an earlier version again through the same steps.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from indexer.build import carry_identity, lay_out, new_topic_model, next_version, write_version
from indexer.vectors import Tagged, feature_matrix, transform
from recommender.index import TopicIndex
from recommender.model.identity import TopicChanges
from recommender.model.tagger import Tagger
from recommender.model.topics import TopicModel
from recommender.model.vocabulary import merge_tags
from recommender.objects import NOT_STORED, fetched
from recommender.photos import ImageError
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.changes import Change
from recommender.store.items import Status
from recommender.store.queue import Op, Outcome
from recommender.store.reindex import Lease, LockHeld
from recommender.versions import VersionStore

log = logging.getLogger(__name__)
CHUNK = 5000  # items read, tagged or transformed at a time
LOCK_TTL_S = 60.0  # a crashed reindex holds the lock this long at most; a live one renews it on a thread
#: A distributed re-tag with no worker progress for this long says so (and keeps waiting).
STALL_WARNING_S = 60.0


class ReindexError(RuntimeError):
    """A reindex that cannot run; the message says why and what to do."""


@dataclass
class ReindexReport:
    """What a reindex did, for the log and the CLI's summary."""

    version: int = 0
    items: int = 0
    failed: int = 0
    retransformed: int = 0  # items indexed during the build, given the new model's vectors after the flip
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    topics: TopicChanges | None = None  # what happened to the topics' ids and names
    refits: list[str] = field(default_factory=list)  # near-duplicate topics fitted away


@dataclass
class Sample:
    """The items the topic model was fitted on (and the map is laid out from), with their vectors."""

    tagged: list[Tagged]
    features: np.ndarray | None
    vectors: np.ndarray


@dataclass
class Built:
    """The items a version was built from: their ids, numbers, ``updated_at`` as read, vectors."""

    ids: list[str]
    nums: np.ndarray
    updated: list[str]
    vectors: np.ndarray


class Reindex:
    """One reindex job; :meth:`run` does it all, the steps are methods so tests can interleave writes."""

    def __init__(self, settings: Settings, store: Store, tagger: Tagger | None = None, progress: bool = True):
        self.settings = settings
        self.store = store
        self.tagger = tagger
        self.progress = progress
        self.files = VersionStore.for_settings(settings)
        self.job = uuid.uuid4().hex[:12]
        self.report = ReindexReport()
        self.changes_from = "0-0"
        self.lease: Lease | None = None
        self._sample: Sample | None = None
        self._started = time.monotonic()

    def run(self, reuse_features: bool = False, distributed: bool = False) -> ReindexReport:
        with self.locked():
            self.begin()
            if not reuse_features:
                self.tag(distributed)
            model = self.fit(reuse_features)
            built = self.transform(model, reuse_features)
            version = self.write(model, built)
            self.publish(version, model, built)
            self.prune()
            return self.finish()

    # -- steps -----------------------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[None]:
        """Only one reindex (or rollback) at a time (:mod:`recommender.store.reindex`: renewed, fenced)."""
        try:
            self.lease = self.store.reindex.lock(self.job, LOCK_TTL_S)
        except LockHeld as held:
            raise ReindexError(f"reindex {held.holder} is running (see `vistas status`); wait for it to finish")
        try:
            yield
        except BaseException as exc:
            self.store.reindex.set_state(phase="failed", error=repr(exc), finished_at=time.time())
            raise
        finally:
            self.lease.release()

    def begin(self) -> None:
        """Note where the changes stream stands: anything indexed after this is redone after the flip."""
        self.changes_from = self.store.changes.last_id()
        self.store.reindex.set_state(reset=True, job=self.job, phase="starting", started_at=time.time(),
                                     from_version=self.store.versions.current())
        log.info("reindex %s: started (changes stream at %s)", self.job, self.changes_from)

    def tag(self, distributed: bool) -> None:
        """Re-tag every item with a photo or given tags; results land in Redis marked with this job."""
        candidates = self.store.items.ids()  # every item but the deleted ones
        with self._step("tag", "tagging", total=len(candidates), tagged=0, failed=0, skipped=0):
            if distributed:
                self._tag_on_workers(candidates)
            else:
                self._tag_here(candidates)
            state = self.store.reindex.state()
            self.report.failed = int(state.get("failed", 0))
        log.info("reindex %s: re-tagged %s items (%d failed) in %.1fs", self.job, state.get("tagged"),
                 self.report.failed, self.report.phases["tag"])

    def fit(self, reuse_features: bool) -> TopicModel:
        """Fit the topic model on a random sample of the items (all of them when there are fewer)."""
        with self._step("fit", "fitting"):
            ids, size = self.store.items.ids(), self.settings.fit_sample
            sample = ids if len(ids) <= size else random.Random(0).sample(ids, size)
            rows = [r for r in self._rows(sample, "reading sample") if self._usable(r, reuse_features)]
            if not rows:
                raise ReindexError("no indexed items to build from: ingest a catalog first")
            tagged = [_tagged(r) for r in rows]
            model = new_topic_model(self.settings, self.store)
            features = feature_matrix(tagged)
            vectors = model.fit([t.tags for t in tagged], features)
            self.report.topics, self.report.refits = carry_identity(self.settings, self.store, model), model.refits
        log.info("reindex %s: fitted %d topics on %d items in %.1fs", self.job, model.n_topics, len(rows),
                 self.report.phases["fit"])
        self._sample = Sample(tagged, features, vectors)
        return model

    def transform(self, model: TopicModel, reuse_features: bool) -> Built:
        """Every usable item's vector from ``model``, read and transformed a chunk at a time."""
        ids = self.store.items.ids()
        with self._step("transform", "transforming", total=len(ids)):
            built = self._transform_chunks(model, ids, reuse_features)
        self.report.items = len(built.ids)
        return built

    def write(self, model: TopicModel, built: Built) -> int:
        """Lay out the map of the sample the model was fitted on (a map shows tens of thousands of
        points, not millions; later items are placed on it), then write version N+1 next to the
        current one: nothing is served from it yet."""
        with self._step("map", "mapping"):
            sample = self._sample
            assert sample is not None, "fit() comes first"
            t = sample.tagged
            layout = lay_out(self.settings, self.store, [x.item_id for x in t], [x.num for x in t],
                             [x.tags for x in t], sample.features, sample.vectors)
        with self._step("write", "writing"):
            version = next_version(self.settings, self.store)
            index = TopicIndex.built(built.nums, built.ids, built.vectors)
            write_version(self.settings, self.store, version, model, index, layout, self.changes_from,
                          time.monotonic() - self._started, job=self.job, refits=self.report.refits,
                          topic_changes=self.report.topics.to_json() if self.report.topics else None)
        return version

    def publish(self, version: int, model: TopicModel, built: Built | None, changed: set[str] | None = None) -> None:
        """Flip the pointer to ``version``, then bring every item's vector in Redis to it.

        ``built`` holds the vectors the version was built with; items indexed after the build
        began (``changed``, by default read from the changes stream), and every item when
        ``built`` is None (a rollback), are transformed again from their stored tags and
        features, and announced when the version's file lacks them or has them outdated.
        """
        if self.lease is None or not self.lease.flip(version):
            raise ReindexError(f"reindex {self.job} lost its lock before publishing version {version}; nothing flipped")
        with self._step("publish", "publishing", version=version):
            log.info("reindex %s: index version %d is current", self.job, version)
            if changed is None:
                changed = self._changed_since(self.changes_from)
            if built is not None:
                self._adopt_built(version, built, changed)
                redo = sorted(changed)
            else:
                redo = self.store.items.ids()
            self.report.retransformed = self._redo(version, model, redo, announce=changed, in_file=built is not None)

    def prune(self) -> None:
        """Remove versions beyond the newest ``keep_versions`` (never the current one)."""
        current = self.store.versions.current()
        versions = self.files.versions()
        for version in versions[:-self.settings.keep_versions] if self.settings.keep_versions > 0 else versions:
            if version != current:
                self.files.delete(version)
                self.store.versions.drop_model(version)
                log.info("reindex %s: removed index version %d (keeping %d)", self.job, version,
                         self.settings.keep_versions)

    def finish(self) -> ReindexReport:
        self.report.version = self.store.versions.current()
        self.report.seconds = time.monotonic() - self._started
        self.store.reindex.set_state(phase="done", finished_at=time.time(), items=self.report.items,
                                     seconds=round(self.report.seconds, 1))
        log.info("reindex %s: version %d, %d items, %d failed, %d re-transformed, %.1fs %s", self.job,
                 self.report.version, self.report.items, self.report.failed, self.report.retransformed,
                 self.report.seconds, {k: round(v, 1) for k, v in self.report.phases.items()})
        return self.report

    # -- transforming and adopting ----------------------------------------------------------
    def _transform_chunks(self, model: TopicModel, ids: list[str], reuse_features: bool) -> Built:
        built = Built([], np.zeros(0, dtype=np.int64), [], np.zeros((0, model.n_topics), dtype=np.float32))
        nums, vectors = [], []
        with tqdm(total=len(ids), desc="transforming", unit="item", disable=not self.progress) as bar:
            for start in range(0, len(ids), CHUNK):
                rows = [r for r in self._read(ids[start:start + CHUNK]) if self._usable(r, reuse_features)]
                if rows:
                    vectors.append(transform(model, [_tagged(r) for r in rows]))
                    nums.append(np.array([r["num"] for r in rows], dtype=np.int64))
                    built.ids += [r["id"] for r in rows]
                    built.updated += [r["updated_at"] for r in rows]
                bar.update(min(CHUNK, len(ids) - start))
                self._check_lock()
        if vectors:
            built.nums, built.vectors = np.concatenate(nums), np.concatenate(vectors)
        return built

    def _adopt_built(self, version: int, built: Built, changed: set[str]) -> None:
        """The build's vectors into every item not ``changed`` since it read them."""
        keep = [i for i, item_id in enumerate(built.ids) if item_id not in changed]
        rows = [(built.ids[i], built.updated[i], built.vectors[i]) for i in keep]
        for start in tqdm(range(0, len(rows), CHUNK), desc="adopting", unit="chunk", disable=not self.progress):
            self.store.reindex.adopt(version, rows[start:start + CHUNK])

    # -- tagging ---------------------------------------------------------------------------
    def _tag_here(self, candidates: list[str]) -> None:
        tagger = self.tagger or Tagger(self.settings)
        with tqdm(total=len(candidates), desc="tagging", unit="item", disable=not self.progress) as bar:
            for start in range(0, len(candidates), CHUNK):
                rows = [r for r in self._read(candidates[start:start + CHUNK]) if r is not None]
                seen = {r["id"]: float(r["updated_at"] or 0) for r in rows}  # a photo replaced since is not retagged
                outcomes = [Outcome(Op.RETAG, r["id"], r["num"], merge_tags([], r["given_tags"]), job=self.job,
                                    seen=seen[r["id"]]) for r in rows if not r["image"]]
                photos = {r["id"]: r for r in rows if r["image"]}
                missing: list[str] = []
                for item_id, result in tagger.tag(fetched(((i, r["image"]) for i, r in photos.items()), missing)):
                    row = photos[item_id]
                    if isinstance(result, ImageError):
                        outcomes.append(Outcome(Op.FAIL, item_id, row["num"], reason=str(result), job=self.job,
                                                seen=seen[item_id]))
                    else:
                        tags = merge_tags(result.labels, row["given_tags"])
                        outcomes.append(Outcome(Op.RETAG, item_id, row["num"], tags, features=result.features,
                                                job=self.job, seen=seen[item_id]))
                outcomes += [Outcome(Op.FAIL, i, photos[i]["num"], reason=NOT_STORED, job=self.job, seen=seen[i])
                             for i in missing]
                self.store.queue.settle(outcomes)
                bar.update(len(candidates[start:start + CHUNK]))
                self._check_lock()

    def _tag_on_workers(self, candidates: list[str]) -> None:
        if not self.store.workers.running():
            log.warning("reindex %s: no worker is running; start `vistas worker` processes to do the tagging",
                        self.job)
        self.store.queue.ensure()
        self.store.queue.enqueue_retag(candidates, self.job)
        log.info("reindex %s: %d photos queued for the workers", self.job, len(candidates))
        done, last_progress = 0, time.monotonic()
        with tqdm(total=len(candidates), desc="tagging (workers)", unit="item", disable=not self.progress) as bar:
            while done < len(candidates):
                time.sleep(0.2)
                state = self.store.reindex.state()
                now_done = sum(int(state.get(k, 0)) for k in ("tagged", "failed", "skipped"))
                if now_done > done:
                    bar.update(now_done - done)
                    done, last_progress = now_done, time.monotonic()
                elif time.monotonic() - last_progress > STALL_WARNING_S:
                    workers = len(self.store.workers.running())
                    log.warning("reindex %s: no tagging progress for %.0fs (%d workers running); still waiting",
                                self.job, STALL_WARNING_S, workers)
                    last_progress = time.monotonic()
                self._check_lock()

    # -- publishing ------------------------------------------------------------------------
    def _changed_since(self, stream_id: str) -> set[str]:
        """Items upserted on the changes stream after ``stream_id`` (indexed by workers meanwhile)."""
        changed: set[str] = set()
        while True:
            entries = self.store.changes.after(stream_id, count=10_000)
            if not entries:
                return changed
            changed.update(c["id"] for _, c in entries if c["op"] == Change.UPSERT)
            stream_id = entries[-1][0]

    def _redo(self, version: int, model: TopicModel, ids: Sequence[str], announce: set[str], in_file: bool) -> int:
        """Transform ``ids`` again from what Redis holds now, adopt the vectors, and announce the ones
        running APIs need: ``announce``, plus (``in_file`` False) those the version's file lacks."""
        file_ids = set() if in_file else set(TopicIndex.load(self.files.path(version)).nums)
        written = 0
        for start in tqdm(range(0, len(ids), CHUNK), desc="re-transforming", unit="chunk", disable=not self.progress):
            rows = [r for r in self._read(ids[start:start + CHUNK])
                    if r is not None and r["status"] == Status.INDEXED and r["version"] != str(version)]
            if not rows:
                continue
            vectors = transform(model, [_tagged(r) for r in rows])
            flags = self.store.reindex.adopt(version, [(r["id"], r["updated_at"], v) for r, v in zip(rows, vectors)])
            news = [(r["id"], r["num"]) for r, ok in zip(rows, flags)
                    if ok and (r["id"] in announce or (not in_file and r["id"] not in file_ids))]
            self.store.changes.publish_upserts(news)
            written += sum(flags)
        return written

    # -- helpers ---------------------------------------------------------------------------
    def _read(self, ids: Sequence[str]) -> list[dict | None]:
        return self.store.reindex.inputs(ids)

    def _rows(self, ids: Sequence[str], what: str) -> Iterator[dict]:
        for start in tqdm(range(0, len(ids), CHUNK), desc=what, unit="chunk", disable=not self.progress,
                          leave=False):
            yield from (r for r in self._read(ids[start:start + CHUNK]) if r is not None)

    def _usable(self, row: dict | None, reuse_features: bool) -> bool:
        if row is None or row["status"] == Status.DELETED:
            return False
        return row["status"] == Status.INDEXED if reuse_features else row["retag_job"] == self.job

    @contextmanager
    def _step(self, name: str, phase: str, **fields: object) -> Iterator[None]:
        """Record ``phase`` (with ``fields``) for `vistas status`; a step that completes adds its
        duration to the report as ``phases[name]``."""
        started = time.monotonic()
        self._phase(phase, **fields)
        yield
        self.report.phases[name] = time.monotonic() - started

    def _phase(self, phase: str, **fields: object) -> None:
        self.store.reindex.set_state(phase=phase, **fields)
        self._check_lock()

    def _check_lock(self) -> None:
        if self.lease is not None and self.lease.lost:
            raise ReindexError(f"reindex {self.job} lost its lock (token {self.lease.token}); giving up")


def _tagged(row: dict) -> Tagged:
    return Tagged(row["id"], row["num"], [tuple(t) for t in row["tags"]], row["features"])

