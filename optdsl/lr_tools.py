"""Learning-rate tools: plotting a schedule formula and the LR range test (Smith 2017).

    optdsl plot-schedule "warmup(t, 500) * cosine(t, 5000)" --steps 5000 -o lr.png
    optdsl lr-range-test adam -o range.png
"""
from __future__ import annotations

import copy
import itertools
import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from . import ir
from .demo import digits_split, mlp
from .errors import DSLError
from .interpreter import Interpreter
from .ir import Kind
from .library import PROGRAMS
from .optimizer import Optimizer
from .rules import parse_embedded


# --- schedules ---------------------------------------------------------------------------------

def schedule_values(formula: str, steps: int) -> np.ndarray:
    """Values of a scalar formula of ``t`` (a multiplier of lr) for t = 1..steps.

    The formula is checked as the rule ``lr * (formula) * g``, so it may use every schedule
    primitive; it must be a step scalar (no g, p or state).
    """
    rule = parse_embedded("lr * (", formula, ") * g")
    schedule = rule.update.args[0].args[1]  # lr * (formula) * g  ->  the formula node
    if schedule.kind != Kind.SCALAR or rule.slots:
        reads = sorted(ir.walk_leaves([schedule], "input") - {"t"})
        makers = sorted({f"{n.op}()" for n in ir.topological([schedule])
                         if n.kind == Kind.TENSOR and not any(a.kind == Kind.TENSOR
                                                              for a in n.args)})
        stateful = sorted({s.origin for s in rule.slots})
        what = (f"it reads {' and '.join(reads)}" if reads else "it keeps a state"
                if rule.slots else f"{', '.join(makers) or 'it'} makes a tensor")
        culprits = reads or [f"{op}(" for op in stateful] or [m[:-1] for m in makers]
        column = _first_use(formula, culprits) or _first_use(formula, [f"{n}(" for n in PROGRAMS])
        raise DSLError(f"a schedule is a formula of t (and numbers), one number per step: "
                       f"{what}", column and 1, column, formula)
    if "lr" in ir.walk_leaves([schedule], "hyper"):  # (it would read the wrapper's default)
        raise DSLError("a schedule is what lr is multiplied by: leave lr out of it "
                       "(warmup(t, 500) * cosine(t, 5000), not lr * ...)")
    interp = Interpreter(rule)
    gen = torch.Generator().manual_seed(0)
    out = np.empty(steps)
    for t in range(1, steps + 1):
        out[t - 1] = interp.scalar_env(rule.defaults, t, {}, gen)[schedule]
    return out


def _first_use(text: str, names: list) -> int | None:
    """The 1-based column of the first of ``names`` (a name, or a call ``op(``) in ``text``
    as a whole word (``g`` not in ``sign``), or None (a library rule's call reads g for the
    schedule: ``t * adam()``)."""
    columns = []
    for name in names:
        word = re.escape(name.rstrip("("))
        after = r"\s*\(" if name.endswith("(") else r"(?![\w(])"  # a call, or a name alone
        found = re.search(r"(?<![\w.])" + word + after, text)
        if found:
            columns.append(found.start() + 1)
    return min(columns, default=None)


def plot_schedule(formula: str, steps: int, path: str) -> np.ndarray:
    import matplotlib  # heavy: imported only to plot
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # heavy
    values = schedule_values(formula, steps)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad) == steps:  # no step a plot could show (an overflow past some step is shown)
        raise DSLError(f"the schedule is {values[0]:g} at t = 1 and at every step to {steps}: "
                       "nothing to plot")
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(np.arange(1, steps + 1), values)
    ax.set_xlabel("step t")
    ax.set_ylabel("multiplier of lr")
    ax.set_title(formula, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return values


# --- the LR range test -------------------------------------------------------------------------

@dataclass
class RangeTestResult:
    lrs: list
    losses: list  # smoothed training loss at each lr
    suggested_lr: float | None  # None: the smoothed loss never fell (start lower)
    diverged_at: float | None  # the lr at which the loss blew up, if it did

    def plot(self, path: str) -> None:
        import matplotlib  # heavy: imported only to plot
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # heavy
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.semilogx(self.lrs, self.losses)
        if self.suggested_lr is not None:
            ax.axvline(self.suggested_lr, color="tab:red", ls="--",
                       label=f"suggested {self.suggested_lr:.2g}")
            ax.legend()
        ax.set_xlabel("learning rate")
        ax.set_ylabel("smoothed training loss")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)


def _range_test_optimizer(model: torch.nn.Module, rule, seed: int, hypers: dict) -> Optimizer:
    """The optimizer of a range test; a DSLError for a rule whose steps no lr changes."""
    opt = Optimizer(model.parameters(), rule, seed=seed, **hypers)
    if "lr" not in opt.rule.read_hypers():
        raise DSLError(f"rule {opt.rule.name} never reads lr: no lr would change its steps "
                       f"(write it into the update, such as lr * ...)")
    return opt


def lr_range_test(model: torch.nn.Module, rule, batches, loss_fn, start_lr: float = 1e-6,
                  end_lr: float = 1.0, steps: int = 100, smoothing: float = 0.9,
                  diverge_factor: float = 4.0, plot: str | None = None, seed: int = 0,
                  **hypers) -> RangeTestResult:
    """Smith's LR range test: train a copy of ``model`` while the LR grows exponentially from
    ``start_lr`` to ``end_lr`` over ``steps`` steps, recording the (exponentially smoothed,
    bias-corrected) training loss. Stops early once the loss exceeds ``diverge_factor`` times
    the best seen. The suggested LR is where the smoothed loss falls fastest (steepest negative
    slope against log lr) before its minimum — the usual reading of the plot — leaving out the
    first ``1 / (1 - smoothing)`` points (10 at 0.9; at most a quarter of them), where the
    smoothed loss is still a few batches' (mini-batch noise read as a fall at ``start_lr``, as
    fastai's ``skip_start`` leaves out); None where it never falls by more than rounding (every
    lr of the range is already too large, or the loss does not depend on it). The model itself
    is not modified.

    ``batches`` is an iterable of (inputs, targets), cycled as needed.

    Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017, sec. 3.3.
    """
    if not (0 < start_lr < end_lr < math.inf):
        raise DSLError(f"the range test needs 0 < start_lr < end_lr < inf, got {start_lr:g} "
                       f"and {end_lr:g}")
    if steps < 3:
        raise DSLError("the range test needs at least 3 steps")
    model = copy.deepcopy(model)
    opt = _range_test_optimizer(model, rule, seed, {**hypers, "lr": start_lr})
    # geometric steps, in log space: end_lr / start_lr overflows for a range such as 1e-308..1e308
    log_start, log_step = math.log(start_lr), (math.log(end_lr) - math.log(start_lr)) / (steps - 1)
    lrs, losses, avg, best, diverged = [], [], 0.0, math.inf, None
    data = itertools.cycle(batches)
    for i in range(steps):
        try:
            x, y = next(data)
        except StopIteration:
            raise DSLError("the range test got no batches: batches is empty") from None
        lr = math.exp(log_start + log_step * i) if i else start_lr  # the first as asked
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        value = loss.item()
        if not math.isfinite(value):
            diverged = lr
            break
        avg = smoothing * avg + (1 - smoothing) * value
        smoothed = avg / (1 - smoothing ** (i + 1))
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if i > 5 and smoothed > diverge_factor * best:
            diverged = lr
            break
    if len(lrs) < 3:
        raise DSLError("the loss diverged at once: lower start_lr")
    result = RangeTestResult(lrs, losses, _steepest_fall(lrs, losses, smoothing), diverged)
    if plot:
        result.plot(plot)
    return result


def _steepest_fall(lrs: list, losses: list, smoothing: float):
    """The lr where the smoothed loss falls fastest against log lr before its minimum, after
    the first ``1 / (1 - smoothing)`` points (at most a quarter); None for no fall beyond
    rounding (``lr_range_test``)."""
    slopes = np.gradient(np.array(losses), np.log(np.array(lrs)))
    skip = min(round(1 / (1 - smoothing)), len(lrs) // 4) if smoothing < 1 else len(lrs) // 4
    stop = int(np.argmin(losses)) + 1  # only where the loss still goes down
    window = slopes[skip:max(stop, skip + 2)]
    steepest = skip + int(np.argmin(window)) if len(window) else 0
    fall = 1e-9 * max(abs(v) for v in losses)  # below: rounding of the smoothing, not a fall
    return lrs[steepest] if slopes[steepest] < -fall else None


def digits_range_test(rule, steps: int = 100, plot: str | None = None, **options) -> RangeTestResult:
    """The range test on the digits MLP of ``optdsl train`` (batches of 64); ``options`` go to
    ``lr_range_test`` (start_lr, end_lr, hyperparameters)."""
    (xt, yt), _ = digits_split()
    batches = [(xt[i:i + 64], yt[i:i + 64]) for i in range(0, len(xt) - 63, 64)]
    return lr_range_test(mlp(), rule, batches, torch.nn.functional.cross_entropy,
                         steps=steps, plot=plot, **options)
