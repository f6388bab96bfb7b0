"""The object store: where versions, user models, heads and uploaded photos live, for every host.

``VISTAS_STORE_URL`` names it: a local folder (by default the data directory itself, so one machine
keeps today's layout and copies nothing) or ``s3://bucket/prefix`` on any S3-compatible server,
through fsspec and s3fs. The endpoint and credentials come from the standard ``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``, which botocore reads itself (``AWS_ENDPOINT_URL``
since botocore 1.31; the installed 1.43 honours it, tested against SeaweedFS), so nothing here parses them.

Objects are named by keys relative to the store's root (``versions/000001/manifest.json``). Writing
one object is atomic (S3 PUT; a temporary name and a rename on a local disk); a folder of objects is
not, so its writer names a marker object to write last (:meth:`ObjectStore.upload`) and readers
look for the marker. A host reads a folder by downloading it to a temporary local folder and renaming
that into place (:meth:`ObjectStore.download`), so a local reader never sees half of one either.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.utils import get_protocol

from recommender.photos import Source
from recommender.settings import Settings

K = TypeVar("K")
#: Uploaded photos fetched together (about 64 x 0.2-2 MB in memory at a time).
FETCH_BATCH = 64
#: Why an item whose uploaded photo the store does not hold failed.
NOT_STORED = "the photo cannot be read (the object store has no such upload)"
#: The store's folder of photos uploaded through the API.
UPLOADS = "uploads"


class ObjectStore:
    """Objects by key under one root URL, over an fsspec filesystem."""

    def __init__(self, url: str | Path):
        self.url = str(url).rstrip("/")
        self.fs, self.root = _filesystem(self.url)
        self.local = isinstance(self.fs, LocalFileSystem)

    @staticmethod
    def for_settings(settings: Settings) -> "ObjectStore":
        """The store ``settings`` name: ``VISTAS_STORE_URL``, or the data directory when it is unset."""
        return _store(settings.store_url or str(Path(settings.data_dir).resolve()), os.getpid())

    def holds(self, directory: Path) -> bool:
        """Whether this store *is* ``directory`` on this host (then there is nothing to copy or cache)."""
        return self.local and Path(self.root).resolve() == Path(directory).resolve()

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}" if key else self.root

    def url_of(self, key: str) -> str:
        """What names the object to any host: an absolute path on a local store, else a URL."""
        return self._path(key) if self.local else f"{get_protocol(self.url)}://{self._path(key)}"

    def put(self, key: str, data: bytes) -> None:
        if self.local:
            _write_atomically(Path(self._path(key)), data)
        else:
            self.fs.pipe_file(self._path(key), data)

    def get(self, key: str) -> bytes:
        """The object's bytes; FileNotFoundError when there is none."""
        return self.fs.cat_file(self._path(key))

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._path(key))

    def find(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (a folder), relative to it, in one listing."""
        base = self._path(prefix).rstrip("/") + "/"
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        return sorted(path[len(base):] for path in found if path.startswith(base))

    def delete(self, prefix: str) -> None:
        """Remove the object or folder ``prefix`` (nothing happens when it is not there)."""
        try:
            self.fs.rm(self._path(prefix), recursive=True)
        except FileNotFoundError:
            pass

    def upload(self, directory: Path, prefix: str, last: str | None = None) -> None:
        """Copy every file of local ``directory`` under ``prefix``, the one named ``last`` after all the others
        (a reader who finds it finds the whole folder)."""
        files = sorted(p.relative_to(directory).as_posix() for p in Path(directory).rglob("*") if p.is_file())
        first = [f for f in files if f != last]
        if first:
            self.fs.put([str(directory / f) for f in first], [self._path(f"{prefix}/{f}") for f in first])
        if last in files:
            self.fs.put_file(str(directory / last), self._path(f"{prefix}/{last}"))

    def download(self, prefix: str, target: Path) -> Path:
        """Make local ``target`` a copy of the folder ``prefix``: downloaded to a temporary folder beside it, then
        renamed into place, so a local reader sees all of it or nothing. A copy already there is kept."""
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        try:
            keys = self.find(prefix)
            if not keys:
                raise FileNotFoundError(f"{self.url_of(prefix)} holds nothing")
            for key in keys:
                (scratch / key).parent.mkdir(parents=True, exist_ok=True)
            self.fs.get([self._path(f"{prefix}/{k}") for k in keys], [str(scratch / k) for k in keys])
            try:
                scratch.rename(target)
            except OSError:  # another process on this host renamed its copy first
                if not target.is_dir():
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return target

    def mirror(self, prefix: str, target: Path, last: str | None = None) -> None:
        """Bring local ``target`` up to date with the folder ``prefix``, file by file (each replaced atomically,
        files named ``last`` after the others): for small folders that change in place, like the custom heads."""
        for key in sorted(self.find(prefix), key=lambda k: k.rsplit("/", 1)[-1] == last):
            local = target / key
            size = self.fs.size(self._path(f"{prefix}/{key}"))
            if not local.is_file() or local.stat().st_size != size:
                _write_atomically(local, self.get(f"{prefix}/{key}"))


def _filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of ``url`` and the path on it; S3 listings are never cached (always ask the server)."""
    options = {"use_listings_cache": False} if get_protocol(url) == "s3" else {}
    return fsspec.core.url_to_fs(url, **options)


@lru_cache(maxsize=8)
def _store(url: str, pid: int) -> ObjectStore:
    """One store per URL and process (a forked process gets its own: an S3 client's connections are not shared)."""
    return ObjectStore(url)


def fetched(photos: Iterable[tuple[K, str]], missing: list[K], batch: int = FETCH_BATCH) -> Iterator[tuple[K, Source]]:
    """Photos named by items, as the decoder takes them: a local path stays a path (the decoder reads it), a URL
    (an upload in the object store) becomes its bytes, fetched ``batch`` at a time, concurrently, as the
    consumer gets to them (so memory holds one batch, not a reindex's chunk). Keys whose object the store
    does not have go to ``missing``; any other failure (the store unreachable) raises, as the photo may be fine."""
    pending: list[tuple[K, str]] = []
    for key, image in photos:
        if "://" not in image:
            yield key, Path(image)
            continue
        pending.append((key, image))
        if len(pending) >= batch:
            yield from _fetch(pending, missing)
            pending = []
    yield from _fetch(pending, missing)


def _fetch(photos: list[tuple[K, str]], missing: list[K]) -> Iterator[tuple[K, bytes]]:
    if not photos:
        return
    fs, _ = _filesystem(photos[0][1])
    found = fs.cat([url for _, url in photos], on_error="return")
    for key, url in photos:
        value = found.get(fs._strip_protocol(url), FileNotFoundError(url))
        if isinstance(value, FileNotFoundError):
            missing.append(key)
        elif isinstance(value, bytes):
            yield key, value
        else:
            raise value


def stamp(image: str) -> tuple[int, str]:
    """A photo's size and what changes when it is replaced (mtime, or the object's ETag); OSError if it is gone."""
    if "://" not in image:
        stat = os.stat(image)
        return stat.st_size, str(stat.st_mtime_ns)
    fs, path = _filesystem(image)
    info = fs.info(path)
    return int(info["size"]), str(info.get("ETag") or info.get("LastModified"))


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary name and rename, so a concurrent reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(scratch, path)
    finally:
        if os.path.exists(scratch):
            os.unlink(scratch)
