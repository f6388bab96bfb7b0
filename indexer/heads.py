"""Transfer learning: small 2-layer heads trained on the backbone's stored features.

The backbone's ImageNet labels rarely match a shop's taxonomy or a travel
site's destination types. A head (hidden layer, dropout, softmax) learns the
user's own labels from the pooled features that indexing already stored, so
training needs no second forward pass. Saved heads live under
``DATA_DIR/heads/NAME/`` and the tagger applies all of them: their labels
join the tag vocabulary, and the next reindex folds them into the topics.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

HEAD_FILE, LABELS_FILE, REPORT_FILE = "head.pt", "labels.json", "report.json"
#: Minibatch size: small catalogs need many small steps, large ones fewer big ones.
MIN_BATCH, MAX_BATCH = 32, 512
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


def heads_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "heads"


def load_heads(data_dir: Path) -> list[Head]:
    """Every saved head under the data directory, by name."""
    root = heads_dir(data_dir)
    if not root.is_dir():
        return []
    return [Head.load(d) for d in sorted(root.iterdir()) if (d / HEAD_FILE).is_file()]


def _split(labels: np.ndarray, heldout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split; labels seen once stay in training (they cannot be held out)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(len(idx) * heldout)) if len(idx) > 1 else 0
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return np.array(sorted(train)), np.array(sorted(test))


def train_head(
    name: str, features: np.ndarray, labels: list[str], *, heldout: float = 0.2, seed: int = 0,
    max_epochs: int = 100, patience: int = 8, on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[Head, TrainReport]:
    """Train a head with class weights and early stopping; report accuracy on a held-out split.

    The held-out split (``heldout`` of each label) is never trained on nor used
    to stop: a validation slice of the training part decides when to stop, and
    a logistic regression on the same training part is the baseline to beat.
    """
    from sklearn.linear_model import LogisticRegression

    started = time.monotonic()
    names = sorted(set(labels))
    if len(names) < 2:
        raise ValueError("a head needs at least 2 different labels")
    y = np.array([names.index(label) for label in labels])
    fit, test = _split(y, heldout, seed)
    if len(test) == 0:
        raise ValueError("too few examples to hold any out: give each label at least 2 photos")
    # Early stopping watches a validation slice of the training part; the held-out part is only reported.
    inner_train, inner_val = _split(y[fit], heldout, seed + 1)
    train, val = fit[inner_train], fit[inner_val]
    x = torch.from_numpy(np.asarray(features, dtype=np.float32))
    scale = x[fit].std(dim=0).clamp_min(1e-6)
    shift = x[fit].mean(dim=0)
    xs, yt = (x - shift) / scale, torch.from_numpy(y)

    # 1. find how many epochs generalise, watching the validation slice
    best_epoch, best_accuracy, best_loss = 0, -1.0, float("inf")
    for epoch, model in _epochs(xs, yt, train, len(names), max_epochs, seed):
        with torch.no_grad():
            logits = model.eval()(xs[val])
        val_loss = float(nn.functional.cross_entropy(logits, yt[val]))
        val_accuracy = float((logits.argmax(dim=1) == yt[val]).float().mean())
        if on_epoch:
            on_epoch(epoch, val_loss)
        # Better = more accurate, or as accurate with a clearly (1%) lower loss; a crawl is not progress.
        if val_accuracy > best_accuracy or (val_accuracy == best_accuracy and val_loss < best_loss * 0.99):
            best_epoch, best_accuracy, best_loss = epoch, val_accuracy, val_loss
        elif epoch - best_epoch >= patience:
            break
    # 2. train on the whole training part (validation slice included) for that many epochs
    for epoch, model in _epochs(xs, yt, fit, len(names), best_epoch, seed):
        pass
    model.eval()
    with torch.no_grad():
        logits = model(xs[test])
    top5 = logits.topk(min(5, len(names)), dim=1).indices.numpy()
    accuracy = float((top5[:, 0] == y[test]).mean())
    top5_accuracy = float((top5 == y[test][:, None]).any(axis=1).mean())
    baseline = LogisticRegression(max_iter=500, class_weight="balanced")
    baseline.fit(xs[fit].numpy(), y[fit])
    baseline_accuracy = float((baseline.predict(xs[test].numpy()) == y[test]).mean())

    # Fold the standardisation into the first layer so the saved head eats raw features.
    first = model.net[1]
    with torch.no_grad():
        first.bias -= (first.weight * (shift / scale)).sum(dim=1)
        first.weight /= scale
    report = TrainReport(name, len(names), len(fit), len(test), best_epoch, round(time.monotonic() - started, 2),
                         round(accuracy, 4), round(top5_accuracy, 4), round(baseline_accuracy, 4))
    log.info("head %s: held-out accuracy %.3f (top-5 %.3f), logistic regression %.3f, %d epochs",
             name, accuracy, top5_accuracy, baseline_accuracy, best_epoch)
    return Head(name, names, model), report


def _epochs(
    xs: torch.Tensor, yt: torch.Tensor, rows: np.ndarray, n_labels: int, epochs: int, seed: int
) -> Iterator[tuple[int, LabelHead]]:
    """Train a fresh head on ``rows`` (class-weighted minibatches), yielding it after each epoch."""
    torch.manual_seed(seed)
    counts = np.bincount(yt[rows].numpy(), minlength=n_labels).astype(np.float32)
    weights = np.where(counts > 0, len(rows) / (n_labels * np.maximum(counts, 1)), 0.0)
    loss_fn = nn.CrossEntropyLoss(weight=torch.from_numpy(weights).float())
    model = LabelHead(xs.shape[1], n_labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    batch = min(MAX_BATCH, max(MIN_BATCH, len(rows) // 16))
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.from_numpy(rows)[torch.randperm(len(rows))]
        for start in range(0, len(rows), batch):
            idx = order[start:start + batch]
            optimizer.zero_grad()
            loss_fn(model(xs[idx]), yt[idx]).backward()
            optimizer.step()
        yield epoch, model
