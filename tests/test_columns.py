"""Writing a version's columns: what a build saves, and the memory it takes to save it."""

from __future__ import annotations

import tracemalloc
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from recommender import columns
from recommender.index import TopicIndex
from recommender.ranking import Eligibility, Filters
from recommender.store.items import Item, Status, Summary

DIM = 30


def vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).gamma(0.3, size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def summaries(ids: Sequence[str]) -> list[Summary | None]:
    """A summary for every id but those ending in 7 (never eligible); every third a sale in a window."""
    out: list[Summary | None] = []
    for i in ids:
        n = int(i.removeprefix("item-"))
        item = Item(id=i, title=f"Item {n}", kind="sale" if n % 3 == 0 else "product", category=f"cat-{n % 5}",
                    status=Status.INDEXED, starts_at="2020-01-01T00:00:00Z" if n % 3 == 0 else None,
                    ends_at="2030-01-01T00:00:00Z" if n % 3 == 0 else None)
        out.append(None if n % 10 == 7 else Summary.of(item))
    return out


def test_a_built_index_saves_the_columns_an_upserted_one_does(tmp_path: Path) -> None:
    """``TopicIndex.built`` (a build: arrays only) and ``upsert`` (an id overlay) write the same version."""
    n = 12_345
    nums = np.random.default_rng(1).permutation(np.arange(1, n + 1))  # in no order, as a reindex reads them
    ids = [f"item-{x}" for x in nums.tolist()]
    raw = vectors(n) * 3.0  # not unit: both normalise
    upserted = TopicIndex(DIM)
    upserted.upsert(nums, ids, raw)
    for name, index in (("upserted", upserted), ("built", TopicIndex.built(nums, ids, raw))):
        (tmp_path / name).mkdir()
        index.save(tmp_path / name, summaries)
    files = sorted(p.name for p in (tmp_path / "upserted").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "built").iterdir())
    for name in files:
        a, b = (np.load(tmp_path / d / name) if name.endswith(".npy") else (tmp_path / d / name).read_bytes()
                for d in ("upserted", "built"))
        np.testing.assert_array_equal(a, b, err_msg=name)

    loaded = TopicIndex.load(tmp_path / "built")
    assert len(loaded) == n and loaded.nums["item-42"] == 42 and loaded.ids[9] == "item-9"
    np.testing.assert_allclose(np.linalg.norm(loaded.vectors[1:n + 1], axis=1), 1.0, atol=1e-6)
    assert not loaded.vectors[n + 1:].any()  # the headroom past the last number
    eligibility = Eligibility.load(tmp_path / "built")
    sales = np.flatnonzero(eligibility.mask(Filters(kind="sale")))
    assert sales.tolist() == [x for x in range(1, n + 1) if x % 3 == 0 and x % 10 != 7]


def test_writing_a_version_holds_no_record_per_item(tmp_path: Path) -> None:
    """Memory while a version is saved grows with its arrays (about 0.2 kB an item here), not with a Python object
    per item: holding every summary record took 4 kB an item, which is what killed a 5M-item build."""
    peaks = {}
    for n in (10_000, 40_000):
        nums = np.arange(1, n + 1)
        index = TopicIndex.built(nums, [f"item-{x}" for x in nums.tolist()], vectors(n))
        (tmp_path / str(n)).mkdir()
        tracemalloc.start()
        index.save(tmp_path / str(n), summaries)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    per_item = (peaks[40_000] - peaks[10_000]) / 30_000
    assert per_item < 1000, f"{per_item:.0f} B an item while saving"


@pytest.mark.parametrize("rows", [0, 1, 70_000])
def test_a_column_written_in_chunks_reads_back_whole(tmp_path: Path, rows: int) -> None:
    data = np.random.default_rng(2).integers(0, 255, rows, dtype=np.uint8)
    with columns.appended(tmp_path, "c.npy", np.dtype(np.uint8)) as write:
        for start in range(0, rows, 30_000):
            write(data[start:start + 30_000])
    np.testing.assert_array_equal(columns.load(tmp_path, "c.npy"), data)
