"""Export the backbone and the custom heads to ONNX, once per weights file (needs torch).

The compiled CPU runtimes (:mod:`recommender.model.runtime`) load these files
without torch. Each export is keyed by the sha256 of its source file
(:mod:`recommender.model.exported`), written to a temporary name and renamed
into place, so concurrent indexers never see half a file and an existing
export is reused as is. Nothing is downloaded: the weights are the local ones
the torch reference loads.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn

from recommender.model.backbone import Backbone, load_backbone
from recommender.model.exported import backbone_export, head_export, publish_heads, saved_heads
from recommender.model.heads import Head
from recommender.photos import CROP_SIZE
from recommender.settings import Settings

log = logging.getLogger(__name__)
OPSET = 17


class _NhwcBackbone(nn.Module):
    """The backbone taking the decoder's uint8 NHWC crops as they are; the runtime fuses the transpose."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.backbone(crops.permute(0, 3, 1, 2))


class _HeadProbabilities(nn.Module):
    def __init__(self, head: Head):
        super().__init__()
        self.net = head.model.net

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).softmax(dim=1)


def export_all(settings: Settings) -> list[Path]:
    """The backbone's and every saved head's exports, made where missing."""
    paths = [export_backbone(settings)]
    paths += [export_head(directory) for directory in saved_heads(settings.data_dir)]
    publish_heads(settings)
    return paths


def export_backbone(settings: Settings) -> Path:
    """The configured backbone's ONNX file, exported now unless it exists."""
    target = backbone_export(settings)
    if not target.exists():
        model = _NhwcBackbone(load_backbone(settings.backbone, settings.backbone_weights).eval())
        example = torch.zeros(1, CROP_SIZE, CROP_SIZE, 3, dtype=torch.uint8)
        _export(model, example, "crops", ["features", "probabilities"], target)
    return target


def export_head(directory: Path) -> Path:
    """The ONNX file of the head saved in ``directory``, exported now unless it exists (older ones removed)."""
    target = head_export(directory)
    if not target.exists():
        head = Head.load(directory)
        example = torch.zeros(1, head.model.feature_dim)
        _export(_HeadProbabilities(head).eval(), example, "features", ["probabilities"], target)
        for stale in directory.glob("head-*.onnx"):
            if stale != target:
                stale.unlink(missing_ok=True)
    return target


def _export(model: nn.Module, example: torch.Tensor, input_name: str, outputs: list[str], target: Path) -> None:
    """ONNX with a dynamic batch dimension, written atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}-", suffix=".tmp")
    os.close(fd)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter narrates its constant folding
            torch.onnx.export(
                model, (example,), tmp, input_names=[input_name], output_names=outputs,
                dynamic_axes={name: {0: "batch"} for name in [input_name, *outputs]}, opset_version=OPSET,
                dynamo=False,
            )
        os.chmod(tmp, 0o644)  # API processes may run as another user
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    log.info("exported %s", target)
