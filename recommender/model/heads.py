"""Custom heads: small 2-layer networks on the backbone's pooled features, and how they are saved.

The backbone's ImageNet labels rarely match a shop's taxonomy or a travel
site's destination types. A head (hidden layer, dropout, softmax) learns the
user's own labels (``indexer.heads`` trains it). Saved heads live under
``DATA_DIR/heads/NAME/`` and the tagger applies all of them: their labels
join the tag vocabulary, and the next reindex folds them into the topics.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recommender.model.exported import HEAD_FILE, LABELS_FILE, REPORT_FILE, heads_dir, saved_heads

__all__ = ["HEAD_FILE", "LABELS_FILE", "REPORT_FILE", "Head", "LabelHead", "TrainReport", "heads_dir", "load_heads"]
INPUT_DROPOUT = 0.2  # few examples per label: dropping features keeps the head from memorising


class LabelHead(nn.Module):
    """features (dropout) -> hidden (ReLU, dropout) -> one logit per label."""

    def __init__(self, feature_dim: int, n_labels: int, hidden: int = 256, dropout: float = 0.5):
        super().__init__()
        self.net = nn.Sequential(nn.Dropout(INPUT_DROPOUT), nn.Linear(feature_dim, hidden), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(hidden, n_labels))
        self.feature_dim, self.n_labels, self.hidden = feature_dim, n_labels, hidden

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


@dataclass
class TrainReport:
    """Held-out quality of a trained head, beside a logistic regression on the same split."""

    name: str
    labels: int
    train_size: int
    heldout_size: int
    epochs: int
    seconds: float
    heldout_accuracy: float
    heldout_top5_accuracy: float
    logistic_regression_accuracy: float


@dataclass
class Head:
    """A trained head and its label names, ready to apply to features."""

    name: str
    labels: list[str]
    model: LabelHead

    @torch.inference_mode()
    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Label probabilities for a batch of pooled features."""
        self.model.eval()
        return self.model(features.float()).softmax(dim=1)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """:meth:`predict` on numpy features, the interface the compiled heads share."""
        return self.predict(torch.from_numpy(features)).numpy()

    def save(self, directory: Path, report: TrainReport | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        torch.save({"state": self.model.state_dict(), "feature_dim": self.model.feature_dim,
                    "hidden": self.model.hidden}, directory / HEAD_FILE)
        (directory / LABELS_FILE).write_text(json.dumps(self.labels))
        if report is not None:
            (directory / REPORT_FILE).write_text(json.dumps(asdict(report), indent=1))

    @classmethod
    def load(cls, directory: Path) -> "Head":
        saved = torch.load(directory / HEAD_FILE, map_location="cpu", weights_only=True)
        labels = json.loads((directory / LABELS_FILE).read_text())
        model = LabelHead(saved["feature_dim"], len(labels), saved["hidden"])
        model.load_state_dict(saved["state"])
        return cls(directory.name, labels, model.eval())


def load_heads(data_dir: Path) -> list[Head]:
    """Every saved head under the data directory, by name."""
    return [Head.load(d) for d in saved_heads(data_dir)]
