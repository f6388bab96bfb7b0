"""Index versions: one immutable folder per version, in the object store, copied to each host that reads it.

``versions/000001/`` holds ``manifest.json`` (what was built, when,
from which point of the changes stream), the per-item columns API processes
memory-map (``vectors.npy``, the id maps ``ids.npy``, ``id_nums.npy`` and ``id_rows.npy``,
the summaries ``summaries.npy`` and ``summary_offsets.npy``, the filter fields ``kind.npy``,
``category.npy``, ``starts.npy``, ``ends.npy``, ``present.npy`` and ``codes.json``; see
``recommender.columns``), ``index.faiss`` (the HNSW graph) and ``neighbours.npy`` (each item's
nearest items), for versions of at least ``recommender.index.GRAPH_MIN_ITEMS`` items,
``topics.json`` (topic names and top tags, all the API needs), ``model.joblib``
(the fitted topic model, for the indexer), ``map.json`` (2-D positions of every
item in three representations, for the map page) and ``map-model.joblib`` (what
places new items on that map, for the indexer).

Invariants: a version exists iff its manifest does, and it is written once. Its folder is built in a
local scratch directory; every file is uploaded, the manifest last, so a reader never sees half of
one. Redis's pointer names the version's number; its key is derived here and only here
(:meth:`VersionStore.key`), from ``VISTAS_STORE_URL``. A host reads a version from its local copy under
``DATA_DIR/versions/``, downloaded whole (to a temporary folder, then renamed) the first time it is
needed, so an index can be memory-mapped from local files. When the store is the data directory
itself (the default) the copy is the version, and nothing is copied.

Trained user models are versioned the same way, beside them: ``user-models/000001/``
holds ``manifest.json`` and ``model.joblib`` (see ``recommender.users.live``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from recommender.objects import ObjectStore
from recommender.settings import Settings

MANIFEST = "manifest.json"
FAISS_INDEX = "index.faiss"
TOPICS = "topics.json"
MODEL = "model.joblib"
MAP = "map.json"
MAP_MODEL = "map-model.joblib"


class VersionStore:
    """Where version folders live (the object store) and their local copies (``root``), and how both are written."""

    def __init__(self, data_dir: Path, folder: str = "versions", objects: ObjectStore | None = None):
        self.root = Path(data_dir) / folder
        self.folder = folder
        self.objects = objects or ObjectStore(Path(data_dir).resolve())
        #: The store is this host's data directory: the local copy is the version itself.
        self.in_place = self.objects.holds(data_dir)

    @classmethod
    def for_settings(cls, settings: Settings, folder: str = "versions") -> "VersionStore":
        """The versions of ``folder`` in the store ``settings`` name (``VISTAS_STORE_URL``)."""
        return cls(settings.data_dir, folder, ObjectStore.for_settings(settings))

    def key(self, version: int) -> str:
        """The version's folder in the object store."""
        return f"{self.folder}/{version:06d}"

    def path(self, version: int) -> Path:
        """The version's local folder, downloaded first when this host has no copy and the store has the version."""
        local = self.root / f"{version:06d}"
        if not self.in_place and not (local / MANIFEST).is_file() and self._stored(version):
            self.objects.download(self.key(version), local)
            self._drop_pruned_copies()
        return local

    def exists(self, version: int) -> bool:
        return (self.root / f"{version:06d}" / MANIFEST).is_file() or self._stored(version)

    def _stored(self, version: int) -> bool:
        return not self.in_place and self.objects.exists(f"{self.key(version)}/{MANIFEST}")

    def versions(self) -> list[int]:
        """Every version in the store, oldest first (the local copies do not count)."""
        found = self.objects.find(self.folder)
        return sorted(int(k.split("/")[0]) for k in found if k.endswith(f"/{MANIFEST}") and k.split("/")[0].isdigit()
                      and k.count("/") == 1)

    def manifest(self, version: int) -> dict[str, Any]:
        """The version's manifest: from this host's copy, else read alone from the store (nothing downloaded)."""
        local = self.root / f"{version:06d}" / MANIFEST
        return json.loads(local.read_text() if local.is_file() else self.objects.get(f"{self.key(version)}/{MANIFEST}"))

    def topics(self, version: int) -> list[dict[str, Any]]:
        return json.loads((self.path(version) / TOPICS).read_text())

    @contextmanager
    def create(self, version: int, manifest: dict[str, Any]) -> Iterator[Path]:
        """Yield a scratch directory to fill; on success it becomes version ``version`` (uploaded, manifest last)."""
        if self.exists(version):
            raise FileExistsError(f"version {version} already exists in {self.objects.url_of(self.folder)}")
        self.root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{version:06d}-", dir=self.root))
        try:
            yield scratch
            (scratch / MANIFEST).write_text(json.dumps({"version": version, **manifest}, indent=2))
            if not self.in_place:
                self.objects.delete(self.key(version))  # a leftover without a manifest: an earlier build that died
                self.objects.upload(scratch, self.key(version), last=MANIFEST)
            target = self.root / f"{version:06d}"
            if target.exists():  # a leftover without a manifest, or a copy of one since deleted
                shutil.rmtree(target)
            scratch.rename(target)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch)

    def delete(self, version: int) -> None:
        """Remove the version from the store (manifest first, so no reader takes what is left for a version)
        and this host's copy. Other hosts drop theirs when they next download a version."""
        if not self.in_place:
            self.objects.delete(f"{self.key(version)}/{MANIFEST}")
            self.objects.delete(self.key(version))
        shutil.rmtree(self.root / f"{version:06d}", ignore_errors=True)

    def delete_all(self) -> None:
        """Remove every version of this folder, from the store and this host."""
        self.objects.delete(self.folder)
        shutil.rmtree(self.root, ignore_errors=True)

    def _drop_pruned_copies(self) -> None:
        """Remove local copies of versions the store no longer holds (pruned by another host), so a replica's
        disk holds about as many versions as the store keeps. A process still serving one keeps its memory
        (and any mapping of the files: the inodes live until unmapped)."""
        kept = set(self.versions())
        for copy in self.root.iterdir():
            if copy.name.isdigit() and int(copy.name) not in kept:
                shutil.rmtree(copy, ignore_errors=True)
