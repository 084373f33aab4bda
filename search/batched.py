"""Many training runs at once: every (seed, learning rate) copy of a candidate in one model.

The protocol trains a candidate once per seed and learning rate. For a network given as a layer
table (``tasks.Task.stacked``: the MNIST-1D MLP and ConvNet, the digits MLP) the copies differ only
by their initial weights, their minibatch order and their learning rate, so they train as one
stacked model: copy ``c = i_seed * n_lr + i_lr`` starts exactly from the weights of
``task.make(seed)``, sees the minibatches of that seed in the same order, and its linear layers
run as one ``torch.baddbmm`` and its convolutions as one grouped ``conv1d`` (``groups`` = copies).
One step of all copies costs about one forward/backward of a model ``copies`` times as wide.

All parameters of all copies live in one flat buffer of shape ``(copies, P)``; the rule is
applied with the reference interpreter in one of two ways:

* **stacked** (the rule is elementwise and ``lr`` is a factor of its update, ``u = lr * X``:
  every rule of the search spaces, adam, rmsprop, ...): ``X = u(lr=1)`` is computed once for the
  whole buffer (each copy's states sit in its rows) and copy ``c`` moves by ``-lr_c * X_c``.
  A random primitive (``drop``, ``noise``) draws each copy's row from that copy's generator,
  the numbers the per-copy mode draws.
  ``X`` is taken from a copy of the rule that *assigns* ``p := u``, so where the update is
  literally ``lr * X`` a copy's step from given gradients is its own run's; where ``lr`` sits
  deeper (``lr * m / sqrt(v)`` computes ``(lr * m) / sqrt(v)``) the two differ by float
  rounding (one or two ulps of the update).
* **per copy** (``lr`` used elsewhere, as in adamw or adabound, or a per-tensor reduction such
  as ``norm`` in lamb/lars, which must not mix copies): the interpreter steps each copy with
  its own ``lr``: the copy's whole row at once when the rule is elementwise, else each of its
  parameter tensors separately, as the optimizer does for one run. The forward and backward
  stay batched. A rule that draws a scalar per step (``randn()``) runs this way too, so that
  each copy, and so each seed, has draws of its own.

**Not bit for bit.** The gradients are not those of one-at-a-time training to the last bit:
``baddbmm``, the grouped ``conv1d`` and the batched loss sum in other orders (about 1e-7
relative at step 1, in float32). Training amplifies that at a large learning rate: a review
(2026-12-04) measured 0.412 against 0.373 validation accuracy for powersign at lr 0.316, seed 1,
after 120 steps of the MNIST-1D MLP, and a best lr that moved; at small learning rates scores
agree to about 1e-6. A copy's random draws also differ from its own run's (one draw per copy's
row, not per parameter tensor). The one-at-a-time path (``sequential``) is the reference.

Divergence follows ``search.evaluate``: a copy whose training loss is NaN/Inf or exceeds
``task.loss_bound x max(1, first loss)``, or whose parameters or validation metric become
non-finite at a checkpoint, is reported diverged at that step and leaves the stacked model
(``_Buffer``): the others go on, and no later step computes on it.
Random primitives draw from one generator per copy (seeded like ``Optimizer(seed=...)``).
"""
from __future__ import annotations

import dataclasses
import time

import torch
from torch.nn import functional as F

from . import tasks as _tasks

# task name -> (steps, eval_every): digits variants the legacy batched evaluator knows
FAST_TASKS = {"digits": None, "digits-fast": (100, 25)}


def fast_task(name: str):
    """A Task for ``digits`` (the protocol's own) or ``digits-fast`` (100 steps)."""
    base = _tasks.TASKS["digits"]
    if name == "digits":
        return base
    steps, every = FAST_TASKS[name]
    return dataclasses.replace(base, name=name, description=base.description + f", {steps} steps",
                               steps=steps, eval_every=every)


def register_fast_tasks() -> None:
    """Make ``digits-fast`` known to ``tasks.get_task`` (so the engine and store accept it)."""
    for name in FAST_TASKS:
        if name not in _tasks.TASKS:
            _tasks.TASKS[name] = fast_task(name)


# --- the rule ----------------------------------------------------------------------------------
def lr_is_outer(rule) -> bool:
    """True when the update is ``lr * X`` and ``lr`` occurs nowhere else in the rule."""
    from optdsl import ir
    lr = ir.hyper("lr")
    u = rule.update
    return (not rule.assigns_p and u.op == "mul" and lr in u.args
            and lr_is_linear(rule))


def lr_is_linear(rule) -> bool:
    """True when ``lr`` is a factor of the update: it occurs once, reached from the update
    through products, the numerator of quotients and negations only (``lr * m / sqrt(v)``),
    and no state depends on it. Then ``u(lr) = lr * u(1)`` up to rounding."""
    from optdsl import ir
    lr = ir.hyper("lr")
    if rule.assigns_p:
        return False
    states = [s.update for s in rule.slots] + [s.init for s in rule.slots]
    if any(n is lr for n in ir.topological(states)):
        return False
    node = rule.update
    while node is not lr:
        holders = [a for a in node.args if any(n is lr for n in ir.topological([a]))]
        paths = {"mul": node.args, "div": node.args[:1], "neg": node.args}.get(node.op, ())
        if len(holders) != 1 or holders[0] not in paths or node.args.count(holders[0]) != 1:
            return False
        node = holders[0]
    return True


def is_elementwise(rule) -> bool:
    """True when no value of the rule is one per tensor (``norm``, ``dot``, ``mean``)."""
    from optdsl import ir
    roots = rule.outputs() + [s.init for s in rule.slots]
    return all(n.kind != ir.Kind.REDUCED for n in ir.topological(roots))


def draws_scalars(rule) -> bool:
    """True when the rule draws a scalar (``randn()``, per step or in a state's initial value):
    one value for every element, which the stacked copies, sharing their scalars, could not each
    draw for themselves."""
    from optdsl import ir
    from optdsl.probes import random_nodes
    return any(n.kind == ir.Kind.SCALAR for n in random_nodes(rule))


def stacks(rule) -> bool:
    """True when every copy can be stepped at once (the module doc's stacked mode)."""
    return is_elementwise(rule) and lr_is_linear(rule) and not draws_scalars(rule)


def direction_rule(rule):
    """The rule ``p := u`` (``u`` its update): stepping it with ``lr = 1`` leaves ``u(1)`` in p,
    exactly the ``X`` of ``u = lr * X`` (no ``p - (p - X)`` rounding)."""
    return dataclasses.replace(rule, assigns_p=True, new_p=rule.update)


# --- the stacked network -----------------------------------------------------------------------
# Activations are (copies, batch, features) for linear layers and (batch, copies * channels,
# width) for convolutions (so that one grouped conv1d runs every copy).
def _linear(h, w, b):
    return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))


def _conv(h, w, b, stride, padding):
    n = w.shape[0]
    return F.conv1d(h, w.reshape(n * w.shape[1], *w.shape[2:]), b.reshape(-1), stride=stride,
                    padding=padding, groups=n)


def _flatten(h, n):
    return h.reshape(h.shape[0], n, -1).transpose(0, 1)


LAYERS = {  # kind -> (number of parameter tensors, forward(h, params, n_copies, *args))
    "linear": (2, lambda h, ps, n, i, o: _linear(h, *ps)),
    "conv": (2, lambda h, ps, n, i, o, k, s, p: _conv(h, *ps, s, p)),
    "relu": (0, lambda h, ps, n: torch.relu(h)),
    "flatten": (0, lambda h, ps, n: _flatten(h, n)),
}


def stacked_forward(layers, params, x):
    """Logits ``(copies, batch, classes)`` of the stacked network; ``x`` is ``(copies, batch,
    features)``, or ``(batch, features)`` shared by every copy (validation)."""
    n = params[0].shape[0]
    conv = layers[0][0] == "conv"
    if x.dim() == 2:
        x = x.unsqueeze(1).expand(-1, n, -1) if conv else x.expand(n, -1, -1)
    elif conv:
        x = x.transpose(0, 1)
    h, i = x, 0
    for kind, *args in layers:
        k, fn = LAYERS[kind]
        h = fn(h, params[i:i + k], n, *args)
        i += k
    return h


def mean_cross_entropy(logits, targets):
    """Each copy's mean cross-entropy: ``logits`` (copies, batch, classes), ``targets`` (copies,
    batch). The log-softmax runs with the classes on the middle axis: torch's CPU kernel over a
    short innermost axis (10 classes) is 2-3x slower, forward and backward, than over the batch
    (``benchmarks/full_rung_profile.py``); the values differ from ``F.cross_entropy``'s by
    rounding only."""
    logp = torch.log_softmax(logits.transpose(1, 2).contiguous(), 1)  # (copies, classes, batch)
    return -logp.gather(1, targets.unsqueeze(1)).squeeze(1).mean(1)


# --- training ----------------------------------------------------------------------------------
class _Buffer:
    """The parameters of the copies still training: ``flat`` (rows, P), its views ``leaves``
    (the network's parameter tensors, in ``shapes``) and ``ids``, the copy each row holds. A copy
    that dies leaves it (``keep``), so that no later step computes on it: a third of a
    screen's copy-steps were on copies already diverged (evolution, 2026-12-06)."""

    def __init__(self, flat: torch.Tensor, shapes: list, ids: list):
        self.shapes, self.ids = shapes, ids
        self._hold(flat)

    def _hold(self, flat):
        self.flat = flat
        sizes = [int(torch.Size(shape).numel()) for shape in self.shapes]
        self.leaves = [v.view(len(flat), *shape).requires_grad_(True)  # views of flat's storage
                       for v, shape in zip(flat.split(sizes, 1), self.shapes)]

    def keep(self, rows: torch.Tensor) -> None:
        self.ids = [self.ids[i] for i in rows.tolist()]
        self._hold(self.flat[rows].contiguous())


def train_copies(rule, task, seeds, lrs, steps: int, eval_every: int, deadline=None,
                 pause=None, decays=(None,)) -> list:
    """Train one copy per (seed, decay, lr) of ``task``'s network at once (a ``decay``, a name
    of ``evaluate.DECAYS``, multiplies the copy's whole step by that schedule over ``steps``:
    the rule ``evaluate.decayed`` makes; None trains the rule as written).

    Returns one dict per copy, seed-major, then decay-major: ``seed``, ``decay``, ``lr``,
    ``status`` (ok | diverged), ``step`` (where it diverged), ``curve`` ([[step, val accuracy,
    val loss], ...]).
    Raises ``EvaluationTimeout`` past ``deadline`` (a ``time.monotonic()`` value). With
    ``pause = (step, keep_going)`` (a checkpoint step), ``keep_going(runs so far)`` is asked
    at that checkpoint; when it says no, the runs end there.
    """
    from .evaluate import EvaluationTimeout
    spec = task.stacked
    x, y, xv, yv = spec.data()
    grid = [(d, lr) for d in decays for lr in lrs]  # one seed's copies
    R, n = len(grid), len(seeds) * len(grid)
    inits = [task.make(s).params for s in seeds]  # the protocol's initial weights
    rows = torch.stack([torch.cat([p.detach().reshape(-1) for p in ps]) for ps in inits])
    buf = _Buffer(rows.repeat_interleave(R, 0).contiguous(),  # (n, P), seed-major
                  [tuple(p.shape) for p in inits[0]], list(range(n)))
    seed_of = torch.arange(n) // R  # each row's seed (its index in seeds)
    orders = [_tasks._batches(len(x), spec.batch, s) for s in seeds]
    update = _Updater(rule, buf, seeds, grid, steps)
    died: list = [None] * n
    curves: list = [[] for _ in range(n)]
    first = None

    def runs():
        return [{"seed": seeds[c // R], "decay": grid[c % R][0], "lr": grid[c % R][1],
                 "status": "ok" if died[c] is None and curves[c] else "diverged",
                 "step": died[c], "curve": list(curves[c])} for c in range(n)]

    for t in range(1, steps + 1):
        if deadline is not None and time.monotonic() > deadline:
            raise EvaluationTimeout()
        idx = torch.stack([at(t) for at in orders])[seed_of]  # (rows, batch)
        losses = mean_cross_entropy(stacked_forward(spec.layers, buf.leaves, x[idx]), y[idx])
        value = losses.detach()
        if first is None:
            first = torch.where(torch.isfinite(value), value, torch.ones_like(value)).clamp(min=1.0)
        alive = value <= task.loss_bound * first  # NaN compares False
        for i in (~alive).nonzero().flatten().tolist():
            died[buf.ids[i]] = t
        if not bool(alive.any()):
            break
        grads = torch.autograd.grad(losses.masked_fill(~alive, 0).sum(), buf.leaves)
        with torch.no_grad():
            update(grads, alive, t)
        if t % eval_every == 0 or t == steps:
            _checkpoint(spec.layers, buf, xv, yv, t, alive, died, curves)
            if not bool(alive.any()):  # (as one at a time: no pause when none is left)
                break
            if pause and t == pause[0] and t < steps and not pause[1](runs()):
                break
        if t < steps and not bool(alive.all()):  # the dead leave the buffer
            keep = alive.nonzero().flatten()
            buf.keep(keep)
            update.keep(keep)
            first, seed_of = first[keep], seed_of[keep]
    return runs()


class _Updater:
    """``update(grads, alive, t)``: step ``t`` of the rule on the live rows of ``buf`` (the
    module doc's stacked or per-copy mode; stacked, a row that died this step is computed too,
    at lr 0), in place on ``buf.flat``; ``keep(rows)`` follows the buffer's ``keep``: the
    states, rates, decays and generators of the rows kept. A decayed copy (``grid``'s decay)
    runs the rule ``evaluate.decayed`` makes: per copy, that rule itself; stacked, the same
    ``X`` at the rate ``lr_c`` times the schedule at ``t`` (the decayed update is ``f(t) lr_c
    X_c``)."""

    def __init__(self, rule, buf: _Buffer, seeds, grid, steps: int):
        from optdsl.interpreter import Interpreter
        from optdsl.schedules import SCHEDULES
        from .evaluate import DECAYS, decayed
        self.buf, self.stacked = buf, stacks(rule)
        self.gen = [torch.Generator().manual_seed(s) for s in seeds for _ in grid]  # one a copy
        self.decays = [d for d, _ in grid] * len(seeds)  # each row's
        self.schedules = {d: (SCHEDULES[DECAYS[d]], steps) for d in set(self.decays) if d}
        if self.stacked:
            self.interp = Interpreter(direction_rule(rule))
            self.hypers = {**rule.defaults, "lr": 1.0}
            self.state: dict | list = {}
            self.lr = torch.tensor([lr for _, lr in grid], dtype=buf.flat.dtype).repeat(
                len(seeds)).view(-1, 1)
        else:
            self.interps = {d: Interpreter(decayed(rule, d, steps)) for d, _ in grid}
            self.hypers = [{**rule.defaults, "lr": float(lr)} for _, lr in grid] * len(seeds)
            self.state = [[{} for _ in buf.leaves] for _ in buf.ids]
            self.whole_rows = is_elementwise(rule)

    def rates(self, t: int) -> torch.Tensor:
        """Each row's ``lr`` at step ``t``: times its decay's schedule (stacked mode)."""
        if not self.schedules:
            return self.lr
        factors = {d: f(t, steps) for d, (f, steps) in self.schedules.items()}
        return self.lr * torch.tensor([factors[d] if d else 1.0 for d in self.decays],
                                      dtype=self.lr.dtype).view(-1, 1)

    def __call__(self, grads, alive, t: int) -> None:
        flat = self.buf.flat
        if self.stacked:
            g = torch.cat([gr.reshape(len(flat), -1) for gr in grads], 1)
            direction = flat.clone()
            self.interp.step_tensor(direction, g, self.hypers, self.state, {}, self.gen)  # X
            # lr 0 for a copy that died this step: its row (NaN perhaps) leaves the buffer next
            flat.sub_(direction.mul_(self.rates(t) * alive.view(-1, 1)))
            return
        for c in alive.nonzero().flatten().tolist():
            if self.whole_rows:  # one interpreter call per copy, on its whole row
                units = [(flat[c], torch.cat([gr[c].reshape(-1) for gr in grads]))]
            else:  # per-tensor reductions: each tensor of the copy, as the optimizer does
                units = [(p.detach()[c], gr[c]) for p, gr in zip(self.buf.leaves, grads)]
            cache: dict = {}
            for j, (p, gr) in enumerate(units):
                self.interps[self.decays[c]].step_tensor(p, gr, self.hypers[c],
                                                         self.state[c][j], cache, self.gen[c])

    def keep(self, rows: torch.Tensor) -> None:
        kept = rows.tolist()
        if self.stacked:  # every tensor state is (rows, P) (``stored``); scalars are shared
            assert all(v.shape[0] == len(self.gen) for v in self.state.values()
                       if isinstance(v, torch.Tensor))
            self.state = {name: v[rows] if isinstance(v, torch.Tensor) else v
                          for name, v in self.state.items()}
            self.lr = self.lr[rows]
        else:
            self.hypers = [self.hypers[i] for i in kept]
            self.state = [self.state[i] for i in kept]
        self.gen = [self.gen[i] for i in kept]
        self.decays = [self.decays[i] for i in kept]


def _checkpoint(layers, buf: _Buffer, xv, yv, t, alive, died, curves) -> None:
    """Validate every live row; a copy whose weights are no longer finite dies here."""
    with torch.no_grad():
        logits = stacked_forward(layers, buf.leaves, xv)
        n = logits.shape[0]
        acc = (logits.argmax(2) == yv).float().mean(1)
        loss = mean_cross_entropy(logits, yv.expand(n, -1))
        ok = alive & torch.isfinite(buf.flat).all(1)  # as evaluate.train_once: weights decide
    for i, (a, l, fine) in enumerate(zip(acc.tolist(), loss.tolist(), ok.tolist())):
        if not alive[i]:
            continue
        c = buf.ids[i]
        if not fine:
            alive[i] = False
            died[c] = t
            continue
        curves[c].append([t, a, l])


# --- the legacy single-seed evaluator on digits --------------------------------------------------
def evaluate_batched(job: dict) -> dict:
    """Drop-in for ``evaluate.evaluate`` (same job and result dicts) on digits / digits-fast under
    the single-seed protocol (``Protocol.seed``); other jobs go to ``evaluate``."""
    from optdsl import DSLError
    from .evaluate import Protocol, evaluate, new_result, run_scored, settle_worker
    register_fast_tasks()
    if job["task"] not in FAST_TASKS or "seeds" in job["protocol"]:
        return evaluate(job)
    settle_worker()
    task = fast_task(job["task"])
    protocol = Protocol.from_config(job["protocol"])
    out, deadline = new_result(job)

    def train(rule):
        if "lr" not in rule.hypers:
            raise DSLError("the protocol sets lr, which this rule does not declare")
        runs = train_copies(rule, task, [protocol.seed], list(protocol.lr_grid), task.steps,
                            task.eval_every, deadline)
        out["metrics"] = [{"lr": r["lr"], "status": r["status"], "step": r["step"],
                           "best": max(a for _, a, _ in r["curve"]) if r["status"] == "ok"
                           else None, "curve": [[s, a] for s, a, _ in r["curve"]]}
                          for r in runs]

    return run_scored(out, train)
