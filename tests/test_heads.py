"""Custom label heads on stored features, and `vistas eval` choosing the serving representation."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from indexer.heads import train_head
from recommender.model.heads import Head, heads_dir, load_heads
from recommender.model.tagger import Tagger
from recommender.settings import Settings
from recommender.store import Store
from tests.conftest import DEMO, sample_rows

from tests.helpers import VISTAS, env_for


@pytest.fixture(scope="module")
def stored(indexed: Settings) -> tuple[np.ndarray, list[str]]:
    """Stored features of the sample catalog and each item's category."""
    store = Store.from_url(indexed.redis_url_or_default, indexed.key_prefix)
    rows = sample_rows()
    features = store.items.features_many([r["id"] for r in rows])
    return np.stack(features), [r["category"] for r in rows]


def test_head_learns_categories_and_reports_against_a_baseline(stored) -> None:
    features, categories = stored
    head, report = train_head("cats", features, categories, seed=0)
    chance = max(categories.count(c) for c in set(categories)) / len(categories)
    assert report.heldout_accuracy > chance + 0.2
    assert report.heldout_top5_accuracy >= report.heldout_accuracy
    assert 0 <= report.logistic_regression_accuracy <= 1 and report.heldout_size > 0
    predicted = head.predict(torch.from_numpy(features)).argmax(dim=1).numpy()
    assert (np.array(head.labels)[predicted] == np.array(categories)).mean() > 0.8


def test_head_needs_two_labels(stored) -> None:
    features, _ = stored
    with pytest.raises(ValueError, match="at least 2 different labels"):
        train_head("one", features, ["x"] * len(features))


def test_saved_head_is_applied_by_the_tagger(stored, tmp_path: Path) -> None:
    features, categories = stored
    head, report = train_head("cats", features, categories, seed=0)
    head.save(heads_dir(tmp_path) / "cats", report)
    again = load_heads(tmp_path)[0]
    assert isinstance(again, Head) and again.labels == head.labels
    np.testing.assert_allclose(again.predict(torch.from_numpy(features)), head.predict(torch.from_numpy(features)),
                               atol=1e-5)
    tagger = Tagger(Settings(device="cpu", data_dir=tmp_path))
    photo = DEMO / "images" / "gcompris" / "landmark-tajmahal_2.jpg"
    (_, tagging), = tagger.tag([("taj", photo)])
    assert len(tagging.labels) == 6 and tagging.labels[5][0] == "landmark"  # top-5 backbone labels + the head's


def test_train_head_cli_uses_stored_features(indexed: Settings, tmp_path: Path, sample_manifest: Path) -> None:
    settings = indexed.with_(data_dir=tmp_path)  # same catalog, heads saved elsewhere
    done = subprocess.run([*VISTAS, "train-head", str(sample_manifest), "--name", "cats", "--label-column",
                           "category"], env=env_for(settings), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"{len(sample_rows())} photos have stored features, 0 need tagging" in done.stdout
    assert "held-out accuracy" in done.stdout and "logistic regression" in done.stdout
    report = json.loads((heads_dir(tmp_path) / "cats" / "report.json").read_text())
    assert report["labels"] == len({r["category"] for r in sample_rows()})
    names = json.loads((heads_dir(tmp_path) / "cats" / "names.json").read_text())  # display names, to edit
    assert names["food_fruit"] == "fruit" and names["landmark"] == "landmark" and "names.json" in done.stdout


def test_train_head_cli_refuses_a_bad_dataset(indexed: Settings, tmp_path: Path) -> None:
    (tmp_path / "only" / "one").mkdir(parents=True)
    shutil.copy(DEMO / "images" / "gcompris" / "landmark-tajmahal.jpg", tmp_path / "only" / "one" / "a.jpg")
    done = subprocess.run([*VISTAS, "train-head", str(tmp_path / "only"), "--name", "x"],
                          env=env_for(indexed.with_(data_dir=tmp_path)), capture_output=True, text=True)
    assert done.returncode == 1 and "at least 2 labels" in done.stderr


def test_eval_ranks_representations_and_records_the_best(indexed: Settings, tmp_path: Path) -> None:
    store = Store.from_url(indexed.redis_url_or_default, indexed.key_prefix)
    out = tmp_path / "eval.json"
    done = subprocess.run([*VISTAS, "eval", "--json", str(out)], env=env_for(indexed), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    names = [r["representation"] for r in report["representations"]]
    assert names == ["raw features", "mix", "features", "tags"]
    topics = report["representations"][1:]
    assert report["representations"][0]["interpretability"] is None
    assert all(-1 <= r["interpretability"]["npmi_worst"] <= r["interpretability"]["npmi"] <= 1 for r in topics)
    assert all(0 <= r["interpretability"][k] <= 1 for r in topics for k in ("distinct_names", "agreement"))
    # the most coherent among those whose mean of recall and precision is within 0.005 of the best
    quality = {r["representation"]: (r["landmark_recall"] + r["category_precision"]) / 2 for r in topics}
    near = [r for r in topics if quality[r["representation"]] >= max(quality.values()) - 0.005]
    serving = next(r for r in topics if r["representation"] == report["serving"])
    assert serving in near and serving["interpretability"]["npmi"] == max(r["interpretability"]["npmi"] for r in near)
    assert report["serving"] == store.versions.representation()
    assert all(r["landmark_recall"] is not None and r["category_precision"] is not None
               for r in report["representations"])
    assert "npmi" in done.stdout and "worst5" in done.stdout
    assert f"serving representation: {report['serving']}" in done.stdout
    store.versions.set_representation("mix")
