"""`vistas status`: what the indexing side is doing, in a few lines an operator can read."""

from __future__ import annotations

import time

from recommender.catalog import WORKER_ALIVE_S, Catalog
from recommender.settings import Settings
from recommender.versions import VersionStore

DEAD_LETTERS_SHOWN = 3


def report(settings: Settings, catalog: Catalog) -> str:
    """The status as text: index version, queues, dead letters, workers, the last reindex."""
    lines = [f"catalog    {catalog.count():,} items (Redis {settings.redis_url_or_default}, prefix {catalog.prefix})"]
    lines += _version(settings, catalog)
    stats = catalog.queue_stats()
    queues = []
    for key, name in ((catalog.ingest_key, "ingest"), (catalog.retag_key, "retag")):
        waiting = stats[key]["waiting"]
        queues.append(f"{name}: {'?' if waiting is None else f'{waiting:,}'} waiting, "
                      f"{stats[key]['pending']:,} being indexed")
    lines.append("queue      " + "; ".join(queues))
    dead = catalog.dead_letters(DEAD_LETTERS_SHOWN)
    lines.append(f"dead       {stats[catalog.dead_key]['length']:,} dead letters")
    lines += [f"           {d['id']}: {d['reason']} ({d['attempts']} attempts)" for d in dead]
    lines += _workers(catalog)
    lines += _reindex(catalog)
    return "\n".join(lines)


def _version(settings: Settings, catalog: Catalog) -> list[str]:
    store = VersionStore(settings.data_dir)
    current = catalog.current_version()
    kept = ", ".join(map(str, store.versions())) or "none"
    if not current:
        return [f"index      no version yet (kept on disk: {kept})"]
    if not store.exists(current):
        return [f"index      version {current}, not under {store.root} (kept on disk: {kept})"]
    m = store.manifest(current)
    built = f", built in {m['build_seconds']}s" if "build_seconds" in m else ""
    return [(f"index      version {current}: {m.get('items', 0):,} items, {m.get('topics')} topics, "
             f"created {m.get('created_at')}{built} (kept on disk: {kept})")]


def _workers(catalog: Catalog) -> list[str]:
    workers = catalog.workers()
    lines = [f"workers    {len(workers)} running (heartbeat within {WORKER_ALIVE_S:.0f}s)"]
    now = time.time()
    for w in workers:
        lines.append(f"           {w['name']}  {w.get('device', '?')}  seen {now - w['seen']:.0f}s ago  "
                     f"indexed {w.get('indexed', 0):,}  re-tagged {w.get('retagged', 0):,}  "
                     f"failed {w.get('failed', 0):,}")
    return lines


def _reindex(catalog: Catalog) -> list[str]:
    state = catalog.reindex_state()
    if not state:
        return ["reindex    none yet"]
    phase = state.get("phase", "?")
    if phase == "done":
        finished = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(state["finished_at"])))
        return [(f"reindex    last: job {state.get('job')} made version {state.get('version')} "
                 f"({int(state.get('items', 0)):,} items, {state.get('seconds')}s), finished {finished}")]
    if phase == "failed":
        return [f"reindex    last: job {state.get('job')} failed: {state.get('error')}"]
    progress = ""
    if phase == "tagging" and state.get("total"):
        done = sum(int(state.get(k, 0)) for k in ("tagged", "failed", "skipped"))
        progress = f" {done:,}/{int(state['total']):,} photos"
    elapsed = time.time() - float(state.get("started_at", time.time()))
    return [f"reindex    running: job {state.get('job')}, {phase}{progress}, for {elapsed:.0f}s"]
