"""Train a classifier from scratch in seconds: for the demo, the tests and the benchmarks (no downloads)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 8, lr: float = 3e-3,
                     batch_size: int = 64, seed: int = 0, settle_epochs: int = 0,
                     on_epoch: Callable[[int, float], None] | None = None) -> nn.Module:
    """Adam + cross-entropy; seeded so the same call gives the same weights on CPU (seed the model's init too).

    `settle_epochs` more epochs at lr / 10 let BatchNorm's running statistics catch up with the weights: without
    them a briefly trained CNN's eval-mode accuracy can swing by tens of points with the seed. `on_epoch(epoch, lr)`
    runs after each epoch (1-based, settle epochs included), e.g. to record a train/test curve."""
    _epochs(model, x, y, epochs, lr, batch_size, seed, on_epoch)
    if settle_epochs:
        after = None if on_epoch is None else lambda e, r: on_epoch(epochs + e, r)
        _epochs(model, x, y, settle_epochs, lr / 10, batch_size, seed + 1, after)
    return model.eval()


def _epochs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch_size: int,
            seed: int, on_epoch: Callable[[int, float], None] | None = None) -> None:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            idx = perm[i : i + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if on_epoch is not None:
            on_epoch(epoch + 1, lr)
            model.train()


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model.eval()(x).argmax(1) == y).float().mean())
