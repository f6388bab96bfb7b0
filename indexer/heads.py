"""Transfer learning: training a custom head on the backbone's stored features.

A head learns the user's own labels from the pooled features that indexing
already stored, so training needs no second forward pass (`vistas train-head`).
The head itself, and how it is saved and applied, is ``recommender.model.heads``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from recommender.model.heads import Head, LabelHead, TrainReport

log = logging.getLogger(__name__)

#: Minibatch size: small catalogs need many small steps, large ones fewer big ones.
MIN_BATCH, MAX_BATCH = 32, 512


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
