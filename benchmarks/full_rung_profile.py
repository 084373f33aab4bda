"""Where a promoted candidate's time goes on the MNIST-1D MLP (issue 13's throughput figures).

One core, set up as a search worker (``search.evaluate.settle_worker``). Prints:

1. a full rung (3 seeds x 3 learning rates x the task's 1,500 steps, 9 stacked copies,
   ``search.batched.train_copies``) for adam and for a Bello rule with one ``drop``;
2. the stacked forward and backward per step, eager and under ``torch.compile`` (with its
   compile time);
3. the elementwise operations of a rule on the stacked buffer (9 x 15,210 elements): ``drop``
   and its parts (its bit-mask select against the ``torch.where`` it replaced) against a
   multiply and an ema;
4. the training loss of the stacked copies, forward and backward: ``batched.mean_cross_entropy``
   against ``F.cross_entropy`` over the flattened logits (what it replaced);
5. with store paths: the share of promoted candidates holding a ``drop`` and the Spearman
   correlation of screening and full scores among them.

    .venv/bin/python benchmarks/full_rung_profile.py [runs/mnist1d-evolution-3.sqlite ...]
"""
from __future__ import annotations

import sqlite3
import sys
import time

import torch
from torch.nn import functional as F

import optdsl
from optdsl.search import batched
from optdsl.search.evaluate import settle_worker
from optdsl.search.tasks import get_task

DROP_RULE = ("r(lr=0.1) = lr * drop(ema(g, 0.9) / (sqrt(abs(ema(g * g, 0.999))) + 1e-8), 0.3)"
             " * sqrt(abs(ema(g * g, 0.999)))")


def per_call_us(fn, k: int = 300) -> float:
    for _ in range(20):
        fn()
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    return (time.perf_counter() - t0) / k * 1e6


def full_rungs(task) -> None:
    batched.train_copies(optdsl.resolve("adam"), task, [0], [1e-3], 50, 50)  # data, warm-up
    for name, text in (("adam", "adam"), ("one-drop Bello rule", DROP_RULE)):
        t0 = time.perf_counter()
        batched.train_copies(optdsl.resolve(text), task, [0, 1, 2], [1e-3, 3.162e-3, 1e-2],
                             task.steps, task.eval_every)
        print(f"full rung, {name}: {time.perf_counter() - t0:.2f} s")


def forward_backward(task, n: int = 9) -> None:
    spec = task.stacked
    x, y, _, _ = spec.data()
    leaves = [p.detach().unsqueeze(0).repeat(n, *[1] * p.dim()).requires_grad_(True)
              for p in task.make(0).params]
    idx = torch.randint(0, len(x), (n, spec.batch), generator=torch.Generator().manual_seed(0))
    xb, yb = x[idx], y[idx]

    def losses(ps, xb, yb):
        logits = batched.stacked_forward(spec.layers, ps, xb)
        return F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none").mean()

    def step(fn):
        return lambda: torch.autograd.grad(fn(leaves, xb, yb), leaves)

    print(f"forward+backward, {n} copies: eager {per_call_us(step(losses)) / 1e3:.2f} ms/step")
    compiled = torch.compile(losses, dynamic=False)
    t0 = time.perf_counter()
    step(compiled)()
    print(f"  torch.compile: {time.perf_counter() - t0:.1f} s to compile, "
          f"{per_call_us(step(compiled)) / 1e3:.2f} ms/step")


def rule_ops(task, n: int = 9) -> None:
    from optdsl.primitives import PRIMITIVES, _keep_mask
    size = sum(p.numel() for p in task.make(0).params)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, size, generator=gen)
    r = torch.rand(x.shape, generator=gen)
    keep = r >= 0.3
    ops = {"drop (optdsl.primitives)": lambda: PRIMITIVES["drop"].torch_fn(gen, x, x, 0.3),
           "  mask draw (drop's: 16-bit lanes of random 64-bit words)":
               lambda: _keep_mask(gen, x, 0.3),
           "  torch.rand >= rate (drop's draw before)":
               lambda: torch.rand(x.shape, generator=gen) >= 0.3,
           "  select by bit mask (drop's)":
               lambda: x.view(torch.int32).bitwise_and(keep.to(torch.int32).neg_()),
           "  select by torch.where (drop's before)":
               lambda: torch.where(keep, x, torch.zeros_like(x)),
           "multiply": lambda: x * x,
           "ema (mul + add)": lambda: x.mul(0.9).add_(x, alpha=0.1)}
    print(f"elementwise on {n} x {size} float32:")
    for name, fn in ops.items():
        print(f"  {name}: {per_call_us(fn):.0f} us")


def cross_entropy(n: int = 9, batch: int = 100, classes: int = 10) -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(n, batch, classes, generator=gen, requires_grad=True)
    y = torch.randint(0, classes, (n, batch), generator=gen)
    losses = {"batched.mean_cross_entropy": lambda: batched.mean_cross_entropy(logits, y),
              "F.cross_entropy over (copies x batch, classes)":
                  lambda: F.cross_entropy(logits.flatten(0, 1), y.flatten(),
                                          reduction="none").view(n, -1).mean(1)}
    print(f"loss forward + backward, {n} copies of {batch} x {classes} logits:")
    for name, fn in losses.items():
        print(f"  {name}: {per_call_us(lambda: torch.autograd.grad(fn().sum(), logits)):.0f} us")


def promoted(paths: list) -> None:
    from scipy.stats import spearmanr
    for path in paths:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT rule, screen_score, score FROM evaluations WHERE "
                                "rung = 'full' AND status = 'ok' AND name IS NULL AND "
                                "screen_score IS NOT NULL").fetchall()
        if len(rows) < 3:
            print(f"{path}: {len(rows)} promoted candidates, too few")
            continue
        drops = sum("drop(" in rule for rule, _, _ in rows)
        rho = spearmanr([s for _, s, _ in rows], [f for _, _, f in rows]).correlation
        print(f"{path}: {len(rows)} promoted, {drops / len(rows):.0%} hold a drop; "
              f"Spearman(screen, full) {rho:.2f}")


def main(argv: list) -> int:
    settle_worker()  # one thread and glibc's thresholds, as a search worker
    task = get_task("mnist1d-mlp")
    full_rungs(task)
    forward_backward(task)
    rule_ops(task)
    cross_entropy()
    promoted(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
