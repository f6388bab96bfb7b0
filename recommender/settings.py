"""One Settings object for every Vistas process.

Values come from environment variables; command-line flags override them by
passing keyword arguments to :meth:`Settings.from_env`. Every setting is
listed here and only here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
#: What may run the backbone (recommender.model.runtime).
RUNTIMES = ("auto", "torch", "onnx", "openvino")


@dataclass(frozen=True)
class Settings:
    """Configuration shared by the API, the CLI and the indexer."""

    #: Redis connection; None means "not configured" (the demo then starts an embedded server).
    redis_url: str | None = None
    #: Index versions, thumbnails and the embedded Redis live here (with a remote store: local copies of its files).
    data_dir: Path = Path(".vistas")
    #: Where versions, user models, heads and uploaded photos live for every host (recommender.objects):
    #: a local folder or ``s3://bucket/prefix``; None means the data directory itself.
    store_url: str | None = None
    #: Every Redis key starts with this, so catalogs and test runs can share one server.
    key_prefix: str = "vistas"
    #: Number of NMF topics (fewer when the catalog has fewer items).
    n_topics: int = 30
    #: Photos per forward pass; on CPU small batches are faster (they stay in cache).
    batch_size: int = 16
    #: "auto" (CUDA when available), "cpu" or "cuda".
    device: str = "auto"
    #: What runs the backbone: "auto" (torch on CUDA, else OpenVINO), "torch", "onnx" (ONNX Runtime), "openvino".
    runtime: str = "auto"
    #: Where the exported backbone is kept (None: DATA_DIR/runtime); the CPU image bakes one in.
    runtime_dir: Path | None = None
    #: Threads a process tags with (runtime + decoding); 0 means the cores it may run on.
    threads: int = 0
    #: Backbone: "efficientnet-lite0" (bundled weights) or a torchvision model name.
    backbone: str = "efficientnet-lite0"
    #: Weights file for a torchvision backbone (never downloaded).
    backbone_weights: Path | None = None
    #: Decompression-bomb guard: photos with more pixels are refused.
    max_image_pixels: int = 50_000_000
    #: Photos larger than this many bytes are refused before decoding.
    max_image_bytes: int = 25 * 1024 * 1024
    #: Largest k a client may ask for.
    max_k: int = 100
    #: Photos named by path in item writes must lie under this directory (None: paths refused).
    image_root: Path | None = None
    #: API keys for writes (items); any of them also works for reads. Empty: no auth (development).
    admin_keys: tuple[str, ...] = ()
    #: API keys for reads and user events. Empty and no admin keys: no auth.
    client_keys: tuple[str, ...] = ()
    #: A user event's weight halves every this many days.
    half_life_days: float = 14.0
    #: Events kept per user (older ones are dropped), so memory stays bounded.
    user_history: int = 200
    #: Items a user viewed this many times without buying are not recommended again.
    seen_limit: int = 5
    #: An indexer worker tags up to this many queued photos together...
    worker_batch: int = 64
    #: ...or whatever arrived within this many milliseconds of the first, whichever comes first.
    worker_batch_ms: int = 100
    #: A message whose worker has been silent this long (it died) is claimed by another worker.
    claim_idle_s: float = 30.0
    #: A photo whose indexing failed (or killed its worker) this many times goes to the dead letters.
    max_attempts: int = 5
    #: Index versions kept in the object store after a reindex; older ones are removed (rollback reaches the kept ones).
    keep_versions: int = 3
    #: A reindex fits the topic model and lays out the map on a random sample of this many items (then
    #: transforms all of them): the cost of a reindex past this size grows only with the transform.
    fit_sample: int = 10_000
    #: Entries the changes stream keeps (trimmed approximately as writers add): an API process further
    #: behind than this reloads its version from Redis's items, and `vistas status` warns before that.
    changes_maxlen: int = 1_000_000

    @property
    def redis_url_or_default(self) -> str:
        """The configured Redis URL, or the local default server."""
        return self.redis_url or DEFAULT_REDIS_URL

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> "Settings":
        """Read settings from ``env`` (default ``os.environ``); non-None overrides win."""
        env = dict(os.environ if env is None else env)
        values: dict[str, Any] = {}
        for name, (var, kind) in _ENV.items():
            raw = env.get(var)
            if raw not in (None, ""):
                try:
                    values[name] = kind(raw)
                except ValueError as exc:
                    raise ValueError(f"environment variable {var}={raw!r} is invalid: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise TypeError(f"unknown settings: {sorted(unknown)}")
        return cls(**values)

    def with_(self, **changes: Any) -> "Settings":
        """A copy with some values changed."""
        return replace(self, **changes)


def _runtime(raw: str) -> str:
    if raw not in RUNTIMES:
        raise ValueError(f"choose one of {', '.join(RUNTIMES)}")
    return raw


def _key_list(raw: str) -> tuple[str, ...]:
    """Comma-separated keys, blanks ignored."""
    return tuple(key.strip() for key in raw.split(",") if key.strip())


_ENV: dict[str, tuple[str, Any]] = {
    "redis_url": ("REDIS_URL", str),
    "data_dir": ("VISTAS_DATA_DIR", Path),
    "store_url": ("VISTAS_STORE_URL", str),
    "key_prefix": ("VISTAS_KEY_PREFIX", str),
    "n_topics": ("VISTAS_TOPICS", int),
    "batch_size": ("VISTAS_BATCH_SIZE", int),
    "device": ("VISTAS_DEVICE", str),
    "runtime": ("VISTAS_RUNTIME", _runtime),
    "runtime_dir": ("VISTAS_RUNTIME_DIR", Path),
    "threads": ("VISTAS_THREADS", int),
    "backbone": ("VISTAS_BACKBONE", str),
    "backbone_weights": ("VISTAS_BACKBONE_WEIGHTS", Path),
    "max_image_pixels": ("VISTAS_MAX_IMAGE_PIXELS", int),
    "max_image_bytes": ("VISTAS_MAX_IMAGE_BYTES", int),
    "max_k": ("VISTAS_MAX_K", int),
    "image_root": ("VISTAS_IMAGE_ROOT", Path),
    "admin_keys": ("VISTAS_ADMIN_KEYS", _key_list),
    "client_keys": ("VISTAS_CLIENT_KEYS", _key_list),
    "half_life_days": ("VISTAS_HALF_LIFE_DAYS", float),
    "user_history": ("VISTAS_USER_HISTORY", int),
    "seen_limit": ("VISTAS_SEEN_LIMIT", int),
    "worker_batch": ("VISTAS_WORKER_BATCH", int),
    "worker_batch_ms": ("VISTAS_WORKER_BATCH_MS", int),
    "claim_idle_s": ("VISTAS_CLAIM_IDLE", float),
    "max_attempts": ("VISTAS_MAX_ATTEMPTS", int),
    "keep_versions": ("VISTAS_KEEP_VERSIONS", int),
    "fit_sample": ("VISTAS_FIT_SAMPLE", int),
    "changes_maxlen": ("VISTAS_CHANGES_MAXLEN", int),
}
