"""`vistas status`: what the indexing side is doing, in a few lines an operator can read."""

from __future__ import annotations

import time

from recommender.settings import Settings
from recommender.store import Store
from recommender.store.changes import StreamInfo
from recommender.store.connection import stream_id
from recommender.store.workers import WORKER_ALIVE_S
from recommender.users.live import FOLDER
from recommender.versions import VersionStore

DEAD_LETTERS_SHOWN = 3
#: An API process this far behind, as a share of the changes stream's cap, is reported as near it.
LAG_WARNING_SHARE = 0.8


def report(settings: Settings, store: Store) -> str:
    """The status as text: index version, user model, queues, dead letters, workers, the last reindex."""
    lines = [f"catalog    {store.items.count():,} items (Redis {settings.redis_url_or_default}, "
             f"prefix {store.keys.prefix})"]
    lines += _version(settings, store)
    lines += _users(settings, store)
    stats = store.queue.stats()
    queues = []
    for key, name in ((store.keys.ingest, "ingest"), (store.keys.retag, "retag")):
        waiting = stats[key]["waiting"]
        queues.append(f"{name}: {'?' if waiting is None else f'{waiting:,}'} waiting, "
                      f"{stats[key]['pending']:,} being indexed")
    lines.append("queue      " + "; ".join(queues))
    dead = store.queue.dead_letters(DEAD_LETTERS_SHOWN)
    lines.append(f"dead       {stats[store.keys.dead]['length']:,} dead letters")
    lines += [f"           {d['id']}: {d['reason']} ({d['attempts']} attempts)" for d in dead]
    lines += _workers(store)
    lines += _replicas(settings, store)
    lines += _reindex(store)
    return "\n".join(lines)


def _version(settings: Settings, store: Store) -> list[str]:
    files = VersionStore.for_settings(settings)
    current = store.versions.current()
    kept = ", ".join(map(str, files.versions())) or "none"
    if not current:
        return [f"index      no version yet (kept in the store: {kept})"]
    if not files.exists(current):
        where = files.objects.url_of(files.folder)
        return [f"index      version {current}, not in {where} (kept in the store: {kept})"]
    m = files.manifest(current)
    built = f", built in {m['build_seconds']}s" if "build_seconds" in m else ""
    return [(f"index      version {current}: {m.get('items', 0):,} items, {m.get('topics')} topics, "
             f"created {m.get('created_at')}{built} (kept in the store: {kept})")]


def _users(settings: Settings, store: Store) -> list[str]:
    """The served user model and the weights it was trained with."""
    files = VersionStore.for_settings(settings, FOLDER)
    current = store.users.model_version()
    tuning = store.users.tuning()
    chosen = ("weights chosen by `vistas eval --users`" if tuning and tuning["chosen"]
              else "default weights (run `vistas eval --users`)")
    if not current or not files.exists(current):
        return [f"users      no user model yet (`vistas train-users`); {chosen}"]
    m = files.manifest(current)
    return [f"users      model {current}: {m['users']:,} users, {m['events']:,} events, "
            f"fit in {m['card']['fit_seconds']}s; {'chosen' if m['card']['weights_chosen'] else 'default'} weights"]


def _workers(store: Store) -> list[str]:
    workers = store.workers.running()
    lines = [f"workers    {len(workers)} running (heartbeat within {WORKER_ALIVE_S:.0f}s)"]
    now = time.time()
    for w in workers:
        lines.append(f"           {w['name']}  {w.get('device', '?')}  seen {now - w['seen']:.0f}s ago  "
                     f"indexed {w.get('indexed', 0):,}  re-tagged {w.get('retagged', 0):,}  "
                     f"failed {w.get('failed', 0):,}")
    return lines


def _replicas(settings: Settings, store: Store) -> list[str]:
    """API processes and how far behind the changes stream's newest entry each is; a warning for those
    near its cap (past it, changes they need are trimmed away and they reload their version)."""
    replicas = store.replicas.positions()
    info = store.changes.info()
    cap = settings.changes_maxlen
    lines = [f"replicas   {len(replicas)} API processes reporting; changes stream "
             f"{info.length if info else 0:,} entries (cap {cap:,})"]
    for r in replicas:
        behind = _behind(info, r["change"])
        where = f"{r['name']} (version {r['version']}, about {behind:,} changes behind)"
        if not store.changes.kept_after(r["change"]):
            lines.append(f"  WARNING  {where}: changes it needed were trimmed; it reloads its version")
        elif behind >= LAG_WARNING_SHARE * cap:
            lines.append(f"  WARNING  {where}: near the cap of {cap:,}; past it, it reloads its version")
    return lines


def _behind(info: StreamInfo | None, change: str) -> int:
    """About how many entries follow ``change``, interpolated on the entries' timestamps (exact counts
    would read them all)."""
    if info is None or not info.length or stream_id(change) >= stream_id(info.last):
        return 0
    first, last, at = (stream_id(x)[0] for x in (info.first, info.last, change))
    if last <= first or at < first:
        return info.length
    return max(1, round(info.length * (last - at) / (last - first)))


def _reindex(store: Store) -> list[str]:
    state = store.reindex.state()
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
