"""MNIST-1D proxy tasks: an MLP and a small 1-D ConvNet on Greydanus's MNIST-1D.

MNIST-1D (S. Greydanus, "Scaling down deep learning", 2020, arXiv:2011.14439) turns ten 1-D
templates into 40-sample signals with random padding, translation, shear, scaling and
correlated plus i.i.d. noise. It is small (a step of an MLP costs microseconds) yet far from
saturated: a linear model reaches ~32 %, an MLP ~70 %, a ConvNet ~94 %, so optimizers that differ
by a few points of validation accuracy are told apart, unlike on scikit-learn's digits.

The data are *made*, never downloaded: ``mnist1d.data.make_dataset(get_dataset_args())`` with
the package's fixed seed (42) and its defaults, 5,000 signals split 4,000 train / 1,000
validation. (``mnist1d.get_dataset`` would fetch a pickle over HTTP; it is never called.)
``make_dataset`` reseeds NumPy's and Python's global generators, so their states are restored
around it. The tensors are built once per process.

Each network is a table of layers (:data:`MLP`, :data:`CNN`) from which both the
``torch.nn`` module of :func:`make` (one training run, what ``tasks.TASKS`` holds) and the
stacked forward of ``search.batched`` (many copies at once) are built, so the two cannot drift.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn

_DATA: dict = {}

# ("linear", in, out) | ("relu",) | ("conv", in_channels, out_channels, kernel, stride, padding)
# | ("flatten",): the input of a ConvNet is (batch, 40) and gets one channel first.
MLP = (("linear", 40, 100), ("relu",), ("linear", 100, 100), ("relu",), ("linear", 100, 10))
# 40 -> 20 -> 10 -> 5 positions, 8-16-16 channels: 2,042 parameters, ~9k multiply-adds per
# signal (the MLP: 15k). Twice the channels reach ~2 points more and cost 2-3x the time.
CNN = (("conv", 1, 8, 5, 2, 2), ("relu",), ("conv", 8, 16, 3, 2, 1), ("relu",),
       ("conv", 16, 16, 3, 2, 1), ("relu",), ("flatten",), ("linear", 16 * 5, 10))
BATCH = 100


def data():
    """(x, y, x_val, y_val): float32 signals (4000, 40) and (1000, 40), int64 labels."""
    if "xy" not in _DATA:
        from mnist1d.data import get_dataset_args, make_dataset
        np_state, py_state = np.random.get_state(), random.getstate()
        try:
            d = make_dataset(get_dataset_args())
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
        f32 = lambda a: torch.tensor(a, dtype=torch.float32)
        i64 = lambda a: torch.tensor(a, dtype=torch.long)
        _DATA["xy"] = (f32(d["x"]), i64(d["y"]), f32(d["x_test"]), i64(d["y_test"]))
    return _DATA["xy"]


_MODULES = {
    "linear": lambda i, o: nn.Linear(i, o),
    "relu": lambda: nn.ReLU(),
    "conv": lambda i, o, k, s, p: nn.Conv1d(i, o, k, stride=s, padding=p),
    "flatten": lambda: nn.Flatten(),
}


def module(layers) -> nn.Module:
    """The ``torch.nn`` network of a layer table (a ConvNet first gets its channel axis)."""
    mods = [_MODULES[kind](*args) for kind, *args in layers]
    if layers[0][0] == "conv":
        mods.insert(0, nn.Unflatten(1, (1, -1)))
    return nn.Sequential(*mods)


def make(layers, seed: int):
    """One training run of ``layers`` on MNIST-1D: weights from ``torch.manual_seed(seed)``,
    minibatches of :data:`BATCH` in the order of ``seed`` (see ``tasks._classifier``)."""
    from .tasks import _classifier
    x, y, xv, yv = data()
    torch.manual_seed(seed)
    return _classifier(module(layers), x, y, xv, yv, seed, batch=BATCH)

# The multi-seed protocol of both tasks (search/fidelity.py), chosen on the library's rules
# (docs/search.md): 3 seeds on half decades 1e-4..10^0.5 for the task's steps; the screening
# rung is one seed on the 8 half decades 1e-3..10^0.5 for 200 steps, and the full rung keeps
# the 3 half decades nearest the screen's best learning rate (9 copies instead of 30), and
# pauses at step 600, the middle rung (search/fidelity.py: a promoted candidate below the
# search's median there stops). The screen's grid has the full grid's spacing: the screen it
# replaced (decades 1e-4..1, 5 copies, 200 steps; this one costs about 1.3 times as much)
# ranked the 70 tuned rows of the MLP's library leaderboard with Spearman -0.07 against
# their full scores, a lottery among the fair rules (BENCHMARKS.md, "A screen that ranks";
# benchmarks/screen_rank.py). It reaches down to 1e-3 for the searches' candidates: library
# rules are best at 10^-2.5 and above, but a third of an MLP random-grammar search's full
# results were best at the lowest rate a screen from 1e-2 leaves them (10^-2.5). The screen
# is budget-aware (fidelity.on_budget): a rule's schedules run over the screen's 200 steps, so
# a decay over the training is judged decayed (Spearman +0.56 instead of +0.37 on those rows).
HALF_DECADES = tuple(float(f"{10 ** (k / 2):.4g}") for k in range(-8, 2))
PROTOCOL = {"seeds": (0, 1, 2), "lr_grid": HALF_DECADES,
            "screen": {"seeds": [0], "lr_grid": list(HALF_DECADES[2:]), "steps": 200,
                       "eval_every": 50, "refine": 1, "budget_aware": True},
            "middle": 600}
