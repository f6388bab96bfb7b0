"""Tagging: top-5 labels, custom heads' labels and pooled last-layer features per photo.

The backbone runs on the runtime :func:`recommender.model.runtime.choose_runtime`
picks: a compiled CPU runtime (OpenVINO or ONNX Runtime, no torch) or torch
(the reference, and the CUDA fast path of :mod:`recommender.model.backbone`).
This module imports torch only when torch runs, so an API process answering
query by photo never loads it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from recommender.model.exported import fetch_heads, missing_exports
from recommender.model.prefetch import prefetch_crops
from recommender.model.runtime import CompiledBackbone, choose_runtime, compiled_heads, thread_split
from recommender.model.vocabulary import imagenet_labels
from recommender.photos import ImageError, Source
from recommender.settings import Settings

if TYPE_CHECKING:
    from recommender.model.backbone import TorchBackbone

log = logging.getLogger(__name__)
K = TypeVar("K")
#: A custom head's label becomes a tag only at or above this probability.
HEAD_MIN_PROBABILITY = 0.3


@dataclass(frozen=True)
class Tagging:
    """What the backbone says about one photo: its top-5 labels, then custom heads' labels."""

    labels: list[tuple[str, float]]
    features: np.ndarray  # float32, pooled last layer


class LabelSource(Protocol):
    """A custom head, torch or compiled."""

    name: str
    labels: list[str]

    def probabilities(self, features: np.ndarray) -> np.ndarray: ...


class Tagger:
    """Batched tagging on the chosen runtime, decoding overlapped on a thread pool."""

    def __init__(self, settings: Settings, with_heads: bool = True, serving: bool = False):
        """``with_heads=False`` leaves out the custom heads under the data dir (backbone labels only).

        ``serving``: an API process. It takes the compiled CPU runtime unless
        VISTAS_RUNTIME names another, and never exports (that needs torch): a
        missing export raises MissingExport. Elsewhere missing exports are made.
        """
        self.settings = settings
        self.runtime = choose_runtime(settings, serving=serving)
        self.threads, self.decode_threads = thread_split(settings)
        self.labels: tuple[str, ...] = imagenet_labels()
        self.engine: TorchBackbone | CompiledBackbone
        self.heads: list[LabelSource] = []
        if with_heads:
            fetch_heads(settings)
        if self.runtime == "torch":
            from recommender.model.backbone import TorchBackbone
            from recommender.model.heads import load_heads

            self.engine = TorchBackbone(settings, self.threads)
            self.heads = list(load_heads(settings.data_dir)) if with_heads else []
        else:
            if not serving and missing_exports(settings, with_heads):
                from recommender.model.onnx_export import export_all

                export_all(settings)
            self.engine = CompiledBackbone(settings, self.runtime, self.threads)
            self.heads = list(compiled_heads(settings.data_dir, self.runtime)) if with_heads else []
        if self.engine.classes != len(self.labels):
            raise ValueError(f"backbone has {self.engine.classes} classes; only ImageNet-1k (1000) is supported")
        self.batch_size = settings.batch_size
        log.info("tagger: %s on %s (%s, %d threads + %d decoding), batch %d, custom heads: %s", settings.backbone,
                 self.device, self.runtime, self.threads, self.decode_threads, self.batch_size,
                 ", ".join(h.name for h in self.heads) or "none")

    @property
    def device(self) -> str:
        """"cpu" or "cuda"."""
        device = self.engine.device
        return device if isinstance(device, str) else device.type

    @property
    def feature_dim(self) -> int:
        return self.engine.feature_dim

    def forward(self, pixels: Any) -> Any:
        """uint8 NCHW pixels on the device -> (features, probabilities): torch only (GPU benchmarks)."""
        return self._torch().forward(pixels)

    def tag_arrays(self, crops: np.ndarray) -> list[Tagging]:
        """Tag a batch of uint8 NHWC crops."""
        return self._taggings(*self.engine.infer(crops))

    def _taggings(self, features: np.ndarray, top_p: np.ndarray, top_i: np.ndarray) -> list[Tagging]:
        head_tags = self._head_tags(features)
        return [
            Tagging([(self.labels[i], round(float(p), 4)) for p, i in zip(ps.tolist(), idx.tolist())] + extra, feats)
            for ps, idx, feats, extra in zip(top_p, top_i, features, head_tags)
        ]

    def _head_tags(self, features: np.ndarray) -> list[list[tuple[str, float]]]:
        """Each custom head's best label per photo, when it is confident enough."""
        out: list[list[tuple[str, float]]] = [[] for _ in range(len(features))]
        for head in self.heads:
            probabilities = head.probabilities(features)
            best = zip(probabilities.max(axis=1).tolist(), probabilities.argmax(axis=1).tolist())
            for row, (p, i) in enumerate(best):
                if p >= HEAD_MIN_PROBABILITY:
                    out[row].append((head.labels[i], round(p, 4)))
        return out

    def tag(
        self, sources: Iterable[tuple[K, Source]], on_done: Callable[[int], None] | None = None
    ) -> Iterator[tuple[K, Tagging | ImageError]]:
        """Tag photos; unreadable ones yield their ImageError instead of stopping the batch.

        Results come batch by batch, failures first; key them, do not count on input order.
        """
        if self.device == "cuda":
            return self.tag_on_device(sources, on_done)
        return self._tag_on_host(sources, on_done)

    def tag_on_device(
        self, sources: Iterable[tuple[K, Source]], on_done: Callable[[int], None] | None = None
    ) -> Iterator[tuple[K, Tagging | ImageError]]:
        """The torch fast path: JPEGs decoded and cropped on the tagger's device, batches prepared ahead."""
        engine = self._torch()
        for batch in engine.batches(sources, self.batch_size, self.settings.max_image_pixels,
                                    self.settings.max_image_bytes):
            yield from batch.failed
            if batch.keys:
                yield from zip(batch.keys, self._taggings(*engine.infer_pixels(batch.wait())))
            if on_done:
                on_done(len(batch.failed) + len(batch.keys))

    def _torch(self) -> TorchBackbone:
        from recommender.model.backbone import TorchBackbone

        if not isinstance(self.engine, TorchBackbone):
            raise TypeError(f"this tagger runs {self.runtime}, not torch (VISTAS_RUNTIME=torch)")
        return self.engine

    def _tag_on_host(
        self, sources: Iterable[tuple[K, Source]], on_done: Callable[[int], None] | None
    ) -> Iterator[tuple[K, Tagging | ImageError]]:
        crops = prefetch_crops(
            sources, self.settings.max_image_pixels, self.settings.max_image_bytes, workers=self.decode_threads,
            ahead=self.batch_size * 4,
        )
        batch: list[tuple[K, np.ndarray]] = []
        for key, crop in crops:
            if isinstance(crop, ImageError):
                yield key, crop
                if on_done:
                    on_done(1)
                continue
            batch.append((key, crop))
            if len(batch) == self.batch_size:
                yield from self._flush(batch, on_done)
        if batch:
            yield from self._flush(batch, on_done)

    def _flush(
        self, batch: list[tuple[K, np.ndarray]], on_done: Callable[[int], None] | None
    ) -> Iterator[tuple[K, Tagging]]:
        taggings = self.tag_arrays(np.stack([crop for _, crop in batch]))
        keys = [key for key, _ in batch]
        batch.clear()
        if on_done:
            on_done(len(keys))
        yield from zip(keys, taggings)
