"""`vistas worker`: tag queued photos, index them, acknowledge them.

Workers form one Redis Streams consumer group (``indexers``) on the ingest
stream (new and replaced items) and the retag stream (a distributed reindex),
so any number of them, on any number of machines, share the work and each
message goes to one of them. A worker:

1. takes a window of messages: up to ``worker_batch`` photos, or what arrived
   within ``worker_batch_ms`` of the first one;
2. tags the photos on its best device, transforms them with the current
   topic model, and settles each message atomically (item written, change
   announced, message acknowledged: :meth:`Queue.settle <recommender.store.queue.Queue.settle>`);
3. puts the new items on the catalog map, a few seconds' worth at a time, on
   a thread of its own;
4. beats a heartbeat, and now and then trims the streams and claims messages
   other workers left pending for ``claim_idle_s`` (they died: ``XAUTOCLAIM``).
   While a window is in hand its messages are touched every third of that
   time, so a slow batch is never mistaken for a dead worker.

A message that failed before is retried alone, so one bad photo cannot sink
its neighbours; after ``max_attempts`` deliveries it goes to the dead letters
and its item is marked failed with the reason. An unreadable photo fails at
once (retrying cannot fix it). SIGTERM (or Ctrl-C) finishes the current window
and exits; a SIGKILLed worker's messages are claimed by the others, or by
itself when restarted under the same ``--name``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import redis

from indexer.vectors import CurrentModel, NoVersionYet, Tagged, index_tagged, place_on_map
from recommender.model.tagger import Tagger, Tagging
from recommender.model.vocabulary import merge_tags
from recommender.objects import NOT_STORED, fetched
from recommender.photos import CROP_SIZE, ImageError
from recommender.settings import Settings
from recommender.store import Store
from recommender.store.items import Item, Status
from recommender.store.queue import Message, Op, Outcome, Settled

log = logging.getLogger(__name__)
HEARTBEAT_S = 2.0
#: Heartbeats (and group consumers without pending work) older than this are removed.
FORGET_AFTER_S = 24 * 3600.0
TRIM_EVERY_S = 10.0
#: Longest wait on an empty stream, so heartbeats and SIGTERM are never held up for long.
IDLE_BLOCK_MS = 1000
#: Longest pause after a Redis error before trying again.
MAX_BACKOFF_S = 5.0
#: Indexed items are put on the catalog map together, at most this often...
PLACE_EVERY_S = 5.0
#: ...and at most this many wait for it (beyond, they appear on the map after the next reindex).
MAX_UNPLACED = 50_000


class MapPlacer:
    """Puts the items a worker indexed on their version's catalog map, in batches on a thread of its
    own: placing one item costs about as much as placing a hundred (openTSNE optimises the new
    points together, over a second here), so doing it per window would slow indexing down."""

    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        self._pending: list[tuple[list[Tagged], int]] = []
        self._count = 0
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="map-placer")
        self._thread.start()

    def add(self, tagged: list[Tagged], version: int) -> None:
        with self._lock:
            if self._count + len(tagged) > MAX_UNPLACED:
                log.warning("the catalog map falls behind: %d indexed items will appear on it after the next "
                            "reindex", len(tagged))
                return
            self._pending.append((tagged, version))
            self._count += len(tagged)

    def close(self) -> None:
        """Place what is left, then stop."""
        self._closing.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._closing.wait(PLACE_EVERY_S):
            self._flush()
        self._flush()

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending, self._count = self._pending, [], 0
        by_version: dict[int, list[Tagged]] = {}
        for tagged, version in pending:
            by_version.setdefault(version, []).extend(tagged)
        for version, tagged in by_version.items():
            place_on_map(self.settings, self.store, tagged, version)


@dataclass
class WorkerStats:
    """What a worker has done since it started (also in its heartbeat)."""

    indexed: int = 0
    retagged: int = 0
    failed: int = 0
    windows: int = 0


class Worker:
    """One indexer worker; :meth:`run` loops until SIGTERM (or, with ``burst``, until the queue is empty)."""

    def __init__(
        self, settings: Settings, store: Store, tagger: Tagger | None = None, name: str | None = None,
        burst: bool = False,
    ):
        self.settings = settings
        self.store = store
        self.tagger = tagger
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.burst = burst
        self.models = CurrentModel(settings, store)
        self.stats = WorkerStats()
        self.started = time.time()
        self._stop = threading.Event()
        self._cursors: dict[str, str] = {}
        self._recovering = True  # first look at our own pending messages (a restart under the same name)
        self._next_beat = self._next_claim = self._next_trim = 0.0
        self.placer: MapPlacer | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def stop(self, *_: object) -> None:
        """Finish the current window, then leave :meth:`run` (SIGTERM and Ctrl-C call this)."""
        if not self._stop.is_set():
            log.info("worker %s: stopping after the current batch", self.name)
        self._stop.set()

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stop()
        signal.signal(signum, signal.SIG_DFL)  # a second one stops at once

    def run(self) -> WorkerStats:
        """Process windows of messages until stopped; Redis outages are waited out, not fatal."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        if self.tagger is None:
            self.tagger = Tagger(self.settings)
        self._warm_up()
        log.info("worker %s: started (device %s, windows of %d photos or %d ms)", self.name, self.tagger.device,
                 self.settings.worker_batch, self.settings.worker_batch_ms)
        self.placer = MapPlacer(self.settings, self.store)
        try:
            self._loop()
        finally:
            self.placer.close()
        self._leave()
        log.info("worker %s: stopped; %s", self.name, self.stats)
        return self.stats

    def _warm_up(self) -> None:
        """Run one forward pass and load the current topic model now, so the first photo waits for neither."""
        assert self.tagger is not None
        self.tagger.tag_arrays(np.zeros((1, CROP_SIZE, CROP_SIZE, 3), dtype=np.uint8))
        try:
            self.models.get()
        except (NoVersionYet, FileNotFoundError, redis.RedisError) as exc:
            log.info("worker %s: no topic model loaded yet (%s)", self.name, exc)

    def _loop(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            try:
                self._chores()
                messages = self._next_window()
                if messages:
                    self.process(messages)
                elif self.burst:
                    break
                backoff = 0.0
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                backoff = min(MAX_BACKOFF_S, max(0.2, backoff * 2))
                log.warning("worker %s: Redis unreachable (%s); retrying in %.1fs", self.name, exc, backoff)
                self._recovering = True
                self._stop.wait(backoff)

    def _leave(self) -> None:
        try:
            self.store.workers.forget(self.name)
        except redis.RedisError as exc:
            log.warning("worker %s: could not remove its heartbeat (%s)", self.name, exc)

    def _chores(self) -> None:
        if self._recovering:  # at start, and after an outage (a Redis that lost its data lost the group)
            self.store.queue.ensure()
        now = time.monotonic()
        if now >= self._next_beat:
            self._next_beat = now + HEARTBEAT_S
            self.store.workers.heartbeat(self.name, {
                "host": socket.gethostname(), "pid": os.getpid(), "device": str(getattr(self.tagger, "device", "")),
                "started": self.started, **asdict(self.stats),
            })
        if now >= self._next_trim:
            self._next_trim = now + TRIM_EVERY_S
            self.store.queue.trim()
            self.store.workers.prune(FORGET_AFTER_S)

    # -- taking messages -------------------------------------------------------------------
    def _next_window(self) -> list[Message]:
        """Our own unsettled messages first (after a restart or an outage), then ones dead workers
        left, then new ones: up to ``worker_batch``, waiting ``worker_batch_ms`` for more."""
        size = self.settings.worker_batch
        if self._recovering:  # once; any rest of them is claimed once idle, like a dead worker's
            self._recovering = False
            mine = self.store.queue.own_pending(self.name, size)
            if mine:
                log.info("worker %s: taking up %d messages it had not settled", self.name, len(mine))
                return mine
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + min(5.0, self.settings.claim_idle_s / 2)
            idle_ms = int(self.settings.claim_idle_s * 1000)
            claimed = self.store.queue.claim_stale(self.name, idle_ms, size, self._cursors)
            if claimed:
                log.info("worker %s: claimed %d messages left pending by stopped workers", self.name, len(claimed))
                return claimed
        ingest = self.store.versions.current() > 0  # new items need a topic model; re-tagging does not
        messages = self.store.queue.read(self.name, size, None if self.burst else IDLE_BLOCK_MS, ingest)
        deadline = time.monotonic() + self.settings.worker_batch_ms / 1000
        while messages and len(messages) < size:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0:
                break
            more = self.store.queue.read(self.name, size - len(messages), left_ms, ingest)
            if not more:
                break
            messages += more
        return messages

    # -- processing a window ---------------------------------------------------------------
    def process(self, messages: Sequence[Message]) -> None:
        """Tag, index and settle one window of messages, keeping them claimed meanwhile."""
        done = threading.Event()
        keeper = threading.Thread(target=self._keep_claimed, args=(messages, done), daemon=True,
                                  name=f"{self.name}-keep-claimed")
        keeper.start()
        try:
            self._process(messages)
        finally:
            done.set()
            keeper.join()

    def _keep_claimed(self, messages: Sequence[Message], done: threading.Event) -> None:
        """However long a window takes, its messages never look idle: only a dead worker's are claimed."""
        while not done.wait(self.settings.claim_idle_s / 3):
            try:
                self.store.queue.keep_claimed(self.name, messages)
            except redis.RedisError as exc:
                log.warning("worker %s: could not keep its messages claimed (%s)", self.name, exc)

    def _process(self, messages: Sequence[Message]) -> None:
        started = time.monotonic()
        self.stats.windows += 1
        items = self.store.items.get_many(m.item_id for m in messages if m.item_id)
        by_id = {item.id: item for item in items if item is not None}
        fails, photos, tag_only = [], [], []  # fails: settled without tagging (SKIP for gone items)
        for m in messages:
            item = by_id.get(m.item_id)
            if item is None or item.status == Status.DELETED:
                fails.append(Outcome(Op.SKIP, m.item_id, 0, message=m))
            elif m.deliveries > self.settings.max_attempts:
                last = item.reason or "the worker indexing it stopped (killed or crashed)"
                fails.append(Outcome(Op.FAIL, item.id, item.num, reason=(
                    f"gave up after {m.deliveries - 1} attempts; last: {last}"), message=m, seen=item.updated_at))
            elif item.image:
                photos.append((m, item))
            else:
                tag_only.append(Tagged(item.id, item.num, merge_tags([], item.given_tags), None, m,
                                       item.updated_at))
        tagged = tag_only + self._tag(photos, fails)
        self._settle(tagged, fails)
        failed = sum(o.op == Op.FAIL for o in fails)
        self.stats.failed += failed
        log.info("worker %s: %d messages in %.2fs (%d tagged, %d failed, %d gone)", self.name, len(messages),
                 time.monotonic() - started, len(tagged), failed, len(fails) - failed)

    def _tag(self, photos: list[tuple[Message, Item]], fails: list[Outcome]) -> list[Tagged]:
        """Tag photos: first-time messages together, retried ones each alone. Unreadable photos
        become FAIL outcomes; an unexpected error leaves its group pending (noted on the items)."""
        assert self.tagger is not None
        fresh = [p for p in photos if p[0].deliveries == 1]
        groups = ([fresh] if fresh else []) + [[p] for p in photos if p[0].deliveries > 1]
        tagged: list[Tagged] = []
        for group in groups:
            by_key = {m.id: (m, item) for m, item in group}
            try:
                missing: list[str] = []
                results: list[tuple[str, Tagging | ImageError]] = list(
                    self.tagger.tag(fetched(((m.id, item.image) for m, item in group), missing)))
                for key in missing:
                    m, item = by_key[key]
                    fails.append(Outcome(Op.FAIL, item.id, item.num, reason=NOT_STORED, message=m,
                                         seen=item.updated_at))
            except Exception as exc:  # noqa: BLE001 - kept pending, retried alone, dead-lettered if it persists
                self._note_error([item for _, item in group], f"tagging failed: {exc!r}")
                continue
            for key, result in results:
                m, item = by_key[key]
                if isinstance(result, ImageError):
                    fails.append(Outcome(Op.FAIL, item.id, item.num, reason=str(result), message=m,
                                         seen=item.updated_at))
                else:
                    tagged.append(Tagged(item.id, item.num, merge_tags(result.labels, item.given_tags),
                                         result.features, m, item.updated_at))
        return tagged

    def _settle(self, tagged: list[Tagged], fails: list[Outcome]) -> None:
        retag = [t for t in tagged if t.message is not None and t.message.job]
        index = [t for t in tagged if t.message is None or not t.message.job]
        outcomes = fails + [Outcome(Op.RETAG, t.item_id, t.num, t.tags, features=t.features, message=t.message,
                                    seen=t.seen) for t in retag]
        codes = self.store.queue.settle(outcomes, self.name)
        self.stats.retagged += sum(c == Settled.SETTLED for o, c in zip(outcomes, codes) if o.op == Op.RETAG)
        if not index:
            return
        try:
            assert self.placer is not None, "run() starts the placer"
            codes = index_tagged(self.store, self.models, index, self.name, on_settled=self.placer.add)
        except NoVersionYet:
            log.warning("worker %s: the index version disappeared; leaving %d items queued", self.name, len(index))
            return
        except (redis.ConnectionError, redis.TimeoutError):
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. features the model cannot take; retried, then dead-lettered
            self._note_error(self.store.items.get_many(t.item_id for t in index), f"indexing failed: {exc!r}")
            return
        self.stats.indexed += sum(c == Settled.SETTLED for c in codes)
        if any(c not in (Settled.SETTLED, Settled.GONE) for c in codes):
            log.info("worker %s: %d messages were claimed by another worker or outpaced by reindexes",
                     self.name, sum(c not in (Settled.SETTLED, Settled.GONE) for c in codes))

    def _note_error(self, items: Sequence[Item | None], error: str) -> None:
        log.error("worker %s: %s (items %s); they stay queued and are retried",
                  self.name, error, ", ".join(i.id for i in items if i is not None))
        for item in items:
            if item is not None:
                self.store.items.note_error(item.id, error)
