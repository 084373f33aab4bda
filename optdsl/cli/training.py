"""Commands that train or plot: ``train``, ``plot-schedule``, ``lr-range-test``."""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch

from ..demo import train_digits
from ..errors import HyperparameterError, UnreadHyperparameterWarning
from ..optimizer import Optimizer
from . import (COMMANDS, count, load_rule, name_values, plot_file, positive_number,
               seed_number)


def cmd_train(argv) -> int:
    ap = argparse.ArgumentParser(prog="optdsl train", description=COMMANDS["train"][1])
    ap.add_argument("rule", help="a library name, a program file or a formula")
    ap.add_argument("--epochs", type=count(1), default=20,
                    help="passes over the training set (default 20)")
    ap.add_argument("--batch-size", type=count(1), default=64,
                    help="examples per step (default 64)")
    ap.add_argument("--seed", type=seed_number, default=0,
                    help="seeds the train/validation split, the weights' initialisation and "
                         "the batch order (default 0)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="set a hyperparameter (repeatable), e.g. --set beta1=0.95")
    ap.add_argument("--lr", type=float, help="shorthand for --set lr=VALUE")
    args = ap.parse_args(argv)
    rule = load_rule(args.rule)
    hypers = {k: _number(k, v) for k, v in name_values(args.set, "--set",
                                                        HyperparameterError).items()}
    if args.lr is not None:
        if "lr" in hypers and not hypers["lr"] == args.lr:  # (NaN included: refused below)
            raise HyperparameterError(f"--lr {args.lr:g} and --set lr={hypers['lr']:g} give lr "
                                      "twice (which one was meant?)")
        hypers["lr"] = args.lr
    torch.set_num_threads(1)
    # bad names fail before training (on the interpreter: a backend's warnings come once,
    # below), and a value set that the rule never reads is said here, once
    Optimizer([torch.zeros(1, requires_grad=True)], rule, backend="eager", **hypers)
    shown = ", ".join(f"{k}={v}" for k, v in {**rule.defaults, **hypers}.items())
    print(f"training a 64-64-10 MLP on digits with {rule.name}({shown})")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadHyperparameterWarning)  # (said once, above)
        result = train_digits(rule, args.epochs, args.batch_size, args.seed, **hypers)
    print(f"validation accuracy {result['accuracy']:.4f}  ({time.perf_counter() - start:.1f} s)")
    if result["diverged"]:
        print(f"diverged: the train loss is not finite from epoch {result['diverged']} on (a "
              "smaller --lr?); the accuracy is the diverged model's")
    return 0


def _number(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise HyperparameterError(f"--set {name}={text}: not a number") from None


def cmd_plot_schedule(argv) -> int:
    from ..lr_tools import plot_schedule  # matplotlib: imported only by the plotting commands
    ap = argparse.ArgumentParser(prog="optdsl plot-schedule",
                                 description="Plot a schedule formula of t (a multiplier of lr) to a "
                                             "PNG (or another format, by the file's name).")
    ap.add_argument("formula", help='e.g. "warmup(t, 500) * cosine(t, 5000)"')
    ap.add_argument("--steps", type=count(1), default=1000)
    ap.add_argument("-o", "--output", type=plot_file, default="schedule.png",
                    help="the plot's file (.png unless named otherwise; default schedule.png)")
    args = ap.parse_args(argv)
    values = plot_schedule(args.formula, args.steps, args.output)
    bad = np.flatnonzero(~np.isfinite(values))
    shown = values[np.isfinite(values)]  # (plot_schedule refuses a schedule with none)
    print(f"wrote {args.output}: {args.steps} steps, min {shown.min():.4g}, max "
          f"{shown.max():.4g}" + (" of the finite ones" if len(bad) else "")
          + f", last {values[-1]:.4g}")
    if len(bad):
        print(f"note: {len(bad)} of {args.steps} steps are not finite, the first at t = "
              f"{bad[0] + 1} ({values[bad[0]]:g}); the plot leaves them out")
    return 0


def cmd_lr_range_test(argv) -> int:
    from ..lr_tools import digits_range_test  # matplotlib: imported only by the plotting commands
    ap = argparse.ArgumentParser(prog="optdsl lr-range-test",
                                 description="LR range test (Smith 2017) of a rule on the digits MLP.")
    ap.add_argument("rule", help="a library name, a program file or a formula")
    ap.add_argument("--steps", type=count(3), default=100)
    ap.add_argument("--start-lr", type=positive_number(), default=1e-6)
    ap.add_argument("--end-lr", type=positive_number(), default=1.0)
    ap.add_argument("-o", "--output", type=plot_file,
                    help="write the loss-vs-lr plot to this file (.png unless named otherwise)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    result = digits_range_test(load_rule(args.rule), steps=args.steps, plot=args.output,
                               start_lr=args.start_lr, end_lr=args.end_lr)
    for lr, loss in list(zip(result.lrs, result.losses))[:: max(1, len(result.lrs) // 12)]:
        print(f"lr {lr:10.3g}  loss {loss:.4f}")
    if result.diverged_at:
        print(f"loss diverged at lr {result.diverged_at:.3g}")
    plot = f"  (plot: {args.output})" if args.output else ""
    if result.suggested_lr is None:
        print(f"no lr suggested: the smoothed loss never fell from {result.lrs[0]:.3g} on "
              f"(every lr of the range is too large): try a lower --start-lr{plot}")
        return 1
    print(f"suggested lr: {result.suggested_lr:.3g}{plot}")
    return 0
