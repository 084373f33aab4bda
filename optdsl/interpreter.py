"""The reference evaluator: a Rule's IR evaluated node by node with eager torch ops.

Step scalars (hyperparameters, ``t``, schedules, scalar states) are computed once per step in
float64 with NumPy's IEEE semantics; everything per tensor is computed with torch in the
parameter's dtype. This is the semantics every compiled backend must reproduce.

The bookkeeping around a step (initialising new tensors' states, counting steps, caching the
scalars, the state storage policy, grouping tensors) lives in ``optdsl.host`` and is shared by
every backend; :meth:`Interpreter.step_tensor` strings the pieces together for one tensor
(probes, the search's batched trainer, tests).
"""
from __future__ import annotations

import numpy as np
import torch

from . import ir
from .errors import ScheduleError
from .ir import Kind, Rule
from .primitives import PRIMITIVES


class Interpreter:
    """Evaluates one rule over tensors; holds no tensors itself (state lives in dicts)."""

    def __init__(self, rule: Rule):
        self.rule = rule
        roots = [rule.new_p if rule.assigns_p else rule.update] + [s.update for s in rule.slots]
        self.order = ir.topological(roots)
        self.scalar_order = [n for n in self.order if n.kind == Kind.SCALAR and n.op != "state"]
        # the arguments with a range that read t or a scalar state (``ema(g, b * t)``) and
        # that the step computes: checked at every step, as the schedules check theirs (the
        # checker and the Optimizer check the others once)
        computed = set(self.scalar_order)
        self.step_checks = [(name, param, node) for name, param, node in rule.range_checks
                            if node in computed and any(m.op in ("input", "state")
                                                        for m in ir.topological([node]))]
        self.tensor_order = [n for n in self.order if n.kind != Kind.SCALAR]
        self.tensor_release = _releases(self.tensor_order, keep=roots)
        self.init_order = ir.topological([s.init for s in rule.slots])
        self.scalar_slots = [s for s in rule.slots if s.kind == Kind.SCALAR]
        self.tensor_slots = [s for s in rule.slots if s.kind != Kind.SCALAR]
        # the leaves each step fills in, looked up once here rather than on the hot path
        self.hyper_leaves = {name: ir.hyper(name) for name in rule.hypers}
        self.scalar_reads = [(s.name, ir.state_read(s.name, s.kind)) for s in self.scalar_slots]
        self.tensor_reads = [(s.name, ir.state_read(s.name, s.kind)) for s in self.tensor_slots]
        # the storage dtypes the program declares (``m: bfloat16 = ...``), kept by ``step_tensor``
        self.declared = {s.name: getattr(torch, rule.state_dtypes[s.name])
                         for s in self.tensor_slots if s.name in rule.state_dtypes}

    # --- evaluation ----------------------------------------------------------------------------
    @staticmethod
    def _eval(order, env: dict, scalar: bool, generator=None, like=None, release=None):
        """Evaluate ``order`` into ``env``; after a node in ``release``, drop the values whose
        last use it was (``_releases``)."""
        for n in order:
            if n in env:
                continue
            op = n.op
            if op == "const":
                env[n] = n.value
            elif op in ("hyper", "input", "state"):
                raise KeyError(f"no value for {op} {n.value!r}")
            else:
                prim = PRIMITIVES[op]
                args = [env[a] for a in n.args]
                if scalar or n.kind == Kind.SCALAR:
                    env[n] = prim.scalar_fn(generator, *args) if prim.random else prim.scalar_fn(*args)
                elif prim.random:
                    env[n] = prim.torch_fn(generator, like, *args)
                else:
                    env[n] = prim.torch_fn(*args)
                if release and n in release:
                    for dead in release[n]:
                        del env[dead]
        return env

    def scalar_env(self, hypers: dict, t: int, state: dict, generator=None) -> dict:
        """Every step scalar at step ``t`` (the values of the SCALAR nodes, float64)."""
        env = {ir.T: float(t)}
        for name, value in hypers.items():
            env[self.hyper_leaves[name]] = float(value)
        for name, read in self.scalar_reads:
            env[read] = state[name]
        with np.errstate(all="ignore"):
            env = self._eval(self.scalar_order, env, scalar=True, generator=generator)
        for name, param, node in self.step_checks:
            wording = PRIMITIVES[name].out_of_range(param, env[node])
            if wording:
                raise ScheduleError(name, t, f"{param} is {env[node]:g}; {param} {wording}")
        return env

    def init_state(self, p: torch.Tensor, grad: torch.Tensor, hypers: dict, state: dict,
                   generator=None):
        """Evaluate the slots' initial values (at the tensor's first step) into ``state``."""
        env = {ir.T: 1.0, ir.P: p, ir.G: grad}
        for name, value in hypers.items():
            env[self.hyper_leaves[name]] = float(value)
        with np.errstate(all="ignore"):
            self._eval(self.init_order, env, scalar=False, generator=generator, like=p)
        taken = set()
        for s in self.rule.slots:
            v = stored(env[s.init], s.kind, p, grad)
            if isinstance(v, torch.Tensor):  # one tensor per state (two inits may be one node)
                v = v.clone() if id(v) in taken else v
                taken.add(id(v))
            state[s.name] = v

    def tensor_step(self, p, grad, scalars: dict, state: dict, generator=None,
                    state_dtypes: dict | None = None):
        """One step of one tensor given this step's ``scalars`` (``scalar_env``): writes the
        new tensor states into ``state`` (rounded to ``state_dtypes[name]`` where given; they
        are read in the parameter's dtype) and updates ``p`` in place; returns the update it
        subtracted (None for a rule that assigns ``p``). Scalar slots are the host's
        (``optdsl.host``)."""
        env = dict(scalars)
        env[ir.P], env[ir.G] = p, grad
        for name, read in self.tensor_reads:
            v = state[name]
            env[read] = v if v.dtype == p.dtype else v.to(p.dtype)
        self._eval(self.tensor_order, env, scalar=False, generator=generator, like=p,
                   release=self.tensor_release)
        new = {}
        for s in self.tensor_slots:
            v = stored(env[s.update], s.kind, p, grad)
            if state_dtypes and s.name in state_dtypes:
                v = v.to(state_dtypes[s.name])
            new[s.name] = v
        out = _write_in_place(state, new, env[self.rule.new_p if self.rule.assigns_p
                                              else self.rule.update])
        if self.rule.assigns_p:
            p.copy_(out)
            return None
        if out is p:  # 'return p': the update is read after p changes
            out = p.clone()
        p.sub_(out)
        return out

    def step_tensor(self, p, grad, hypers: dict, state: dict, scalars_cache: dict, generator=None):
        """One whole step of one tensor (state initialised at its first step, the step counted,
        the scalars computed once per (t, scalar states) through ``scalars_cache``). Returns
        the update subtracted from ``p`` as the rule computed it (broadcast to ``p``), or None
        for a rule that assigns ``p``. Tensor states are stored in the dtypes the program
        declares, as the Optimizer stores them."""
        if "step" not in state:
            state["step"] = 0
            self.init_state(p, grad, hypers, state, generator)
            for name, dtype in self.declared.items():
                state[name] = state[name].to(dtype)
        state["step"] += 1
        key = (state["step"], tuple(state[s.name] for s in self.scalar_slots))
        if key not in scalars_cache:
            scalars_cache[key] = self.scalar_env(hypers, state["step"], state, generator)
        env = scalars_cache[key]
        update = self.tensor_step(p, grad, env, state, generator, self.declared)
        for s in self.scalar_slots:
            state[s.name] = float(env[s.update])
        return None if update is None else torch.as_tensor(update, dtype=p.dtype).expand_as(p)


def _releases(order, keep) -> dict:
    """node -> the intermediates of ``order`` last used by it, which can be dropped after it.

    Holding every intermediate to the end of a step keeps (number of nodes) tensors alive at
    once; freed after its last use, a value's memory is taken by the next allocation, pages
    already mapped and likely still in cache (a chain of 30 ops on 300 KB tensors, a fresh
    process: 110 us an op holding all, 14 us releasing them). ``keep`` (the update, the new
    states) stays."""
    computed = {n for n in order if n.op not in ("const", "hyper", "input", "state")}
    last = {}
    for n in order:
        for a in n.args:
            last[a] = n
    release: dict = {}
    for value, user in last.items():
        if value in computed and value not in keep:
            release.setdefault(user, []).append(value)
    return release


def trajectory(rule: Rule, hypers: dict, p0: torch.Tensor, grads, seed: int = 0) -> list:
    """The updates u_1..u_k (``p_before - p_after``) of ``rule`` run from ``p0`` on the gradient
    sequence ``grads`` with the reference interpreter; ``p0`` is not modified."""
    return list(updates(rule, hypers, p0, grads, seed))


def updates(rule: Rule, hypers: dict, p0: torch.Tensor, grads, seed: int = 0):
    """The updates of :func:`trajectory`, one step at a time (the caller may stop early)."""
    interp = Interpreter(rule)
    p, state = p0.clone(), {}
    gen = torch.Generator().manual_seed(seed)
    for g in grads:
        before = p.clone()
        with np.errstate(all="ignore"):
            interp.step_tensor(p, g.clone(), hypers, state, {}, gen)
        yield before - p


def _write_in_place(state: dict, new: dict, out):
    """Give the state tensors themselves a step's new values (``copy_`` into their memory), as
    torch.optim and the compiled backends update theirs in place: a reference to a state taken
    before the step (another parameter's gradient, a user's variable, a view of it such as
    ``m[:10]`` kept for logging) sees the new value. A new value, or the
    step's result ``out``, that is a state tensor itself (``a := b``, ``return s``: last
    step's value) is copied first, so that no state's move changes what another reads.
    Returns ``out``, copied where it was such a tensor."""
    states = {id(t) for t in (state.get(name) for name in new) if isinstance(t, torch.Tensor)}
    new = {name: v.clone() if id(v) in states else v for name, v in new.items()}
    out = out.clone() if id(out) in states else out
    for name, v in new.items():
        old = state.get(name)
        if (isinstance(old, torch.Tensor) and old.shape == v.shape and old.dtype == v.dtype
                and old.device == v.device):
            old.copy_(v)  # (set_ would move it to v's memory: a view taken before is stale)
        else:  # the first step's, or one whose storage form changed
            state[name] = v
    return out


def stored(value, kind: Kind, p: torch.Tensor, grad: torch.Tensor):
    """A state value in its storage form: float (scalar), 0-d tensor (reduced) or p-shaped
    tensor, never the parameter or the gradient itself (``state s = p``, ``prev(g)``): p is
    updated in place and the gradient belongs to the caller."""
    if kind == Kind.SCALAR:
        return float(value)
    if value is p or value is grad:
        value = value.clone()
    if not isinstance(value, torch.Tensor):
        value = torch.tensor(float(value), dtype=p.dtype, device=p.device)
    if kind == Kind.TENSOR and value.shape != p.shape:
        value = value.expand_as(p).clone()
    if value.dtype != p.dtype:
        value = value.to(p.dtype)
    return value
