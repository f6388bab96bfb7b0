"""The Redis key schema: every key Vistas writes, here and only here.

Keys (``P`` is the configured key prefix). Braces are Redis Cluster hash tags: only what lies between
them picks the slot, so the keys that one script or transaction touches share one slot. Catalog-wide
keys carry the catalog tag ``{P}`` (one slot, one node: the pointer, the streams, the sets, the
counters, the locks), one item's keys carry the item's id, one user's keys the user's id. A step that
spans an item and the catalog is split into single-slot steps (see :meth:`recommender.store.queue.Queue.settle`).

* ``P:item:{<id>}``     hash: metadata, status, tags, topic vector (see :class:`recommender.store.items.Item`)
* ``P:features:{<id>}`` string: pooled backbone features, float16 (for reindexing without a forward pass)
* ``{P}:items``         set of every item id
* ``{P}:seq``           counter that hands out the numeric ids FAISS needs
* ``{P}:version``       the index version the API should serve (an integer)
* ``{P}:representation`` the topic representation the next build uses, as ranked by ``vistas eval``
* ``{P}:changes``       stream of ``{op: upsert|delete, id, num}``, tailed by API processes, capped at
  ``VISTAS_CHANGES_MAXLEN`` entries
* ``{P}:replicas``      hash API process name -> JSON ``{version, change, seen}``: the version it serves and the
  last changes entry it applied, written every few seconds (expires when every process has stopped)
* ``{P}:ingest``        stream of ``{id}``: items waiting to be tagged and indexed by a worker
* ``{P}:retag``         stream of ``{id, job}``: photos a distributed reindex asks the workers to re-tag
  (both streams are read by the consumer group ``indexers``; see :meth:`recommender.store.queue.Queue.settle`)
* ``{P}:dead``          stream of ``{id, reason, attempts, stream, consumer}``: what the workers gave up on
* ``{P}:workers``       hash worker name -> JSON heartbeat ``{host, pid, device, seen, indexed, failed, ...}``
* ``{P}:topic-names``   hash topic id -> the name a merchandiser gave it (``PUT /v1/topics/<id>``); it
  outlives reindexes while the topic keeps its id (see :mod:`recommender.model.identity`)
* ``{P}:model:<v>``     string: version ``v``'s topic model (joblib), for workers on machines without its directory
* ``{P}:reindex``       hash: the running or last reindex ``{job, phase, total, tagged, failed, skipped, ...}``
* ``{P}:reindex:lock``  string ``<job>:<token>`` with a TTL, renewed while the job runs: held by the one reindex
  that may run; only its holder may flip ``{P}:version`` (see :mod:`recommender.store.reindex`)
* ``{P}:reindex:fence`` counter that hands out the lock's fencing tokens
* ``P:user:{<uid>}:events`` list of JSON events ``{item, type, ts}``, newest first, capped
* ``{P}:popularity``    sorted set item id -> summed event weight (cold-start recommendations)
* ``{P}:activity``      stream of ``{item, type, ts}``, every user's events without the user, capped: what API
  processes fold into a trained user model's trending and popularity (``HybridModel.observe``)
* ``{P}:users:model``   the user-model version the API should serve (an integer; its files under ``user-models/``
  in the object store, ``VISTAS_STORE_URL``)
* ``{P}:users:tuning``  JSON ``{config, weights, chosen, validation, ...}`` recorded by ``vistas eval --users``,
  what ``vistas train-users`` fits with
* ``{P}:map:<version>`` hash id -> float32 map row of an item placed on version's map after it was built
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """The keys under one prefix; several catalogs (or test runs) share a Redis by prefix."""

    prefix: str

    def __post_init__(self) -> None:
        if "{" in self.prefix or "}" in self.prefix:  # a brace would move the hash tag: keys would change slots
            raise ValueError(f"the key prefix may not contain braces: {self.prefix!r}")

    @property
    def catalog(self) -> str:
        """The catalog's hash tag: every catalog-wide key starts with it, so they share one slot."""
        return f"{{{self.prefix}}}"

    def item(self, item_id: str) -> str:
        return f"{self.prefix}:item:{{{item_id}}}"

    def features(self, item_id: str) -> str:
        return f"{self.prefix}:features:{{{item_id}}}"

    def events(self, user_id: str) -> str:
        return f"{self.prefix}:user:{{{user_id}}}:events"

    def model(self, version: int) -> str:
        return f"{self.catalog}:model:{version}"

    def map(self, version: int) -> str:
        return f"{self.catalog}:map:{version}"

    @property
    def items(self) -> str:
        return f"{self.catalog}:items"

    @property
    def seq(self) -> str:
        return f"{self.catalog}:seq"

    @property
    def version(self) -> str:
        return f"{self.catalog}:version"

    @property
    def representation(self) -> str:
        return f"{self.catalog}:representation"

    @property
    def topic_names(self) -> str:
        return f"{self.catalog}:topic-names"

    @property
    def changes(self) -> str:
        return f"{self.catalog}:changes"

    @property
    def ingest(self) -> str:
        return f"{self.catalog}:ingest"

    @property
    def retag(self) -> str:
        return f"{self.catalog}:retag"

    @property
    def dead(self) -> str:
        return f"{self.catalog}:dead"

    @property
    def workers(self) -> str:
        return f"{self.catalog}:workers"

    @property
    def reindex(self) -> str:
        return f"{self.catalog}:reindex"

    @property
    def reindex_lock(self) -> str:
        return f"{self.catalog}:reindex:lock"

    @property
    def reindex_fence(self) -> str:
        return f"{self.catalog}:reindex:fence"

    @property
    def replicas(self) -> str:
        return f"{self.catalog}:replicas"

    @property
    def popularity(self) -> str:
        return f"{self.catalog}:popularity"

    @property
    def activity(self) -> str:
        return f"{self.catalog}:activity"

    @property
    def user_model(self) -> str:
        return f"{self.catalog}:users:model"

    @property
    def user_tuning(self) -> str:
        return f"{self.catalog}:users:tuning"

    @property
    def user_events_pattern(self) -> str:
        """Matches every user's event list (``SCAN`` for training)."""
        return f"{self.prefix}:user:{{*}}:events"

    def user_of(self, events_key: bytes | str) -> str:
        """The user id inside an events key."""
        key = events_key.decode() if isinstance(events_key, bytes) else events_key
        return key[len(self.prefix) + len(":user:{"):-len("}:events")]

    @property
    def queues(self) -> tuple[str, str]:
        """The streams workers read, most urgent first: new items before a reindex's re-tagging."""
        return self.ingest, self.retag

    @property
    def patterns(self) -> tuple[str, str]:
        """Match every key under this prefix: the catalog's, and the items' and users'."""
        return f"{self.catalog}:*", f"{self.prefix}:*"
