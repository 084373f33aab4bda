"""The one evaluation protocol every candidate and every baseline goes through.

A candidate rule is trained on a proxy task once per learning rate of a small log grid
(its other hyperparameters keep their defaults), from the same seed. Each run is validated
every ``task.eval_every`` steps; the candidate's **score is the best validation metric** over
all checkpoints of all learning rates (higher is better).

A run *diverges* when the training loss or a parameter becomes NaN/Inf, or the loss exceeds
``task.loss_bound x max(1, first loss)``: that run is recorded as diverged at its step, never
raised. A candidate is ``ok`` when at least one learning rate survives, ``diverged`` when none
does. The whole grid has a wall-clock limit: past it the evaluation stops and is recorded as
``timeout`` (checked between steps and, where the evaluation runs on a main thread, by
``SIGALRM`` so that a step that blocks is interrupted too).

:func:`evaluate` takes and returns plain dicts so it can run anywhere (in-process, in a Ray
worker) and its result goes straight into the store.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import math
import os
import signal
import socket
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace

from .tasks import Task, get_task

STATUSES = ("ok", "diverged", "timeout", "failed")
BASELINES = {  # leaderboard name -> library rule
    "sgd-momentum": "momentum",
    "adam": "adam",
    "rmsprop": "rmsprop",
    "powersign": "powersign",
    "addsign": "addsign",
}


# Half decades from 1e-4 to 10^0.5: the finer grid of the rediscovery benchmark. On the default
# grid (decades) a constant factor inside a rule wins by moving it between grid points.
HALF_DECADES = tuple(float(f"{10 ** (k / 2):.4g}") for k in range(-8, 2))


LEGACY_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)


@dataclass(frozen=True)
class Protocol:
    """How a candidate is scored on a task (what the cache key covers besides the rule).

    The single-seed protocol (``"protocol": 1``, the default of tasks without ``Task.protocol``):
    ``lr_grid`` (default decades 1e-4..1) and ``seed``. The multi-seed protocol
    (``"protocol": 2``, ``search/fidelity.py``; the default of tasks with ``Task.protocol``, or
    asked for with ``seeds``/``screen``): ``lr_grid``, ``seeds``, ``screen`` (the screening
    rung, ``{}`` for none), ``middle`` (the full rung's middle checkpoint, 0 for none) and
    ``confirm`` (the seeds in all of the confirming rung, 0 for none: the config lists the
    seeds it adds to ``seeds``) and ``decays`` (names of ``DECAYS`` the full rung also trains
    every run with, ``()`` for none); unset fields take the task's defaults.
    """
    lr_grid: tuple | None = None
    seed: int = 0
    seeds: tuple | None = None
    screen: dict | None = None
    middle: int | None = None
    confirm: int = 0
    decays: tuple = ()

    @property
    def grid(self) -> tuple:
        return tuple(self.lr_grid or LEGACY_GRID)

    def config(self, task: Task) -> dict:
        defaults = task.protocol
        if defaults is None and self.seeds is None and self.screen is None:
            if self.confirm:
                raise ValueError(f"{task.name} is scored on one seed: there is nothing for a "
                                 "confirming rung to add seeds to")
            if self.decays:
                raise ValueError(f"{task.name} is scored on one seed, without the multi-seed "
                                 "protocol's grid of decays")
            return {**task.config(), "lr_grid": list(self.grid), "seed": self.seed,
                    "protocol": 1}
        defaults = defaults or {}
        screen = self.screen if self.screen is not None else defaults.get("screen")
        middle = self.middle if self.middle is not None else defaults.get("middle")
        config = {**task.config(), "protocol": 2,
                  "lr_grid": list(self.lr_grid or defaults.get("lr_grid") or LEGACY_GRID),
                  "seeds": list(self.seeds or defaults.get("seeds") or (0, 1, 2)),
                  "screen": dict(screen or {})}
        if middle:  # only where there is one: the other protocols keep their keys
            config["middle"] = int(middle)
        confirm = self.confirm or defaults.get("confirm", 0)
        if confirm:  # (likewise)
            seeds = config["seeds"]
            if confirm <= len(seeds):
                raise ValueError(f"the confirming rung needs more seeds than the full rung's "
                                 f"{len(seeds)}, not {confirm}")
            config["confirm"] = [max(seeds) + 1 + k for k in range(confirm - len(seeds))]
        decays = self.decays or defaults.get("decays", ())
        unknown = [d for d in decays if d not in DECAYS]
        if unknown:
            raise ValueError(f"unknown decay {unknown[0]!r}; known: {', '.join(DECAYS)}")
        if decays:  # (likewise)
            config["decays"] = list(dict.fromkeys(decays))
        return config

    def key(self, task: Task) -> str:
        """A short stable id of (task, protocol): results are cached per rule and key."""
        blob = json.dumps(self.config(task), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @classmethod
    def from_config(cls, config: dict) -> "Protocol":
        if config.get("protocol", 1) == 1:
            return cls(lr_grid=tuple(config["lr_grid"]), seed=int(config["seed"]))
        extra = config.get("confirm") or []
        return cls(lr_grid=tuple(config["lr_grid"]), seeds=tuple(config["seeds"]),
                   screen=dict(config["screen"]), middle=config.get("middle", 0),
                   confirm=len(config["seeds"]) + len(extra) if extra else 0,
                   decays=tuple(config.get("decays") or ()))


class EvaluationTimeout(Exception):
    """Raised inside a run when the evaluation's time limit has passed."""


def _importing(frame) -> bool:
    """Whether the interrupted code is inside an import (importlib's frames on its stack)."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


MAX_ALARM = 1e9  # seconds (31 years): the longest alarm _alarm sets


@contextmanager
def _alarm(seconds: float):
    """Interrupt the block with EvaluationTimeout after ``seconds`` (main thread only), but not
    inside an import: a timeout that fired during a worker's first evaluation, while it imported
    torch._dynamo (1.5 s, on the first ``optdsl.Optimizer``), left sympy half-imported in
    that process, and every later evaluation there failed with "module 'sympy' has no
    attribute 'core'"."""
    usable = (seconds and seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def fire(signum, frame):
        if _importing(frame):  # never leave a module half-imported: try again just after
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            return
        raise EvaluationTimeout()
    old = signal.signal(signal.SIGALRM, fire)
    # a limit past what the timer takes (time_t: 1e19 s and up raise OverflowError) is none
    signal.setitimer(signal.ITIMER_REAL, min(seconds, MAX_ALARM))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _finite_params(params) -> bool:
    import torch
    return all(bool(torch.isfinite(p).all()) for p in params)


def train_once(task: Task, rule, lr: float, seed: int, deadline: float | None,
               steps: int | None = None, eval_every: int | None = None,
               with_loss: bool = False) -> dict:
    """One training run at one learning rate: {'lr', 'status', 'best', 'curve', 'step'}.

    ``status`` is ``ok`` or ``diverged`` (``step``: where); ``curve`` is [[step, metric], ...]
    (``[step, metric, validation loss]`` with ``with_loss``). ``steps`` and ``eval_every``
    default to the task's. Raises EvaluationTimeout past ``deadline`` (a time.monotonic() value).
    """
    import torch
    from optdsl import Optimizer, UnreadHyperparameterWarning

    torch.manual_seed(seed)
    problem = task.make(seed)
    # The interpreter: a compiled backend would spend seconds compiling each candidate. A
    # candidate that never reads lr trains alike at every lr of the grid: no warning per run.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreadHyperparameterWarning)
        opt = Optimizer(problem.params, rule, backend="eager", seed=seed, lr=lr)
    steps, eval_every = steps or task.steps, eval_every or task.eval_every
    curve: list = []
    first = None
    for t in range(1, steps + 1):
        if deadline is not None and time.monotonic() > deadline:
            raise EvaluationTimeout()
        opt.zero_grad(set_to_none=True)
        loss = problem.loss(t)
        value = float(loss.detach())
        if first is None:
            first = value if math.isfinite(value) else 1.0
        if not math.isfinite(value) or value > task.loss_bound * max(1.0, first):
            return {"lr": lr, "status": "diverged", "step": t, "best": None, "curve": curve}
        loss.backward()
        opt.step()
        if t % eval_every == 0 or t == steps:
            metric = problem.validate() if _finite_params(problem.params) else float("nan")
            if not math.isfinite(metric):
                return {"lr": lr, "status": "diverged", "step": t, "best": None, "curve": curve}
            curve.append([t, metric, problem.val_loss()] if with_loss else [t, metric])
    best = max(point[1] for point in curve)
    return {"lr": lr, "status": "ok", "step": None, "best": best, "curve": curve}


# decay name -> the schedule (``optdsl.schedules``) that multiplies the whole step over a run's
# steps: the protocol's ``decays`` (``search.fidelity``)
DECAYS = {"cosine": "cosine_decay"}


def decayed(rule, decay: str | None, steps: int):
    """``rule`` with its whole step multiplied by the schedule ``DECAYS[decay]`` over ``steps``
    (``u' = cosine_decay(t, steps) u``, ``p' = p - u'``; for a rule that assigns ``p``, ``p' = p
    - cosine_decay(t, steps) (p - new_p)``): what the program ``cosine_decay(t, steps) * (...)``
    computes. ``rule`` itself for ``decay`` None."""
    if decay is None:
        return rule
    from optdsl import ir
    from optdsl.schedules import SCHEDULES
    schedule = SCHEDULES[DECAYS[decay]]
    rest = [ir.const(schedule.defaults[name]) for name in schedule.params[1:]]
    factor = ir.node(schedule.name, (ir.T, ir.const(steps), *rest))
    update = ir.node("mul", (factor, rule.update))
    return replace(rule, name=f"{rule.name}_{decay}", update=update,
                   new_p=ir.node("sub", (ir.P, update)))


def settle_worker() -> None:
    """Set the process up for training candidates (every evaluation calls it): one torch thread
    (tiny models: more threads only add contention between workers) and an allocator that keeps
    the memory it frees (:func:`_keep_freed_memory`)."""
    import torch
    torch.set_num_threads(1)
    _keep_freed_memory()


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


@functools.cache
def _keep_freed_memory() -> None:
    """Fix glibc's allocator thresholds: blocks up to 32 MB (its largest mmap threshold) come
    from the heap, and up to 512 MB of freed heap stays with the process.

    A training step allocates and frees tensors of a few hundred KB (a rule's intermediates on
    the stacked buffer, activations); with glibc's adaptive thresholds the freed memory kept
    going back to the system and was faulted in again on the next step: 585,868 page faults in
    40 screens of evolved rules (73 a step), against 2,222-2,629 with fixed thresholds, and
    6-10% of those screens' time (BENCHMARKS.md). Nothing changes where the C library has no
    ``mallopt``."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(M_MMAP_THRESHOLD, 32 << 20)
    mallopt(M_TRIM_THRESHOLD, 512 << 20)


def evaluate(job: dict) -> dict:
    """Score one rule on one task under one protocol.

    ``job``: ``rule`` (program text), ``task`` (name), ``protocol`` (``Protocol.config``) and
    ``time_limit`` (seconds; 0 or None for none); a multi-seed protocol goes to
    ``fidelity.evaluate_multi`` (which also reads ``promote_above``). Returns the store's row
    fields: ``status``, ``score``, ``best_lr``, ``diverged_step``, ``metrics`` (one entry per learning rate),
    ``curve`` (validation curve at the best learning rate), ``error``, ``duration``,
    ``worker``, ``started_at``, ``finished_at``. A rule that diverges or runs out of time is a
    result, not an exception; an unexpected exception propagates (the runner retries it once).
    """
    if job["protocol"].get("protocol", 1) == 2:
        from .fidelity import evaluate_multi
        return evaluate_multi(job)
    settle_worker()
    task = get_task(job["task"])
    protocol = Protocol.from_config(job["protocol"])
    task.make(protocol.seed)  # a worker's first job loads the data here, outside the clock
    out, deadline = new_result(job)
    runs = out["metrics"]

    def train(rule):
        for lr in protocol.lr_grid:
            runs.append(train_once(task, rule, lr, protocol.seed, deadline))

    def timeout_message():
        return f"during lr={protocol.lr_grid[len(runs)]:g}"

    return run_scored(out, train, timeout_message)


def new_result(job: dict):
    """A result row before training (worker, start time) and the evaluation's deadline."""
    started, t0 = time.time(), time.monotonic()
    limit = job.get("time_limit") or None
    out = {"status": None, "score": None, "best_lr": None, "diverged_step": None, "metrics": [],
           "curve": [], "error": None, "worker": f"{socket.gethostname()}:{os.getpid()}",
           "started_at": started, "_t0": t0, "_limit": limit, "_rule": job["rule"]}
    return out, (t0 + limit if limit else None)


def run_scored(out: dict, train, timeout_message=lambda: "", score=None) -> dict:
    """Parse the rule, ``train(rule)`` (which fills ``out["metrics"]`` with one run per learning
    rate) and ``score(out)`` the runs (default: ok with the best validation metric if any
    learning rate survived, else diverged; ``fidelity`` passes its own); a timeout or an input
    error is a result, not an exception."""
    from optdsl import DSLError, parse
    t0, limit = out.pop("_t0"), out.pop("_limit")
    try:
        with _alarm(limit):
            train(parse(out.pop("_rule")))
    except EvaluationTimeout:
        out["status"] = "timeout"
        out["error"] = f"time limit of {limit:g} s reached {timeout_message()}".rstrip()
    except DSLError as e:  # e.g. a hyperparameter the protocol sets is invalid for this rule
        out["status"] = "failed"
        out["error"] = str(e).splitlines()[0]
    else:
        (score or _best_run)(out)
    out["finished_at"] = time.time()
    out["duration"] = time.monotonic() - t0
    return out


def _best_run(out: dict) -> None:
    runs = out["metrics"]
    ok = [r for r in runs if r["status"] == "ok"]
    if ok:
        best = max(ok, key=lambda r: r["best"])
        out.update(status="ok", score=best["best"], best_lr=best["lr"], curve=best["curve"])
    else:
        steps = [r["step"] for r in runs if r.get("step") is not None]
        out.update(status="diverged", diverged_step=min(steps) if steps else None)


def summarize(result: dict) -> str:
    """A short human description of a result: 'ok 0.962 at lr=0.1', 'diverged at step 3', ..."""
    s = result["status"]
    if s == "ok":
        return f"ok {result['score']:.4g} at lr={result['best_lr']:g}"
    if s == "diverged":
        return f"diverged at step {result['diverged_step']}"
    return f"{s}: {result.get('error') or ''}".rstrip(": ")


__all__ = ["BASELINES", "DECAYS", "Protocol", "STATUSES", "EvaluationTimeout", "decayed",
           "evaluate", "summarize", "train_once", "LEGACY_GRID"]
