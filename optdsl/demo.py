"""The example job: train a small MLP on scikit-learn's bundled digits with any rule.

    optdsl train "lr * exp(sign(g) * sign(ema(g, 0.9))) * g" --lr 0.05 --epochs 20
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn


def digits_split(seed: int = 0, dtype=torch.float32):
    """The digits data (1,797 8x8 images), scaled to [0, 1], split 80/20 with a fixed seed."""
    from sklearn.datasets import load_digits
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
    """Train the MLP; returns {'losses': per-epoch train loss, 'accuracy': validation accuracy}."""
    from .optimizer import Optimizer
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
    return {"losses": losses, "accuracy": accuracy, "rule": opt.rule.name}


def cmd_train(argv) -> int:
    ap = argparse.ArgumentParser(prog="optdsl train",
                                 description="Train a small MLP on scikit-learn's digits with a rule.")
    ap.add_argument("rule", help="a library name, a program file or a formula")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="set a hyperparameter (repeatable), e.g. --set beta1=0.95")
    ap.add_argument("--lr", type=float, help="shorthand for --set lr=VALUE")
    args = ap.parse_args(argv)
    from .cli import load_rule, name_values
    from .errors import HyperparameterError
    rule = load_rule(args.rule)
    hypers = name_values(args.set, "--set", HyperparameterError)
    if args.lr is not None:
        hypers["lr"] = args.lr
    torch.set_num_threads(1)
    from .optimizer import Optimizer
    Optimizer([torch.zeros(1, requires_grad=True)], rule, **hypers)  # bad names fail before training
    shown = ", ".join(f"{k}={v}" for k, v in {**rule.defaults, **hypers}.items())
    print(f"training a 64-64-10 MLP on digits with {rule.name}({shown})")
    start = time.perf_counter()
    result = train_digits(rule, args.epochs, args.batch_size, args.seed, **hypers)
    print(f"validation accuracy {result['accuracy']:.4f}  ({time.perf_counter() - start:.1f} s)")
    return 0
