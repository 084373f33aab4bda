"""The example job: train a small MLP on scikit-learn's bundled digits with any rule.

    optdsl train "lr * exp(sign(g) * sign(ema(g, 0.9))) * g" --lr 0.05 --epochs 20
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .optimizer import Optimizer


def digits_split(seed: int = 0, dtype=torch.float32):
    """The digits data (1,797 8x8 images), scaled to [0, 1], split 80/20 with a fixed seed."""
    from sklearn.datasets import load_digits  # heavy: only when the data is needed
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=dtype)
    y = torch.tensor(y, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_train = int(0.8 * len(x))
    tr, va = perm[:n_train], perm[n_train:]
    return (x[tr], y[tr]), (x[va], y[va])


def mlp(seed: int = 0, hidden: int = 64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def train_digits(rule, epochs: int = 20, batch_size: int = 64, seed: int = 0, log=print,
                 **hypers) -> dict:
    """Train the MLP; returns {'losses': per-epoch train loss, 'accuracy': validation accuracy,
    'diverged': the first epoch whose train loss is not finite, or None}."""
    (xt, yt), (xv, yv) = digits_split(seed)
    model = mlp(seed)
    opt = Optimizer(model.parameters(), rule, seed=seed, **hypers)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(xt))
        if log:
            log(f"epoch {epoch:3d}  train loss {losses[-1]:.4f}")
    with torch.no_grad():
        accuracy = float((model(xv).argmax(1) == yv).float().mean())
    diverged = next((k + 1 for k, x in enumerate(losses) if not math.isfinite(x)), None)
    return {"losses": losses, "accuracy": accuracy, "rule": opt.rule.name, "diverged": diverged}
