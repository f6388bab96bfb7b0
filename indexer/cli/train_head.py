"""`vistas train-head DATASET --name NAME`: learn your own labels from stored features."""

from __future__ import annotations

import json
from pathlib import Path

import click
from tqdm import tqdm

from indexer.cli.common import open_store
from indexer.datasets import labelled_features, read_labelled
from indexer.heads import train_head
from indexer.manifest import ManifestError
from recommender.model.exported import heads_dir, publish_heads
from recommender.model.onnx_export import export_head
from recommender.model.vocabulary import DISPLAY_NAMES_FILE, default_display_names
from recommender.settings import Settings


@click.command("train-head")
@click.argument("dataset", type=click.Path(exists=True, path_type=Path))
@click.option("--name", required=True, help="Head name; its labels become tags (saved under DATA_DIR/heads/NAME).")
@click.option("--label-column", default="label", show_default=True, help="CSV column holding the labels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split and the training.")
@click.pass_obj
def command(settings: Settings, dataset: Path, name: str, label_column: str, seed: int) -> None:
    """Learn custom labels (your taxonomy) from DATASET: a folder of label sub-folders, or a CSV image,label.

    Uses the stored features of photos already indexed (no second forward
    pass) and tags the others. Trains a 2-layer head (hidden layer, dropout,
    class weights, early stopping), prints its held-out accuracy beside a
    logistic regression's, and saves it: the tagger applies it from then on,
    and the next reindex folds its labels into the topics.
    """
    if not name.replace("-", "").replace("_", "").isalnum():
        raise click.BadParameter("use letters, digits, - and _", param_hint="--name")
    try:
        pairs = read_labelled(dataset, label_column)
    except ManifestError as exc:
        raise click.ClickException(str(exc)) from None
    data = labelled_features(settings, open_store(settings), pairs)
    click.echo(f"{data.stored} photos have stored features, {data.tagged} need tagging")
    for path, reason in data.skipped:
        click.echo(f"  skipped {path}: {reason}", err=True)
    try:
        with tqdm(desc="training", unit="epoch") as bar:
            head, report = train_head(name, data.features, data.labels, seed=seed, on_epoch=lambda *_: bar.update())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    directory = heads_dir(settings.data_dir) / name
    head.save(directory, report)
    names = directory / DISPLAY_NAMES_FILE
    if not names.exists():  # retraining keeps the names someone edited
        names.write_text(json.dumps(default_display_names(head.labels), indent=1))
    export_head(directory)  # for the CPU runtimes and the API
    publish_heads(settings)
    click.echo(
        f"head {name}: {report.labels} labels, {report.train_size} training / {report.heldout_size} held-out photos\n"
        f"  held-out accuracy       {report.heldout_accuracy:.3f}   (top-5 {report.heldout_top5_accuracy:.3f})\n"
        f"  logistic regression     {report.logistic_regression_accuracy:.3f}   (same features, same split)\n"
        f"saved to {directory}; reindex (or re-ingest) to use its tags in topics\n"
        f"  topic names show its labels as {names} says: edit it to rename them"
    )

