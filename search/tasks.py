"""Proxy tasks: small, real, deterministic training problems a candidate rule is scored on.

Each task is a row of ``TASKS``: a name, what it trains, how many steps, how often it is
validated, and a ``make(seed)`` that builds a fresh :class:`Problem` (parameters, a training
loss for step ``t`` and a validation metric where *higher is better*). Everything a run
depends on (initial weights, data split, batch order) comes from ``seed``, so the same rule,
learning rate and seed give the same curve on any machine.

========== ===================================================== ===========================
name       problem                                                metric (higher is better)
========== ===================================================== ===========================
digits     MLP 64-64-10 on scikit-learn's digits, batches of 64   validation accuracy
digits-cnn ConvNet (2 conv + linear) on the 8x8 digits images     validation accuracy
cancer     logistic regression on scikit-learn's breast cancer    validation accuracy
quadratic  0.5 x^T A x, A rotated, condition number 1e3, dim 20   -log10 f(x)
rosenbrock (1-x)^2 + 100 (y-x^2)^2 from (-1.2, 1)                 -log10 f(x)
charlm     character model (8-char context MLP) on the Zen of     -bits per character
           Python (Python's ``this`` module), last 15% held out   (validation)
mnist1d-   MLP 40-100-100-10 / 1-D ConvNet on MNIST-1D (4,000     validation accuracy
mlp, -cnn  train, 1,000 validation; ``search/mnist1d.py``)
========== ===================================================== ===========================

A task whose network is a layer table also has ``stacked`` (``search/batched.py`` then trains
all seeds x learning rates of a candidate as one model) and may carry ``protocol``: its default
multi-seed protocol settings (``search/fidelity.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from . import mnist1d


@dataclass
class Problem:
    """One fresh training run's ingredients."""
    params: list  # tensors (requires_grad) the optimizer updates
    loss: Callable[[int], torch.Tensor]  # training loss at step t (1-based)
    validate: Callable[[], float]  # validation metric, higher is better
    val_loss: Callable[[], float] | None = None  # validation loss (classifiers)


@dataclass(frozen=True)
class Stacked:
    """How ``search.batched`` builds many copies of a task's network at once."""
    layers: tuple  # the layer table (``search.mnist1d.MLP`` format)
    data: Callable[[], tuple] = field(repr=False)  # () -> (x, y, x_val, y_val)
    batch: int


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    metric: str  # what validate() returns
    steps: int
    eval_every: int
    make: Callable[[int], Problem] = field(repr=False, compare=False)
    loss_bound: float = 1e3  # diverged if the loss exceeds loss_bound x max(1, first loss)
    stacked: Stacked | None = field(default=None, compare=False)
    protocol: dict | None = None  # default settings of the multi-seed protocol (fidelity.py)

    def config(self) -> dict:
        """What identifies the task's results (part of the protocol key)."""
        return {"task": self.name, "steps": self.steps, "eval_every": self.eval_every,
                "loss_bound": self.loss_bound, "version": 1}


# --- data ----------------------------------------------------------------------------------------
_CACHE: dict = {}


def _cached(key, build):
    if key not in _CACHE:
        _CACHE[key] = build()
    return _CACHE[key]


def _split(n: int, frac: float, seed: int = 0):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = int(frac * n)
    return perm[:k], perm[k:]


def _digits():
    """Digits scaled to [0, 1], a fixed 80/20 split (the split never depends on the run's seed)."""
    def build():
        from sklearn.datasets import load_digits
        x, y = load_digits(return_X_y=True)
        x = torch.tensor(x / 16.0, dtype=torch.float32)
        y = torch.tensor(y, dtype=torch.long)
        tr, va = _split(len(x), 0.8)
        return x[tr], y[tr], x[va], y[va]
    return _cached("digits", build)


def _cancer():
    """Breast cancer, standardized with the training half's statistics, fixed 75/25 split."""
    def build():
        from sklearn.datasets import load_breast_cancer
        x, y = load_breast_cancer(return_X_y=True)
        x = torch.tensor(x, dtype=torch.float32)
        y = torch.tensor(y, dtype=torch.float32)
        tr, va = _split(len(x), 0.75)
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
        x = (x - mu) / sd
        return x[tr], y[tr], x[va], y[va]
    return _cached("cancer", build)


def zen_of_python() -> str:
    """The text of ``import this`` (shipped with every Python), decoded without printing it."""
    import codecs
    import contextlib
    import io
    with contextlib.redirect_stdout(io.StringIO()):
        import this
    return codecs.decode(this.s, "rot13")


# --- helpers ---------------------------------------------------------------------------------------
def _batches(n: int, batch: int, seed: int):
    """Index of the minibatch for step t: epochs of a seeded permutation, in order."""
    gen = torch.Generator().manual_seed(seed)
    perms: list = []
    per_epoch = math.ceil(n / batch)

    def at(t: int):
        epoch, i = divmod(t - 1, per_epoch)
        while len(perms) <= epoch:
            perms.append(torch.randperm(n, generator=gen))
        return perms[epoch][i * batch:(i + 1) * batch]
    return at


def _classifier(model: nn.Module, x, y, xv, yv, seed: int, batch: int = 64) -> Problem:
    at = _batches(len(x), batch, seed)

    def loss(t):
        idx = at(t)
        return F.cross_entropy(model(x[idx]), y[idx])

    def validate():
        with torch.no_grad():
            return float((model(xv).argmax(1) == yv).float().mean())

    def val_loss():
        with torch.no_grad():
            return float(F.cross_entropy(model(xv), yv))
    return Problem(list(model.parameters()), loss, validate, val_loss)


def _neg_log10(f: float) -> float:
    return -math.log10(max(f, 1e-12)) if math.isfinite(f) else float("nan")


# --- the tasks -------------------------------------------------------------------------------------
DIGITS_MLP = (("linear", 64, 64), ("relu",), ("linear", 64, 10))


def make_digits(seed: int) -> Problem:
    x, y, xv, yv = _digits()
    torch.manual_seed(seed)
    return _classifier(mnist1d.module(DIGITS_MLP), x, y, xv, yv, seed)


def make_digits_cnn(seed: int) -> Problem:
    x, y, xv, yv = _digits()
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 8 x 4 x 4
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 16 x 2 x 2
        nn.Flatten(), nn.Linear(64, 10))
    return _classifier(model, x, y, xv, yv, seed)


def make_cancer(seed: int) -> Problem:
    x, y, xv, yv = _cancer()
    torch.manual_seed(seed)
    model = nn.Linear(x.shape[1], 1)
    at = _batches(len(x), 64, seed)

    def loss(t):
        idx = at(t)
        return F.binary_cross_entropy_with_logits(model(x[idx]).squeeze(1), y[idx])

    def validate():
        with torch.no_grad():
            return float(((model(xv).squeeze(1) > 0).float() == yv).float().mean())
    return Problem(list(model.parameters()), loss, validate)


def make_quadratic(seed: int, dim: int = 20, condition: float = 1e3) -> Problem:
    gen = torch.Generator().manual_seed(1234)  # the problem is fixed; the seed moves the start
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    eig = torch.logspace(0, math.log10(condition), dim, dtype=torch.float64)
    a = (q * eig) @ q.T
    x0 = torch.randn(dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x0.clone().requires_grad_(True)

    def f():
        return 0.5 * x @ a @ x

    def validate():
        with torch.no_grad():
            return _neg_log10(float(f()))
    return Problem([x], lambda t: f(), validate)


def make_rosenbrock(seed: int) -> Problem:
    start = torch.tensor([-1.2, 1.0], dtype=torch.float64)
    start += 0.01 * torch.randn(2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    xy = start.clone().requires_grad_(True)

    def f():
        return (1 - xy[0]) ** 2 + 100 * (xy[1] - xy[0] ** 2) ** 2

    def validate():
        with torch.no_grad():
            return _neg_log10(float(f()))
    return Problem([xy], lambda t: f(), validate)


def make_charlm(seed: int, context: int = 8, embed: int = 16, hidden: int = 128) -> Problem:
    def build():
        text = zen_of_python()
        vocab = sorted(set(text))
        ids = torch.tensor([vocab.index(c) for c in text], dtype=torch.long)
        windows = ids.unfold(0, context + 1, 1)  # (n, context + 1): inputs then target
        k = int(0.85 * len(windows))
        return len(vocab), windows[:k], windows[k + context:]  # no overlap with training text
    n_vocab, train, val = _cached("charlm", build)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Embedding(n_vocab, embed), nn.Flatten(),
                          nn.Linear(context * embed, hidden), nn.Tanh(), nn.Linear(hidden, n_vocab))
    at = _batches(len(train), 64, seed)

    def loss(t):
        w = train[at(t)]
        return F.cross_entropy(model(w[:, :-1]), w[:, -1])

    def validate():
        with torch.no_grad():
            nats = float(F.cross_entropy(model(val[:, :-1]), val[:, -1]))
        return -nats / math.log(2)
    return Problem(list(model.parameters()), loss, validate)


def make_mnist1d_mlp(seed: int) -> Problem:
    return mnist1d.make(mnist1d.MLP, seed)


def make_mnist1d_cnn(seed: int) -> Problem:
    return mnist1d.make(mnist1d.CNN, seed)


TASKS = {t.name: t for t in [
    Task("digits", "MLP 64-64-10 on scikit-learn's digits (80/20 split)", "accuracy",
         steps=300, eval_every=50, make=make_digits,
         stacked=Stacked(DIGITS_MLP, _digits, 64)),
    Task("digits-cnn", "small ConvNet on scikit-learn's 8x8 digits", "accuracy",
         steps=300, eval_every=50, make=make_digits_cnn),
    Task("cancer", "logistic regression on scikit-learn's breast cancer data", "accuracy",
         steps=200, eval_every=25, make=make_cancer),
    Task("quadratic", "ill-conditioned quadratic (dim 20, condition 1e3)", "-log10 f",
         steps=300, eval_every=25, make=make_quadratic),
    Task("rosenbrock", "Rosenbrock's banana function from (-1.2, 1)", "-log10 f",
         steps=500, eval_every=50, make=make_rosenbrock),
    Task("charlm", "character-level MLP language model on the Zen of Python", "-bits/char",
         steps=300, eval_every=50, make=make_charlm),
    Task("mnist1d-mlp", "MLP 40-100-100-10 on MNIST-1D (4,000 train / 1,000 validation)",
         "accuracy", steps=1500, eval_every=300, make=make_mnist1d_mlp,
         stacked=Stacked(mnist1d.MLP, mnist1d.data, mnist1d.BATCH), protocol=mnist1d.PROTOCOL),
    Task("mnist1d-cnn", "small 1-D ConvNet (3 conv + linear) on MNIST-1D", "accuracy",
         steps=1500, eval_every=300, make=make_mnist1d_cnn,
         stacked=Stacked(mnist1d.CNN, mnist1d.data, mnist1d.BATCH), protocol=mnist1d.PROTOCOL),
]}
DEFAULT_TASK = "digits"


def get_task(name: str) -> Task:
    """The task called ``name``; an unknown name is a SearchError with a suggestion."""
    try:
        return TASKS[name]
    except KeyError:
        from optdsl.errors import did_you_mean
        from .errors import SearchError
        raise SearchError(f"unknown task '{name}'{did_you_mean(name, TASKS)}; "
                       f"tasks: {', '.join(TASKS)}") from None
