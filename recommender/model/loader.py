"""The GPU fast path's data loader: batches of crops decoded on the device, ready before the model asks.

Three stages overlap. A thread pool reads files, checks JPEG headers against
the byte and pixel limits, and decodes with Pillow whatever nvJPEG should not
take. One producer thread decodes and crops each batch on the device, on a
CUDA stream of its own (nvJPEG blocks its calling thread). The caller's thread
runs the model. ``READY_BATCHES`` decoded batches wait in a queue, so the
device never waits for the host while photos keep coming.

It runs on any device; the tests drive it on the CPU, where it is correct but
no faster than the reference path.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np
import torch

from recommender.model.images import Jpeg, crops_on_device, jpeg_or_crop
from recommender.model.prefetch import prefetch
from recommender.photos import ImageError, Source

K = TypeVar("K")
#: Decoded batches queued ahead of the model: one being filled while one waits is enough.
READY_BATCHES = 2
_END = object()


@dataclass
class DeviceBatch(Generic[K]):
    """Crops on the device (uint8 NCHW, channels_last) and the photos that failed while it was gathered."""

    keys: list[K]
    pixels: torch.Tensor | None
    failed: list[tuple[K, ImageError]] = field(default_factory=list)
    ready: torch.cuda.Event | None = None

    def wait(self) -> torch.Tensor:
        """The pixels, safe to use on the caller's current stream."""
        assert self.pixels is not None
        if self.ready is not None:
            stream = torch.cuda.current_stream(self.pixels.device)
            stream.wait_event(self.ready)
            self.pixels.record_stream(stream)  # the producer's stream allocated it
        return self.pixels


def device_batches(
    sources: Iterable[tuple[K, Source]], device: torch.device, batch_size: int, max_pixels: int, max_bytes: int,
    workers: int,
) -> Iterator[DeviceBatch[K]]:
    """Batches of ``batch_size`` decoded crops (the last one shorter), in order; failures ride along."""
    results: queue.Queue[Any] = queue.Queue(maxsize=READY_BATCHES)
    stop = threading.Event()
    producer = threading.Thread(
        target=_produce, name="device-decode", daemon=True,
        args=(sources, device, batch_size, max_pixels, max_bytes, workers, results, stop),
    )
    producer.start()
    try:
        while (item := results.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        while producer.is_alive():
            try:
                results.get_nowait()
            except queue.Empty:
                producer.join(0.05)


def _produce(
    sources: Iterable[tuple[K, Source]], device: torch.device, batch_size: int, max_pixels: int, max_bytes: int,
    workers: int, results: queue.Queue[Any], stop: threading.Event,
) -> None:
    try:
        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        context: AbstractContextManager[Any] = torch.cuda.stream(stream) if stream is not None else nullcontext()
        with context:
            loaded = prefetch(sources, lambda s: jpeg_or_crop(s, max_pixels, max_bytes), workers, 2 * batch_size)
            pending: list[tuple[K, Jpeg | np.ndarray]] = []
            failed: list[tuple[K, ImageError]] = []
            for key, item in loaded:
                if isinstance(item, ImageError):
                    failed.append((key, item))
                else:
                    pending.append((key, item))
                if len(pending) == batch_size:
                    if not _put(results, _assemble(pending, failed, device, stream, max_pixels, max_bytes), stop):
                        return
                    pending, failed = [], []
            if (pending or failed) and not _put(
                results, _assemble(pending, failed, device, stream, max_pixels, max_bytes), stop
            ):
                return
        _put(results, _END, stop)
    except Exception as exc:  # noqa: BLE001 - handed to the consumer, which raises it in its own thread
        _put(results, exc, stop)


def _put(results: queue.Queue[Any], item: object, stop: threading.Event) -> bool:
    """Queue ``item`` unless the consumer has gone; False when it has."""
    while not stop.is_set():
        try:
            results.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _assemble(
    pending: list[tuple[K, Jpeg | np.ndarray]], failed: list[tuple[K, ImageError]], device: torch.device,
    stream: torch.cuda.Stream | None, max_pixels: int, max_bytes: int,
) -> DeviceBatch[K]:
    """Decode the JPEGs on the device, upload the Pillow crops through pinned memory, stack both in order."""
    jpegs = [item for _, item in pending if isinstance(item, Jpeg)]
    on_device = iter(crops_on_device(jpegs, device, max_pixels, max_bytes) if jpegs else [])
    host = [item for _, item in pending if not isinstance(item, Jpeg)]
    uploaded = iter(_upload(host, device) if host else [])
    keys: list[K] = []
    crops: list[torch.Tensor] = []
    for key, item in pending:
        crop = next(on_device) if isinstance(item, Jpeg) else next(uploaded)
        if isinstance(crop, ImageError):
            failed.append((key, crop))
        else:
            keys.append(key)
            crops.append(crop.permute(1, 2, 0))
    pixels = torch.stack(crops).permute(0, 3, 1, 2) if crops else None  # NHWC memory = channels_last NCHW
    ready = None
    if stream is not None:
        ready = torch.cuda.Event()
        ready.record(stream)
    return DeviceBatch(keys, pixels, failed, ready)


def _upload(crops: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """HxWx3 crops to 3xHxW on the device: one pinned host buffer, one non-blocking copy."""
    batch = torch.from_numpy(np.stack(crops))
    if device.type == "cuda":
        batch = batch.pin_memory().to(device, non_blocking=True)
    return batch.permute(0, 3, 1, 2)
