"""`vistas export`: the backbone and the custom heads exported for the CPU runtimes, ahead of time."""

from __future__ import annotations

import click

from recommender.settings import Settings


@click.command("export")
@click.pass_obj
def command(settings: Settings) -> None:
    """Export the backbone (to VISTAS_RUNTIME_DIR, default DATA_DIR/runtime/) and every saved head (beside
    it, under DATA_DIR/heads/) to ONNX; needs torch.

    API processes answer query by photo on OpenVINO or ONNX Runtime from these
    files and never import torch, so they cannot export themselves. ingest,
    worker, reindex and demo export whatever is missing when they start; run
    this after train-head, or to prepare a data directory for an API image
    without torch. An export is keyed by its weights file's sha256 and made once.
    """
    from recommender.model.onnx_export import export_all

    for path in export_all(settings):
        click.echo(str(path))
