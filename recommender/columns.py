"""Per-item columns of an index version: written once by the build, memory-mapped by every API process.

A version's per-item serving data (vectors, the id maps, filter fields, result summaries) is a
handful of numpy ``.npy`` files rather than Python objects built per item: ``np.load(mmap_mode="c")``
maps a file in microseconds whatever its size, every gunicorn worker on a host shares the
pages through the page cache, and a page a process writes (an item changed since the build)
becomes private to that process alone, while the file stays as the build wrote it. Arrow IPC
would map the same way, but it is another large dependency for what two numpy arrays (offsets and
bytes) already do for variable-length strings.

Arrays indexed by numeric id are written with headroom past the largest number (``capacity``),
so the items indexed after the build patch mapped pages in place; only a catalog that grew by
more than that since its version copies a column into memory (the next version maps again).

What changed since the build lives in small overlays in front of the columns: ``ItemIds.added``
and ``ItemIds.gone`` for the id maps, ``SummaryTable.stale`` and ``SummaryTable.fetched`` for summaries.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from recommender.store.items import Summary

#: Rows past the largest numeric id that a version's by-number columns are written with, at least.
HEADROOM_MIN = 4096
#: And at least this share of the rows: the items a catalog may gain before its next version.
HEADROOM_SHARE = 0.25
#: Summaries fetched from Redis (items changed since the build) each API process keeps, about 1 kB each.
FETCHED_SUMMARIES = 50_000
#: Ids found in the sorted column that each process remembers, about 100 B each: a recommendation looks up a
#: user's history and the popular items, hundreds of ids, and a dict hit is 20-50 times cheaper than a search.
REMEMBERED_IDS = 100_000

VECTORS = "vectors.npy"  # by numeric id: the L2-normalised topic vector, zero for none
NEIGHBOURS = "neighbours.npy"  # by numeric id: its nearest items at the build, best first, -1 past the last (flat)
IDS = "ids.npy"  # item ids, fixed-width bytes, sorted
ID_NUMS = "id_nums.npy"  # the numeric id of each row of ids.npy
ID_ROWS = "id_rows.npy"  # by numeric id: its row in ids.npy, -1 for none
SUMMARIES = "summaries.npy"  # every item's summary record (JSON), concatenated bytes
SUMMARY_OFFSETS = "summary_offsets.npy"  # by numeric id: where its record starts; the next entry, where it ends


def capacity(top: int) -> int:
    """Rows a by-number column is written with when the largest numeric id is ``top``."""
    return top + 1 + max(HEADROOM_MIN, int(top * HEADROOM_SHARE))


def save(directory: Path, name: str, array: np.ndarray) -> None:
    np.save(directory / name, np.ascontiguousarray(array), allow_pickle=False)


@contextmanager
def appended(directory: Path, name: str, dtype: np.dtype) -> Iterator[Callable[[np.ndarray], None]]:
    """A 1-D column written a chunk at a time (``write(chunk)``), for one too large to hold whole.

    The ``.npy`` header, which states the length, is written last over a placeholder of the same
    size: a header is padded to 64 bytes, so any length up to ``_MOST_ROWS`` takes the same room.
    """
    def header(rows: int) -> bytes:
        out = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            out, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (rows,)})
        return out.getvalue()

    rows = 0
    with open(directory / name, "wb") as f:
        f.write(header(_MOST_ROWS))

        def write(chunk: np.ndarray) -> None:
            nonlocal rows
            f.write(np.ascontiguousarray(chunk, dtype=dtype).tobytes())
            rows += len(chunk)

        yield write
        final = header(rows)
        assert len(final) == len(header(_MOST_ROWS)), "a .npy header grew with the column's length"
        f.seek(0)
        f.write(final)


#: The longest column ``appended`` writes: any longer would need a longer header than its placeholder.
_MOST_ROWS = 10**15


def load(directory: Path, name: str) -> np.ndarray:
    """The column mapped copy-on-write: shared with every process mapping it until this one writes a page."""
    return np.asarray(np.load(directory / name, mmap_mode="c", allow_pickle=False))


def padded(array: np.ndarray, rows: int, fill: object) -> np.ndarray:
    """``array`` cut or extended to ``rows`` rows, new ones set to ``fill``."""
    out = np.full((rows, *array.shape[1:]), fill, dtype=array.dtype)
    n = min(rows, len(array))
    out[:n] = array[:n]
    return out


class ItemIds:
    """Item id <-> numeric id: sorted mapped columns from the build, and the changes since in dicts.

    Invariant: a number is served by the columns unless it is in ``gone`` (removed, or set again
    since the build: then ``added`` holds it). ``ids`` (number -> id) and ``nums`` (id -> number)
    are read-only mappings over both; an id is found in the columns by binary search.
    """

    def __init__(self, ids: np.ndarray, nums: np.ndarray, rows: np.ndarray):
        self._ids, self._nums, self._rows = ids, nums, rows
        self.added: dict[int, str] = {}
        self._added_nums: dict[str, int] = {}
        self.gone: set[int] = set()
        self._remembered: dict[str, int] = {}  # id -> base_num, -1 for none (the columns never change)
        self.ids: Mapping[int, str] = _IdsByNum(self)
        self.nums: Mapping[str, int] = _NumsById(self)

    @classmethod
    def empty(cls) -> "ItemIds":
        return cls(np.zeros(0, dtype="S1"), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))

    @classmethod
    def load(cls, directory: Path) -> "ItemIds":
        return cls(load(directory, IDS), load(directory, ID_NUMS), load(directory, ID_ROWS))

    @classmethod
    def of(cls, nums: np.ndarray, ids: Sequence[str]) -> "ItemIds":
        """The columns of these items (distinct ids), built in memory as a build saves them: no dict entry per item."""
        nums = np.asarray(nums, dtype=np.int64)
        if not len(nums):
            return cls.empty()
        keys = np.array([i.encode() for i in ids], dtype="S")
        order = np.argsort(keys, kind="stable")
        rows = np.full(int(nums.max()) + 1, -1, dtype=np.int64)
        rows[nums[order]] = np.arange(len(order))
        return cls(keys[order], nums[order], rows)

    def save(self, directory: Path) -> None:
        table = self
        if self.added or self.gone:
            nums = np.fromiter(self.ids, dtype=np.int64, count=len(self))
            table = ItemIds.of(nums, [self.ids[n] for n in nums.tolist()])
        save(directory, IDS, table._ids)
        save(directory, ID_NUMS, table._nums)
        save(directory, ID_ROWS, table._rows)

    def base_id(self, num: int) -> str | None:
        """The id the columns give ``num`` (changes since the build aside)."""
        row = int(self._rows[num]) if 0 <= num < len(self._rows) else -1
        return self._ids[row].decode() if row >= 0 else None

    def ids_of(self, nums: Sequence[int]) -> list[str | None]:
        """``ids.get`` of each number: the columns read for them all at once, then the overlay."""
        wanted = np.asarray(nums, dtype=np.int64)
        inside = (wanted >= 0) & (wanted < len(self._rows))
        rows = np.where(inside, self._rows[np.where(inside, wanted, 0)], -1)
        found = [None if r < 0 else b.decode() for r, b in zip(rows.tolist(), self._ids[rows].tolist())]
        if not self.added and not self.gone:
            return found
        return [self.added[n] if n in self.added else None if n in self.gone else i for n, i in zip(nums, found)]

    def base_num(self, item_id: str) -> int | None:
        """The number the columns give ``item_id`` (changes since the build aside)."""
        num = self._remembered.get(item_id)
        if num is None:
            key = item_id.encode()
            row = int(np.searchsorted(self._ids, key))
            num = int(self._nums[row]) if row < len(self._ids) and self._ids[row] == key else -1
            if len(self._remembered) >= REMEMBERED_IDS:
                self._remembered.clear()
            self._remembered[item_id] = num
        return num if num >= 0 else None

    def base_nums_of(self, item_ids: Sequence[str]) -> list[int | None]:
        """``base_num`` of each id, in one binary search of the sorted column for them all."""
        if not item_ids or not len(self._ids):
            return [None] * len(item_ids)
        keys = np.array([i.encode() for i in item_ids], dtype="S")
        rows = np.minimum(np.searchsorted(self._ids, keys), len(self._ids) - 1)
        hit = self._ids[rows] == keys
        return [int(n) if h else None for n, h in zip(self._nums[rows].tolist(), hit.tolist())]

    def base_nums(self) -> np.ndarray:
        return np.flatnonzero(self._rows >= 0)

    def __len__(self) -> int:
        return len(self._ids) - len(self.gone) + len(self.added)

    def set(self, num: int, item_id: str) -> None:
        """``num`` is ``item_id``'s; the overlay grows only when that differs from the columns."""
        current = self.ids.get(num)
        if current == item_id:
            return
        if current is None and num in self.gone and num not in self.added and self.base_id(num) == item_id:
            self.gone.discard(num)  # back as the build had it
            return
        old = self.nums.get(item_id)
        if old is not None and old != num:
            self.remove(old)
        self.remove(num)
        self.added[num] = item_id
        self._added_nums[item_id] = num

    def remove(self, num: int) -> str | None:
        """Forget ``num``; the id it had, if any."""
        item_id = self.ids.get(num)
        if item_id is None:
            return None
        if self.added.pop(num, None) is not None:
            self._added_nums.pop(item_id, None)
        if self.base_id(num) is not None:
            self.gone.add(num)
        return item_id


class _IdsByNum(Mapping[int, str]):
    def __init__(self, table: ItemIds):
        self._t = table

    def get(self, num: int, default: str | None = None) -> str | None:  # type: ignore[override]
        t = self._t
        found = t.added.get(num)
        if found is None and num not in t.gone:
            found = t.base_id(num)
        return default if found is None else found

    def __getitem__(self, num: int) -> str:
        found = self.get(num)
        if found is None:
            raise KeyError(num)
        return found

    def __contains__(self, num: object) -> bool:
        return isinstance(num, (int, np.integer)) and self.get(int(num)) is not None

    def __iter__(self) -> Iterator[int]:
        gone = self._t.gone
        yield from (n for n in self._t.base_nums().tolist() if n not in gone)
        yield from list(self._t.added)

    def __len__(self) -> int:
        return len(self._t)


class _NumsById(Mapping[str, int]):
    def __init__(self, table: ItemIds):
        self._t = table

    def get(self, item_id: str, default: int | None = None) -> int | None:  # type: ignore[override]
        t = self._t
        found = t._added_nums.get(item_id)
        if found is None:
            found = t.base_num(item_id)
            if found is not None and found in t.gone:
                found = None
        return default if found is None else found

    def __getitem__(self, item_id: str) -> int:
        found = self.get(item_id)
        if found is None:
            raise KeyError(item_id)
        return found

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and self.get(item_id) is not None

    def __iter__(self) -> Iterator[str]:
        ids = self._t.ids
        return (ids[n] for n in ids)

    def __len__(self) -> int:
        return len(self._t)


class SummaryTable:
    """What result lists show of a version's items: mapped records, in front of them what changed since.

    Invariant: an id in ``stale`` (a change arrived for it), and every id once ``trusted`` is False
    (changes were lost), is never answered from the columns; its summary is fetched from Redis on
    first use and kept in ``fetched`` (up to ``FETCHED_SUMMARIES``), as are the items the version lacks.
    """

    def __init__(self, data: np.ndarray, offsets: np.ndarray):
        self._data, self._offsets = memoryview(data), offsets
        self._offsets_view = memoryview(offsets)  # its items are Python ints, read 3 times faster than numpy's
        self.trusted = True
        self.stale: set[str] = set()
        self.fetched: dict[str, Summary] = {}

    @staticmethod
    @contextmanager
    def writing(directory: Path, top: int) -> Iterator[Callable[[np.ndarray, Sequence[Summary | None]], None]]:
        """``add(nums, summaries)``, chunk after chunk in ascending number order, for items numbered up to ``top``.

        Records go to the file as they come: holding a 5M-item build's took 4 kB an item, because each
        output of ``orjson.dumps`` keeps its 4 kB buffer (28 MB of records held 824 MB at 200k items).
        """
        lengths = np.zeros(top + 2, dtype=np.int64)
        after = -1
        with appended(directory, SUMMARIES, np.dtype(np.uint8)) as write:
            def add(nums: np.ndarray, summaries: Sequence[Summary | None]) -> None:
                nonlocal after
                nums = np.asarray(nums, dtype=np.int64)
                if not len(nums):
                    return
                assert nums[0] > after and np.all(np.diff(nums) > 0), "records lie in the order of their numbers"
                records = [s.record() if s is not None else b"" for s in summaries]
                lengths[nums + 1] = [len(r) for r in records]
                write(np.frombuffer(b"".join(records), dtype=np.uint8))
                after = int(nums[-1])

            yield add
        save(directory, SUMMARY_OFFSETS, np.cumsum(lengths))

    @classmethod
    def load(cls, directory: Path) -> "SummaryTable":
        return cls(load(directory, SUMMARIES), load(directory, SUMMARY_OFFSETS))

    def base(self, item_ids: Sequence[str], nums: Sequence[int | None]) -> list[Summary | None]:
        """What the build wrote of each item (numbered ``nums``), changes since aside."""
        return [self._record(item_id, num) for item_id, num in zip(item_ids, nums)]

    def _record(self, item_id: str, num: int | None) -> Summary | None:
        if num is None or not 0 <= num < len(self._offsets_view) - 1:
            return None
        start, end = self._offsets_view[num], self._offsets_view[num + 1]
        return Summary.from_record(item_id, self._data[start:end]) if end > start else None

    def forget(self, item_id: str) -> None:
        """A change arrived for ``item_id``: what the build wrote of it no longer holds."""
        self.stale.add(item_id)
        self.fetched.pop(item_id, None)

    def forget_all(self) -> None:
        """Changes were trimmed away before they were applied: any item may have changed since the build."""
        self.trusted = False
        self.fetched.clear()

    def get_many(self, item_ids: Sequence[str], nums: Sequence[int | None],
                 fetch: Callable[[list[str]], list[Summary | None]]) -> list[Summary | None]:
        """Each item's summary: fetched since, else the build's (``nums``: each id's number in the columns), else
        from ``fetch``. One pass over the items: this is every answer's hydration (``similar`` at 1M items)."""
        fetched, stale, trusted, record = self.fetched, self.stale, self.trusted, self._record
        found: list[Summary | None] = []
        for item_id, num in zip(item_ids, nums):
            summary = fetched.get(item_id)
            if summary is None and trusted and item_id not in stale:
                summary = record(item_id, num)
            found.append(summary)
        missing = [i for i, s in zip(item_ids, found) if s is None]
        if not missing:
            return found
        more = dict(zip(missing, fetch(missing)))
        for item_id, summary in more.items():
            if summary is not None and len(fetched) < FETCHED_SUMMARIES:
                fetched[item_id] = summary
        return [s if s is not None else more.get(i) for i, s in zip(item_ids, found)]
