"""Index versions on disk: one immutable directory per version.

``DATA_DIR/versions/000001/`` holds ``manifest.json`` (what was built, when,
from which point of the changes stream), the per-item columns API processes
memory-map (``vectors.npy``, the id maps ``ids.npy``, ``id_nums.npy`` and ``id_rows.npy``,
the summaries ``summaries.npy`` and ``summary_offsets.npy``, the filter fields ``kind.npy``,
``category.npy``, ``starts.npy``, ``ends.npy``, ``present.npy`` and ``codes.json``; see
``recommender.columns``), ``index.faiss`` (the HNSW graph, for versions of at least
``recommender.index.GRAPH_MIN_ITEMS`` items), ``topics.json`` (topic names and top
tags, all the API needs), ``model.joblib`` (the fitted topic model, for the
indexer), ``map.json`` (2-D positions of every item in three representations,
for the map page) and ``map-model.joblib`` (what places new items on that map,
for the indexer). A version is written into a temporary directory and renamed into
place, so a reader never sees half of one.

Trained user models are versioned the same way, beside them: ``DATA_DIR/user-models/000001/``
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

MANIFEST = "manifest.json"
FAISS_INDEX = "index.faiss"
TOPICS = "topics.json"
MODEL = "model.joblib"
MAP = "map.json"
MAP_MODEL = "map-model.joblib"


class VersionStore:
    """Where version directories live and how they are written."""

    def __init__(self, data_dir: Path, folder: str = "versions"):
        self.root = Path(data_dir) / folder

    def path(self, version: int) -> Path:
        return self.root / f"{version:06d}"

    def exists(self, version: int) -> bool:
        return (self.path(version) / MANIFEST).is_file()

    def versions(self) -> list[int]:
        if not self.root.is_dir():
            return []
        return sorted(int(p.name) for p in self.root.iterdir() if p.name.isdigit() and (p / MANIFEST).is_file())

    def manifest(self, version: int) -> dict[str, Any]:
        return json.loads((self.path(version) / MANIFEST).read_text())

    def topics(self, version: int) -> list[dict[str, Any]]:
        return json.loads((self.path(version) / TOPICS).read_text())

    @contextmanager
    def create(self, version: int, manifest: dict[str, Any]) -> Iterator[Path]:
        """Yield a scratch directory to fill; on success it becomes version ``version``."""
        if self.exists(version):
            raise FileExistsError(f"version {version} already exists in {self.root}")
        self.root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{version:06d}-", dir=self.root))
        try:
            yield scratch
            (scratch / MANIFEST).write_text(json.dumps({"version": version, **manifest}, indent=2))
            target = self.path(version)
            if target.exists():  # a leftover without a manifest: an earlier build that died
                shutil.rmtree(target)
            scratch.rename(target)
        finally:
            if scratch.exists():
                shutil.rmtree(scratch)
