"""Photos decoded on a thread pool ahead of the model, in order, with bounded memory (no torch).

Decoding is :mod:`recommender.photos`, the one safe decoder; this module only
schedules it, so that the CPU runtimes and torch both overlap it with the
forward pass.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from recommender.photos import ImageError, Source, load_crop

K = TypeVar("K")
T = TypeVar("T")


def prefetch_crops(
    sources: Iterable[tuple[K, Source]], max_pixels: int, max_bytes: int, workers: int = 2, ahead: int = 64
) -> Iterator[tuple[K, np.ndarray | ImageError]]:
    """Decode photos on a thread pool, in order, at most ``ahead`` in flight.

    Pillow releases the GIL while decoding and resizing, so this overlaps with
    the forward pass running in the caller's thread.
    """
    return prefetch(sources, lambda source: load_crop(source, max_pixels, max_bytes), workers, ahead)


def prefetch(
    sources: Iterable[tuple[K, Source]], load: Callable[[Source], T], workers: int, ahead: int
) -> Iterator[tuple[K, T | ImageError]]:
    """``load`` each source on a thread pool, results in order, at most ``ahead`` in flight."""
    pending: deque[tuple[K, Future[T]]] = deque()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        for key, source in sources:
            pending.append((key, pool.submit(load, source)))
            if len(pending) >= ahead:
                yield _result(*pending.popleft())
        while pending:
            yield _result(*pending.popleft())


def _result(key: K, future: Future[T]) -> tuple[K, T | ImageError]:
    try:
        return key, future.result()
    except ImageError as exc:
        return key, exc
