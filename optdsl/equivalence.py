"""Are two rules the same optimizer? Prove it, refute it with a counterexample, or say unknown.

Two rules are *equivalent* when, from their initial states, every gradient sequence
``g_1, g_2, ...`` and every starting parameter ``p_0`` give the same parameter trajectory
(for the hyperparameter values considered, see below). Four methods, cheapest first:

1. **Numeric probing** (fast refutation): both rules run in the reference interpreter (float64)
   on random gradient sequences for a few hyperparameter draws. A difference is re-evaluated on
   a one-element tensor and reported as a concrete counterexample (hyperparameters, ``p_0``,
   ``g_1..g_t``, the two updates at step ``t``).
2. **Single-step proof with a state correspondence**: a map ``sigma`` from the live states of one
   rule to those of the other (found automatically: a renaming, or several states of one rule
   that always hold the same value, as ``prev(ema(g))`` and the ``ema`` itself) such that the
   initial values agree, each state update agrees under ``sigma`` and the updates agree, for all
   ``g, p, t``, all states and all hyperparameters. By induction on ``t`` this proves equal
   trajectories for every number of steps. Where the rules take signs of the gradient and of
   states (``sign(g)``, ``sign(ema(g, 0.9))``), the step is first compared in each case of
   those signs, each rule computed node by node from the case's numbers as the language
   computes it (``log|sign(g) + sign(m)|`` is -inf where the signs disagree, and ``g / (-inf +
   1e-8)`` is 0); a case with a NaN or an infinity times a value proves nothing, unless a
   ``where`` drops it as the language does (``where(g == 0, 0, lr / g)`` at g = 0). States that
   always hold the same value (two ``ema(g, 0.9)`` of one program) are read as one. The step
   at ``g = 0`` exactly is then compared too, for every real value of the states (a zero
   gradient is an input like any other; the generic-point proof above does not cover it), a
   domain marker that g = 0 multiplies away kept as a ``nan_where`` term; and a value that
   holds a marker with a coefficient 0 at generic points (``g (1 - |sign(g)|) sqrt(m)`` is 0
   to sympy, NaN at m < 0) is no identity (``_unbalanced``). Under ``domain="defined"`` too:
   the first rule's undefined points there (raw Lion's ``c / sqrt(c^2)`` at ``c = 0.9 m``, m =
   0) are cases of the signs, where its update may be NaN. Where a state starts at an infinity
   (``runmax``, ``prev(g, -inf)``), which no real value of the states covers, or the initial
   values put a sign's argument or a divisor at exactly 0 (a null set the step proof leaves
   out: ``exp(-1 / prev(g, 0)^2)``), step 1 is compared as well, the states read as their
   initial values (``exp(-inf)`` is 0), and every state must be finite after it; a state that
   stays infinite gets no proof, nor one that a zero gradient makes infinite (``prev(1 / g,
   1)``), nor a parameter where a rule reads it. A step that leaves a state at a constant
   (``s := 0 * g`` at every step, ``prev(g, 1)`` after a zero gradient) is followed the same
   way: where that constant puts such a point at 0, the next step is compared from it
   (``_agree_where_states_land``). A sign of a state or of a sum (``sign(ema(g, 0.9))``,
   ``sign(g + prev(g))``) takes the value 0 as a case of its own: it is 0 for inputs that
   occur (g = 1, -0.9 and g = 1, -1), and ``g sqrt|sign(g) + sign(m)|`` is AddSign at every
   other input only. Only a single term in g alone (``0.1 g``, ``g^2``) is left to the step at
   g = 0. In a case a node computes with what the case fixes (``|c| = c sign(c)``, so raw
   Lion's ``c / sqrt(c^2)`` is NaN where sign(c) = 0; a domain marker of a value the case
   makes positive is dropped); under ``domain="defined"`` the first rule's update may be NaN
   in a case, which then asks only that the states agree (a NaN held in a state may come out
   finite at a later step). A state declared in another storage dtype (``m: float16``)
   corresponds only to one declared alike.
3. **Induction from step 1 with proportional states** (``scaled_step``): each state of one
   rule is a constant multiple ``c`` (a function of hyperparameters) of one of the other's after
   step 1, computed from the initial values at t = 1, and at every step t >= 2 where that holds
   the updates agree and it holds again: torch's Nesterov buffer vs. the lecture's rewrite
   (``m = lr b``), heavy-ball vs. EMA momentum (``m = (1 - momentum) b``), whose buffers start
   as ``b_1 = g``.
4. **k-step unrolling**, when neither finds a correspondence: ``g_1..g_k`` and ``p_0``
   symbols, states eliminated by substitution, the parameter after each of the first ``k`` steps
   compared. Equal first ``k`` steps are no proof (``t <= 5`` is true until step 6): the verdict is
   ``unknown`` with method ``unrolled(k=K)``. Whenever nothing is proved, numeric probing of
   ``LONG_STEPS`` steps looks for a counterexample first (one it finds refutes the pair).

*Every* input counts, exact zeros included: ``g / g`` is not ``1`` (NaN at ``g = 0``), nor
``c / sqrt(c^2)`` ``sign(c)``. The probes try exact zeros, ones, repeats and negated repeats
of the gradient, gradients that put each ``ema(g, b)`` at exactly 0 (``g_1 = 1``, ``g_2 =
-b``: ``lr g (ema(g, 0.9) != 0)`` is not ``lr g``), and each hyperparameter at 0 and at 1 in
turn (where an Optimizer takes it). The proof takes hyperparameters as generic (an equation of one and constants,
``momentum == 0``, as false), and the probes run a few steps only: where 0 or 1 puts a
divisor of either rule at 0 for every input (``wd`` in ``wd (g / wd + p)``), and at each root
of such an equation an Optimizer takes, the proof is made again (``_at_singular_values``).
Proofs are over the real numbers: float rounding, overflow and underflow are not modelled
(``sign(g^3)`` is ``sign(g)``, though ``g^3`` underflows to 0 in float32 below 1e-15). With ``domain="defined"`` the question is instead whether the
second rule agrees with the first wherever the first's update is defined (finite): what
``optdsl.simplify`` proves of its output, whose ``sign(c)`` gives 0 where the input was NaN.

Hyperparameters: a name both rules use is one shared symbol (random in probing); ``bind`` fixes
names to values; ``hyper_map`` replaces hyperparameters of the *first* rule by expressions over
the second's (``{"lr": "lr / (1 - momentum)"}``); a name only one rule uses is fixed at its
default. ``timeout`` is a wall-clock budget for the whole: probing before the proof gets at most
half of it, the symbolic phase (in a forked process) what is left, and probing after it what is
left then. A probe stops when its share is spent, past the ``LONG_STEPS`` steps of the default
probes (milliseconds), and says how many steps it compared; a difference found by then is a
counterexample as any other. Without a proof by the end of the budget the answer is ``unknown``,
with the numeric evidence.
"""
from __future__ import annotations

import copy
import itertools
import math
import multiprocessing
import operator
import random
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from . import ir
from .check import validate_hyper, validate_hyper_values
from .errors import DSLError, HyperparameterError, did_you_mean
from .interpreter import Interpreter, updates
from .ir import Kind, Rule
from .primitives import PRIMITIVES, STATE_CALLS
from .probes import gradient_stream, is_random, with_special_values
from .rules import parse, parse_embedded

PROVED, REFUTED, UNKNOWN = "proved", "refuted", "unknown"
DOMAINS = {"all": "for every input", "defined": "wherever the first rule's update is finite"}


@dataclass
class Counterexample:
    """A concrete input on which the two rules' updates differ (re-evaluated by the interpreter)."""
    hypers: dict  # name -> value (the values of both rules' hyperparameters that vary or are bound)
    p0: list
    grads: list  # one list per step, g_1 .. g_t
    step: int  # t at which the updates first differ
    update_a: list
    update_b: list
    reevaluated: bool = True

    def __str__(self) -> str:
        def digits(x):
            return 6 if len(x) == 1 else 4

        def v(x, d=0):  # an update: enough digits to tell the two apart (``apart``)
            n = digits(x) + d
            return f"{x[0]:.{n}g}" if len(x) == 1 else "[" + ", ".join(f"{y:.{n}g}" for y in x) + "]"

        def exact(x):  # an input: every digit, so that the counterexample reruns as printed
            return repr(x[0]) if len(x) == 1 else "[" + ", ".join(repr(y) for y in x) + "]"

        def apart(d):  # the updates, printed with d more digits, differ where they differ
            n = digits(self.update_a) + d
            return d >= 13 or all(f"{x:.{n}g}" != f"{y:.{n}g}"
                                  for x, y in zip(self.update_a, self.update_b)
                                  if x != y and not (x != x and y != y))
        d = next(d for d in range(14) if apart(d))
        gs = ", ".join(f"g{i + 1}={exact(g)}" for i, g in enumerate(self.grads)) \
            if self.step > 1 else f"g={exact(self.grads[0])}"
        hs = "".join(f", {k}={val!r}" for k, val in self.hypers.items())
        return (f"at t={self.step}, {gs}, p={exact(self.p0)}{hs}: update {v(self.update_a, d)} vs "
                f"{v(self.update_b, d)}" + (" (re-evaluated)" if self.reevaluated else ""))


@dataclass
class Verdict:
    """The answer of ``equivalent``: ``status`` is proved, refuted or unknown."""
    status: str
    method: str  # numeric | single-step | unrolled(k=K) (unknown) | timeout | random | ...
    detail: str = ""
    counterexample: Counterexample | None = None
    elapsed: float = 0.0
    mapping: dict = field(default_factory=dict)  # state of one rule -> state of the other
    evidence: str = ""  # what numeric probing saw
    note: str = ""  # shared names the rules default differently (``Pair.apart``)

    @property
    def proved(self) -> bool:
        return self.status == PROVED

    @property
    def refuted(self) -> bool:
        return self.status == REFUTED

    def __bool__(self) -> bool:
        return self.proved

    def __str__(self) -> str:
        note = f"; {self.note}" if self.note else ""
        if self.status == REFUTED:
            return (f"refuted: {self.counterexample}" if self.counterexample
                    else f"refuted: {self.detail}") + note
        if self.status == PROVED:
            return f"proved equivalent ({self.detail}){note}"
        return f"unknown: {self.detail}" + (f" ({self.evidence})" if self.evidence else "") + note


# --- the two rules and their hyperparameters -----------------------------------------------

class Pair:
    """Two rules with their hyperparameters resolved: free (shared), bound, mapped or default."""

    def __init__(self, a: Rule, b: Rule, bind=None, hyper_map=None, domain: str = "all"):
        if domain not in DOMAINS:
            raise DSLError(f"domain must be one of {', '.join(DOMAINS)}, not {domain!r}")
        self.a, self.b, self.domain = a, b, domain
        bind = dict(bind or {})
        hyper_map = dict(hyper_map or {})
        names_a, names_b = set(self.a.hypers), set(self.b.hypers)
        for k in bind:
            if k not in names_a | names_b:
                raise DSLError(f"bind: neither rule has a hyperparameter '{k}'"
                               + did_you_mean(k, names_a | names_b))
            try:  # the checks of Optimizer(..., k=value): beta1=2 is no rule's beta1
                bind[k] = validate_hyper(k, bind[k])
            except HyperparameterError as e:
                raise HyperparameterError(f"bind: {e.message}") from None
        for rule in (a, b):  # a bound value each rule's schedules refuse (sgdr's T_0 = 0) is
            validate_hyper_values(rule, {**rule.defaults, **{  # refused, as an Optimizer does,
                k: v for k, v in bind.items() if k in rule.hypers}})  # even for one program
        self.maps = {}  # name in a -> IR node over hyper leaves
        for k, text in hyper_map.items():
            if k not in names_a:
                raise DSLError(f"hyper_map: the first rule has no hyperparameter '{k}'"
                               + did_you_mean(k, names_a))
            self.maps[k] = _map_expression(str(text), {**self.b.defaults, **self.a.defaults})
        used_a = (names_a - set(self.maps)) | {n for m in self.maps.values()
                                               for n in ir.walk_leaves([m], "hyper")}
        self.defaults = {**self.b.defaults, **self.a.defaults}
        self.bound = {k: bind[k] for k in bind}
        # a shared name both rules declare with different defaults (adam(lr=0.1) against
        # adam(lr=0.001)) is two values, each rule's own, as a name only one rule has; an
        # undeclared lr (a formula's) takes the other rule's
        self.apart = {h: (self.a.defaults[h], self.b.defaults[h])
                      for h in sorted((used_a & names_a & names_b) - set(bind) - set(self.maps))
                      if float(self.a.defaults[h]).hex() != float(self.b.defaults[h]).hex()
                      and not (self.a.hypers[h].implicit or self.b.hypers[h].implicit)}
        self.free = sorted(((used_a & names_b) - set(bind) - set(self.apart)))
        # a name neither bound nor shared is fixed at the default of the rule that reads it
        # (a mapped name of the first rule and the second's own name of it are two names)
        self.fixed_a = {h: self.a.defaults[h] for h in names_a
                        if h not in bind and h not in self.free}
        self.fixed_b = {h: self.b.defaults[h] for h in names_b
                        if h not in bind and h not in self.free}
        self.random = is_random(self.a) or is_random(self.b)
        self.reduces = any(n.kind == Kind.REDUCED for r in (self.a, self.b)
                           for n in ir.topological(r.outputs()))

    def values(self, free: dict) -> tuple:
        """Hyperparameter dicts for rule a and rule b, from values of the free names."""
        env_a, env_b = self.environments(free)
        vb = {h: env_b[h] for h in self.b.hypers}
        va = {}
        for h in self.a.hypers:
            va[h] = _eval_scalar(self.maps[h], env_b) if h in self.maps else env_a[h]
        return va, vb

    def environments(self, free: dict) -> tuple:
        """(names rule a reads, names rule b and the maps read) -> values: bound, free, each
        rule's own defaults (a map reads the second rule's names, the first's where only it
        has one)."""
        shared = {**self.bound, **free}
        return ({**self.fixed_a, **shared},
                {**self.fixed_a, **self.fixed_b, **shared})

    def draws(self, n: int, rng: random.Random) -> list:
        """``n`` assignments of the free names: the defaults first, then random values; then
        one more for each name and each of 0 and 1 that is not its default and that an
        Optimizer accepts for it, the others at their defaults (``weight_decay=0`` is common,
        and ``wd * x / wd`` is NaN there; ``dampening=1`` and ``(1 - d) x / (1 - d)``)."""
        out = [{h: self.defaults[h] for h in self.free}]
        for _ in range(n - 1):
            out.append({h: _perturb(self.defaults[h], rng) for h in self.free})
        return out + [{**out[0], h: v} for h in self.free for v in (0.0, 1.0)
                      if self.defaults[h] != v and self.accepts(h, v)]

    def accepts(self, name: str, value: float) -> bool:
        """Whether an Optimizer takes free name ``name`` at ``value`` (the others at their
        defaults), and every hyper_map then gives the first rule a value it takes."""
        return _accepted(name, value) and self._mapped_accepted(
            {**{h: self.defaults[h] for h in self.free}, name: value})

    def at(self, name: str, value: float) -> "Pair":
        """This pair with free name ``name`` bound to ``value``."""
        pair = copy.copy(self)
        pair.bound = {**self.bound, name: float(value)}
        pair.free = [h for h in self.free if h != name]
        return pair

    def mapped(self, free: dict | None = None) -> dict:
        """The first rule's hyperparameters that ``hyper_map`` gives, name -> value, at
        ``free`` (the free names' defaults when None)."""
        va = self.values({h: self.defaults[h] for h in self.free} if free is None else free)[0]
        return {k: va[k] for k in self.maps}

    def _mapped_accepted(self, free: dict) -> bool:
        """Whether every hyper_map gives the first rule a value an Optimizer takes at
        ``free`` (lr / (1 - momentum) at momentum = 1 is none)."""
        try:
            mapped = self.mapped(free)
        except ArithmeticError:
            return False
        return all(_accepted(k, v) for k, v in mapped.items())


def _accepted(name: str, value: float) -> bool:
    """Whether an Optimizer takes ``value`` for a hyperparameter called ``name`` (beta1 = 1 is
    no rule's beta1: a difference there is none a user can run into)."""
    try:
        validate_hyper(name, value)
    except HyperparameterError:
        return False
    return True


def _perturb(d: float, rng: random.Random) -> float:
    """A random value near the default ``d``; a whole number from 2 up stays whole (a step
    count such as sgdr's ``T_0``, which a schedule's check rejects otherwise)."""
    if d == 0:
        return rng.uniform(0.01, 0.5)
    if 0 < d < 1:
        return rng.uniform(0.05, 0.95) if d >= 0.05 else d * math.exp(rng.uniform(-1, 1))
    if d >= 2 and d == int(d) and d < 2 ** 53:
        return float(max(1, round(d * math.exp(rng.uniform(-0.7, 0.7)))))
    return d * math.exp(rng.uniform(-0.7, 0.7))


def _map_expression(text: str, defaults: dict) -> ir.Node:
    """A hyper_map value (language syntax over hyperparameter names, read with the rules'
    ``defaults``, which the program check accepts) as an IR node."""
    header = ", ".join(f"{h}={v!r}" for h, v in sorted(defaults.items()) if h != "lr")
    prefix = f"hyper_map(lr=1{', ' if header else ''}{header}) = lr * 0 + ("
    try:
        rule = parse_embedded(prefix, text, ")")
    except DSLError as inner:
        raise type(inner)(f"hyper_map: cannot read '{text}': {inner.message}", inner.line,
                          inner.column, inner.source) from None
    node = rule.update.args[1]
    if node.kind != Kind.SCALAR or ir.walk_leaves([node], "input") or _draws(node) \
            or ir.walk_leaves([node], "state"):  # prev(lr), runmax(lr): no value at a step
        raise DSLError(f"hyper_map: '{text}' must be a function of hyperparameters only")
    return node


def _draws(node: ir.Node) -> bool:
    """Whether ``node`` draws random numbers (``randn()``)."""
    return any(n.op in PRIMITIVES and PRIMITIVES[n.op].random for n in ir.topological([node]))


def _eval_scalar(node: ir.Node, env: dict) -> float:
    values = {ir.T: 1.0, **{ir.hyper(k): float(v) for k, v in env.items()}}
    with np.errstate(all="ignore"):
        Interpreter._eval(ir.topological([node]), values, scalar=True)
    return float(values[node])


# --- 1. numeric probing -------------------------------------------------------------------

STEPS_PROBED = 4
LONG_STEPS = 16  # probed when there is no proof for every step (t <= 5 differs at step 6)
# (a probe stops at its deadline only past LONG_STEPS steps: the default probes always run whole)
ELEMENTS = 24
DRAWS = 6


def _differ(ua, ub, p, domain: str = "all") -> torch.Tensor:
    """Elementwise: the updates differ beyond rounding (nan only on one side counts; with
    domain "defined", only where ``ua`` is finite)."""
    nan_a, nan_b = torch.isnan(ua), torch.isnan(ub)
    scale = torch.maximum(ua.abs(), ub.abs())
    finite = torch.isfinite(ua) & torch.isfinite(ub)
    close = finite & ((ua - ub).abs() <= 1e-6 * scale + 1e-12 * (1 + p.abs()))
    close = close | (ua == ub)  # infinities: equal only to themselves
    differ = torch.where(nan_a | nan_b, nan_a != nan_b, ~close)
    return differ & torch.isfinite(ua) if domain == "defined" else differ


def probe(pair: Pair, steps: int = STEPS_PROBED, draws: int = DRAWS, seed: int = 0,
          deadline: float | None = None, end: float | None = None):
    """(counterexample or None, evidence text): run both rules on random inputs and compare.
    Past ``deadline`` (a ``time.perf_counter()`` value) each draw stops after ``LONG_STEPS``
    steps, and the evidence says how many steps every draw compared; a difference found is
    evaluated again until ``end`` (default: ``deadline``)."""
    rng = random.Random(seed)
    trng = torch.Generator().manual_seed(seed)
    compared = []  # steps each draw compared
    for i, free in enumerate(pair.draws(draws, rng)):
        va, vb = pair.values(free)
        p0, grads = gradient_stream(trng, steps, ELEMENTS)
        if i % 2:  # every other draw: exact zeros, ones and repeats too (generic-point
            p0, grads = with_special_values(  # identities fail there)
                p0, grads, _ema_betas(pair.a, va) + _ema_betas(pair.b, vb))
        try:
            ua, ub, grads = _lockstep(pair, va, vb, p0, grads, deadline)
        except (ValueError, ArithmeticError):  # a draw a schedule's argument check rejects
            if i == 0:  # (T_mult = 1.3, T_0 = 0), or a quotient of Python floats by a 0
                raise
            for _ in itertools.takewhile(lambda g: not _past(deadline), grads):
                pass  # the next draws' inputs as if it had run (unless out of time)
            continue
        compared.append(len(ua))
        p = p0
        for t in range(len(ua)):
            bad = _differ(ua[t], ub[t], p, pair.domain)
            if bad.any():
                if pair.random:
                    return None, ("the rules draw random numbers and differ on equal seeds "
                                  "(draw order may differ): no conclusion")
                e = int(bad.nonzero()[0, 0])
                return _counterexample(pair, free, va, vb, p0, grads, t, e,
                                       (ua[t], ub[t]), end or deadline), ""
            p = p - ua[t]
    if compared and min(compared) < steps:
        reached = f"{min(compared)}" + (f" to {max(compared)}" if max(compared) > min(compared)
                                        else "")
        return None, (f"numeric probing: {len(compared)} hyperparameter draws x {ELEMENTS} inputs "
                      f"agree for the first {reached} of {steps} steps (the time budget stopped "
                      "them)")
    return None, (f"numeric probing: {len(compared)} hyperparameter draws x {ELEMENTS} inputs x "
                  f"{steps} steps agree")


def _ema_betas(rule: Rule, values: dict) -> tuple:
    """The decays ``b`` of the rule's ``ema(g, b)`` states (``b`` a constant or of
    hyperparameters), at ``values``: where the probe makes such an ema exactly 0
    (``with_special_values``)."""
    found = []
    for slot in rule.slots:
        call = STATE_CALLS["ema"](slot, ir.state_read(slot.name, slot.kind))
        if call is None or call[0] is not ir.G:
            continue
        beta = call[1]
        if not ir.walk_leaves([beta], "input") and not ir.walk_leaves([beta], "state"):
            b = _eval_scalar(beta, values)
            if 0.0 < b < 1.0 and b not in found:
                found.append(b)
    return tuple(found)


def _lockstep(pair: Pair, va: dict, vb: dict, p0, grads, deadline: float | None):
    """(updates of a, updates of b, gradients): both rules run together on the gradients that
    ``grads`` yields, until its end or, past ``LONG_STEPS`` steps, ``deadline``."""
    read, ua, ub = [], [], []
    run_a = updates(pair.a, va, p0, iter(read))  # each step reads the gradient appended last
    run_b = updates(pair.b, vb, p0, iter(read))
    for g in grads:
        read.append(g)
        ua.append(next(run_a))
        ub.append(next(run_b))
        if len(read) >= LONG_STEPS and _past(deadline):
            break
    return ua, ub, read


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.perf_counter() > deadline


def _counterexample(pair, free, va, vb, p0, grads, t, e, found, deadline=None) -> Counterexample:
    """The difference probing ``found`` (the two updates) at step ``t + 1``, element ``e``,
    evaluated again: alone (an elementwise rule), else on the whole input; past ``deadline``
    (and ``LONG_STEPS`` steps), the probe's own updates on the whole input, not re-evaluated."""
    hypers = {**{k: v for k, v in free.items()}, **pair.bound,
              **{f"{k} (first rule)": va[k] for k in pair.maps}}
    if not pair.reduces:  # elementwise rules: the one element alone is a counterexample
        p1 = p0[e:e + 1].clone()
        g1 = [g[e:e + 1].clone() for g in grads[:t + 1]]
        ua, ub, _ = _lockstep(pair, va, vb, p1, g1, deadline)
        for s in range(len(ua)):
            if _differ(ua[s], ub[s], p1, pair.domain).any():
                return Counterexample(hypers, p1.tolist(), [g.tolist() for g in g1[:s + 1]], s + 1,
                                      ua[s].tolist(), ub[s].tolist(), True)
    ua, ub, _ = _lockstep(pair, va, vb, p0, grads[:t + 1], deadline)
    if len(ua) <= t:  # out of time: the interpreter's updates on this input, as probing saw them
        return Counterexample(hypers, p0.tolist(), [g.tolist() for g in grads[:t + 1]], t + 1,
                              found[0].tolist(), found[1].tolist(), False)
    confirmed = bool(_differ(ua[t], ub[t], p0, pair.domain).any())
    return Counterexample(hypers, p0.tolist(), [g.tolist() for g in grads[:t + 1]], t + 1,
                          ua[t].tolist(), ub[t].tolist(), confirmed)


# --- 2 and 3. symbolic proofs (run in a child process under a deadline) ---------------------

def _symbols(pair: Pair, sp_mod):
    """sympy values of every hyperparameter of a and of b."""
    from .symbolic import hyper_symbol, number, translate  # sympy: only for the proofs
    env_a, env_b = pair.environments({})
    env_a = {h: number(v) for h, v in env_a.items()}
    env_b = {h: number(v) for h, v in env_b.items()}
    for env in (env_a, env_b):
        env.update({h: hyper_symbol(h) for h in pair.free})
    hb = {h: env_b[h] for h in pair.b.hypers}
    ha = {}
    for h in pair.a.hypers:
        if h in pair.maps:
            node = pair.maps[h]
            ha[h] = translate([node], lambda n: env_b[n.value] if n.op == "hyper"
                              else sp_mod.Integer(1))[node]
        else:
            ha[h] = env_a[h]
    return ha, hb


class _Side:
    """One rule translated for a single step: update and slots over symbols for previous values."""

    def __init__(self, rule: Rule, hypers: dict, tag: str, case_of: "_Side | None" = None,
                 signs: dict | None = None, gradient=None, first: bool | None = None,
                 start: dict | None = None, defined_only: bool = False):
        import sympy as sp  # heavy: only for the proofs
        from .symbolic import DEFINED, live_slots  # sympy
        self.rule, self.hypers, self.tag = rule, hypers, tag
        # the first rule under domain="defined": a case where its update is an infinity or
        # NaN (raw Lion's c / sqrt(c^2) where c = 0) asks nothing of the update, its states
        # must still agree (a NaN held in a state may come out finite later)
        self.defined_only = case_of.defined_only if case_of is not None else defined_only
        self.g, self.p = sp.Symbol("g", real=True), sp.Symbol("p", real=True)
        self.gradient = gradient  # a case's value of g (0), or None: g is a symbol
        self._at_zero = None  # this side translated again with g = 0 (``at_zero``)
        # the first step: t = 1, each state read as its initial value (an infinity included)
        self.first = first if first is not None else bool(case_of and case_of.first)
        # a later step from states a step left at constants (``_agree_where_states_land``)
        self.start = start if start is not None else (case_of.start if case_of else {})
        self.signs = signs
        # a state is a nonnegative symbol when that is proved by induction: its initial value
        # is nonnegative, and so is its update while every such state is (ema(g^2), a max of
        # squares); then sqrt(v) + eps is positive and sign(m / (sqrt(v) + eps)) = sign(m)
        # (and a state is read with a marker where its initial value or update has one, until
        # no more do; and as its twin, once one is found: ``_twins``)
        if case_of is not None:  # one case of the signs of ``case_of``: its facts about the
            # states hold at every step, which those the case's signs would give need not
            # (ema(sign(g)) is nonnegative only while sign(g) = 1 at every step)
            self.sym, self.exprs, init = self._translated(*case_of.facts)
            self.facts = case_of.facts
            self.live = case_of.live
            self.init = {s.name: init[s.name] for s in self.live}
            self.every_init = init
            return
        nonneg, wild, twins = {s.name for s in rule.slots}, set(), {}
        while True:
            self.sym, self.exprs, init = self._translated(nonneg, wild, twins)
            held = {n for n in nonneg if init[n].is_nonnegative and self.exprs[n].is_nonnegative
                    and not _may_be_nan(init[n]) and not _may_be_nan(self.exprs[n])}
            marked = {n for n in init if init[n].has(DEFINED) or self.exprs[n].has(DEFINED)}
            found = self._twins(init)
            if held == nonneg and marked <= wild and found == twins:
                break
            nonneg, wild, twins = held, wild | marked, found
        self.facts = (nonneg, wild, twins)
        self.live = live_slots(rule, self.exprs, self.sym)
        self.init = {s.name: init[s.name] for s in self.live}
        self.every_init = init

    def _translated(self, nonneg: set, wild: set, twins: dict) -> tuple:
        """(state symbols, the step's expressions, the initial values) of the rule, states
        in ``nonneg`` nonnegative symbols, those in ``wild`` read with their marker, twins as
        their first; sets ``lost``."""
        import sympy as sp  # heavy: only for the proofs
        from .symbolic import DEFINED, T_SYMBOL, leaf_map, lost_domains, translate  # sympy
        rule, hypers, gradient = self.rule, self.hypers, self.gradient
        inputs = {"g": self.g, "p": self.p, "t": sp.Integer(1) if self.first else T_SYMBOL}
        sym = {s.name: sp.Symbol(f"{self.tag}:{s.name}", real=True,
                                 **({"nonnegative": True} if s.name in nonneg else {}))
               for s in rule.slots}
        # a state whose value may be NaN or infinite is read with its marker, so that
        # 0 * s and s - s (NaN there) are seen to drop it; a twin is read as its first
        reads = {k: x * DEFINED(x) if k in wild else x for k, x in sym.items()}
        reads.update({k: reads[first] for k, first in twins.items()})

        def leaves(inputs, reads):  # and, in the case g = 0, with it
            return dict(leaf=leaf_map(hypers, inputs, reads), domains=True, signs=self.signs,
                        zero_leaf=None if gradient is None
                        else leaf_map(hypers, {**inputs, "g": gradient}, reads))
        init = translate([s.init for s in rule.slots],
                         **leaves({**inputs, "t": sp.Integer(1)}, reads))
        if self.first:
            reads = {s.name: init[s.init] for s in rule.slots}
        reads.update(self.start)
        tr = translate([rule.update] + [s.update for s in rule.slots], **leaves(inputs, reads),
                       may_be_not_finite=(rule.update,) if self.defined_only else ())
        exprs = {"update": tr[rule.update], **{s.name: tr[s.update] for s in rule.slots}}
        inits = {s.name: init[s.init] for s in rule.slots}
        # a hyperparameter equal to a constant (momentum == 0) is a special value: generic here,
        # and the proof is made again at it (_at_singular_values)
        exprs = {k: _generic(e, hypers) for k, e in exprs.items()}
        inits = {k: _generic(e, hypers) for k, e in inits.items()}
        # at g = 0 every marker a node drops is kept as a nan_where term, but those a
        # where or a sign drops (as the language does): none is lost
        self.lost = gradient is None and (lost_domains(tr, exprs.values())
                                          or lost_domains(init, inits.values()))
        return sym, exprs, inits

    def at_zero(self) -> "_Side":
        """This side translated again with g = 0, once (every state correspondence and every
        check after the step proof reads it); raises what the translation raises."""
        import sympy as sp  # heavy: only for the proofs
        if self._at_zero is None:
            self._at_zero = _Side(self.rule, self.hypers, self.tag, self, gradient=sp.Integer(0))
        return self._at_zero

    def _twins(self, init: dict) -> dict:
        """{state: the earlier state it always equals}: twins have equal initial values and
        the same update of their own previous value (by induction on t they are equal), as
        the two ``ema(g, 0.9)`` of ``(1 + sign(g) sign(ema(g, 0.9))) + (1 - sign(g)
        sign(ema(g, 0.9)))``, two states of the program. Each is then read as the first, so
        that a domain marker that cancels between them (``g log(x) - g log(x')``) is seen in
        translation (``lost``)."""
        firsts, twins = [], {}
        stored = self.rule.state_dtypes  # a state stored in bfloat16 is no twin of a float one
        for slot in self.rule.slots:
            name, own = slot.name, self.sym[slot.name]
            first = next((k for k in firsts if init[k] == init[name] and self.exprs[name].xreplace(
                {own: self.sym[k]}) == self.exprs[k] and stored.get(k) == stored.get(name)), None)
            if first is None:
                firsts.append(name)
            else:
                twins[name] = first
        return twins


def _may_be_nan(e) -> bool:
    """Whether ``e`` holds a root, a non-integer power or a log (NaN of a negative number in
    the language, which sympy's assumptions do not see: |sqrt(x)| is 'nonnegative'), or an
    opaque call."""
    import sympy as sp  # heavy: only for the proofs
    from sympy.core.function import AppliedUndef  # sympy: only for the proofs
    return (any(not r.exp.is_Integer for r in e.atoms(sp.Pow)) or bool(e.atoms(sp.log))
            or bool(e.atoms(AppliedUndef)))


def _numeric_close(exprs, points, sp) -> bool:
    """Screen: each expression is ~0 at the points (non-numbers, e.g. opaque calls, pass; so
    does a point where a root's argument is negative: states such as ``ema(g^2)`` are drawn
    with either sign, and the expression is not real there)."""
    for pt in points:
        for e in exprs:
            if _outside_real_domain(e, pt, sp):
                continue
            try:
                v = e.xreplace(pt)
                v = v.evalf(30) if not v.is_Number else v
            except Exception:
                continue
            if v.is_Number and v.is_finite and abs(float(v)) > 1e-12:
                return False
    return True


def _outside_real_domain(e, pt, sp) -> bool:
    """Whether a root (a power with a fractional exponent) in ``e`` has a negative argument
    at ``pt``."""
    for r in e.atoms(sp.Pow):
        if r.exp.is_Rational and not r.exp.is_Integer:
            try:
                v = r.base.xreplace(pt).evalf(15)
            except Exception:
                continue
            if v.is_Number and v < 0:
                return True
    return False


def _points(symbols, sp, n=3, seed=1, wide: bool = False):
    """``n`` random points: magnitudes in [0.2, 2] (``wide``: 1e-3 to 1e6, and the step t
    to 10,000)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        pt = {}
        for s in sorted(symbols, key=str):
            if s.is_integer:
                pt[s] = sp.Integer(rng.randint(1, 10_000 if wide and rng.random() < 0.5 else 6))
            else:  # a nonnegative state (ema(g^2)) is drawn nonnegative
                sign = 1 if s.is_nonnegative else rng.choice([-1, 1])
                size = 10 ** rng.uniform(-3, 6) if wide else rng.uniform(0.2, 2.0)
                pt[s] = sp.Float(sign * size, 30)
        out.append(pt)
    return out


def _maps(src_side: _Side, dst_side: _Side, limit: int = 400):
    """Functions from src's live states to dst's (same kind, same declared storage dtype: a
    state rounded to float16 at every step is no other rule's float state), bijections first;
    then partial ones, a state left out standing for any value (adam's ``v`` where the update
    reads only ``sign(m / (sqrt(v) + eps))``: the proof must then hold for every value of it)."""
    src, dst = src_side.live, dst_side.live
    if not src:
        yield {}
        return
    stored_src, stored_dst = src_side.rule.state_dtypes, dst_side.rule.state_dtypes

    def fits(s, d):
        return d.kind == s.kind and stored_dst.get(d.name) == stored_src.get(s.name)
    options = [[d for d in dst if fits(s, d)] for s in src]
    if len(src) == len(dst):
        for perm in itertools.permutations(dst):
            if all(fits(s, p) for p, s in zip(perm, src)):
                yield dict(zip((s.name for s in src), (p.name for p in perm)))
    n = 0
    for combo in itertools.product(*options):
        if len(src) == len(dst) and len(set(id(c) for c in combo)) == len(combo):
            continue  # a bijection: already tried
        n += 1
        if n > limit:
            return
        yield {s.name: c.name for s, c in zip(src, combo)}
    for combo in itertools.product(*[o + [None] for o in options]):
        if None not in combo:
            continue  # a total function: already tried
        n += 1
        if n > limit:
            return
        yield {s.name: c.name for s, c in zip(src, combo) if c is not None}


LOST = ("a root or log of a value that may be negative, or a divisor that may be 0, cancels "
        "away (NaN there, not the value sympy's identity gives): no proof for every input")


def single_step(pair: Pair):
    """(proved?, mapping, text) — a state correspondence under which one step agrees: as
    expressions, or else in every case of the signs they take (``_agree_by_sign_cases``)."""
    import sympy as sp  # heavy: only for the proofs
    ha, hb = _symbols(pair, sp)
    # (not with a per-tensor reduction: a NaN update at one element makes p NaN there, and
    # mean(p) at every other element)
    A = _Side(pair.a, ha, "a", defined_only=pair.domain == "defined" and not pair.reduces)
    B = _Side(pair.b, hb, "b")
    if A.lost or B.lost:
        return False, {}, LOST
    for src, dst, flip in ((B, A, False), (A, B, True)):
        for sigma in _maps(src, dst):
            diffs = _differences(src, dst, sigma)
            if _apart(diffs):
                continue
            # by cases first: each is small (and one that differs is found at once), where
            # the whole expression may send sympy's simplify off for minutes; a case that
            # differs at a point of its own says the whole does, and spares that
            apart = []
            if ((_agree_by_sign_cases(src, dst, sigma, apart)
                 or (not apart and _proved_zero(diffs, src, dst, sigma)))
                    and _agree_at_zero_gradient(src, dst, sigma)
                    and _agree_at_first_step(src, dst, sigma)
                    and _agree_where_states_land(src, dst, sigma)):
                return True, sigma, _mapping_text(sigma, flip)
    if not A.live and not B.live:  # (no states: there was no correspondence to look for)
        return False, {}, "one step's updates are not proven equal for every input"
    return False, {}, "no state correspondence makes one step agree"


def _differences(src: _Side, dst: _Side, sigma: dict) -> list:
    """One step of ``src`` minus one of ``dst``, ``src``'s states read as ``dst``'s by
    ``sigma``: updates, state updates, initial values (equal expressions need no proof: inf -
    inf is NaN to sympy, runmax's -inf)."""
    pairs = _pairs(src, dst, sigma)
    return [x - y for x, y in pairs if x != y]


def _pairs(src: _Side, dst: _Side, sigma: dict) -> list:
    """(src's, dst's) of a step, ``src``'s states read as ``dst``'s by ``sigma``: updates,
    state updates, initial values."""
    from .symbolic import NOT_FINITE  # sympy
    rep = {src.sym[k]: dst.sym[v] for k, v in sigma.items()}
    updates = (src.exprs["update"].xreplace(rep), dst.exprs["update"])
    # (the first rule's update is NOT_FINITE only in a case of domain="defined": no question)
    pairs = [] if any(u.has(NOT_FINITE) for u in updates) else [updates]
    pairs += [(src.exprs[k].xreplace(rep), dst.exprs[v]) for k, v in sigma.items()]
    pairs += [(src.every_init[k], dst.every_init[v]) for k, v in sigma.items()]
    return pairs


def _unbalanced(pairs: list) -> bool:
    """Whether a value of either side holds a domain marker as a term's factor (``_factors``)
    whose coefficient (the value with the marker 2 minus with it 1) is 0 at generic points
    (numerically, at ``_points``, where a number): 0 times NaN is NaN in the language, while an
    identity proved at generic points drops the term. ``g (1 - |sign(g)|) sqrt(m + 1000)`` is
    0 for every g to sympy, NaN at m < -1000 to the language."""
    import sympy as sp  # heavy: only for the proofs
    from sympy.core.function import AppliedUndef  # sympy: only for the proofs
    from .symbolic import DEFINED  # sympy
    z = sp.Dummy("marker")
    for e in {e for pair in pairs for e in pair}:
        for marker in _factors(e, DEFINED):
            c = e.xreplace({marker: z})
            c = (c.xreplace({z: 2}) - c.xreplace({z: 1})).xreplace({m: 1 for m in c.atoms(DEFINED)})
            c = c.xreplace({f: sp.Dummy("call") for f in c.atoms(AppliedUndef)})
            # a branch holds its marker where its condition does (where(t % k == 0, ...)):
            # each branch counts, weighted so that none cancels another
            c = c.replace(lambda x: isinstance(x, sp.Piecewise), lambda x: sp.Add(*[
                sp.sqrt(i + 2) * branch for i, (branch, _) in enumerate(x.args)]))
            seen = [_nonzero_at(c, pt) for pt in _points(c.free_symbols, sp, n=4)]
            if False in seen and True not in seen:  # (None: no number there)
                return True
    return False


def _factors(e, func) -> set:
    """The calls of ``func`` in ``e`` reached through sums, products, powers and the
    branches of a where only."""
    import sympy as sp  # heavy: only for the proofs
    if isinstance(e, func):
        return {e}
    if isinstance(e, sp.Piecewise):
        return set().union(*(_factors(branch, func) for branch, _ in e.args))
    if isinstance(e, (sp.Add, sp.Mul, sp.Pow)):
        return set().union(*(_factors(a, func) for a in e.args))
    return set()


def _nonzero_at(e, point: dict) -> bool | None:
    """Whether ``e`` at ``point`` is a number (complex where a root's argument is negative)
    that is not 0; None where it is no finite number."""
    try:
        v = complex(e.xreplace(point).evalf(30))
    except (TypeError, ValueError, ArithmeticError):  # Max of complex numbers: ValueError
        return None
    return abs(v) > 1e-12 if math.isfinite(abs(v)) else None


def _apart(diffs: list) -> bool:
    """Whether a step's differences (``_differences``) are nonzero at a numeric point (a
    cheap screen)."""
    import sympy as sp  # heavy: only for the proofs
    syms = set().union(*(d.free_symbols for d in diffs))
    return not _numeric_close(diffs, _points(syms, sp), sp)


def _proved_zero(diffs: list, src: _Side, dst: _Side, sigma: dict) -> bool:
    """Whether every one of a step's differences is proved 0 (the step agrees), of values
    none of which holds a marker with a coefficient 0 at generic points (``_unbalanced``)."""
    import sympy as sp  # heavy: only for the proofs
    from .symbolic import equal  # sympy
    return (not _unbalanced(_pairs(src, dst, sigma))
            and all(d == 0 or equal(d, sp.Integer(0)) for d in diffs))


def _agree_at_zero_gradient(src: _Side, dst: _Side, sigma: dict) -> bool:
    """The step agrees at g = 0 exactly too, for every value of the states. The proof above
    holds where g is not 0 (generic points); a zero gradient is an input like any other (a dead
    ReLU's weights get it at every step), and the probes try it only beside the states their
    streams reach: ``sign(g) + (1 - |sign(g)|) (ema(g, 0.9) > 1000)`` is ``sign(g)`` for every
    g but 0. Each side is translated again with g = 0 (what that makes a number computed as
    the language does; a NaN or an infinity without its sign proves nothing) and compared,
    by cases of the signs of its states where it takes them (``sign(0.9 m)``: +-1 and 0)."""
    zero = _at_zero_gradient(src, dst)
    return zero is not None and _sides_agree(*zero, sigma)


def _sides_agree(src: _Side, dst: _Side, sigma: dict) -> bool:
    """One step of two sides translated again (a case of its own: g = 0, step 1) agrees: no
    difference, or none at a numeric point and every case of the signs agrees, or each
    difference is proved 0."""
    diffs = _differences(src, dst, sigma)
    if diffs == []:
        return True
    if _apart(diffs):
        return False
    return _agree_by_sign_cases(src, dst, sigma) or _proved_zero(diffs, src, dst, sigma)


def _infinite(e) -> bool:
    import sympy as sp  # heavy: only for the proofs
    return e.has(sp.oo, -sp.oo, sp.zoo, sp.nan)


def _starts_infinite(*sides: _Side) -> bool:
    """Whether a state of either side may start at an infinity: one does (``prev(g, -inf)``),
    or one's initial value reads g (``prev(g, -1 / g)``, -inf at g = 0)."""
    return any(_infinite(e) or side.g in e.free_symbols
               for side in sides for e in side.every_init.values())


def _step_one_outside(*sides: _Side) -> bool:
    """Whether step 1, from the initial values, may lie outside what the step proof covers (every
    real value of the states but null sets): a state starts at an infinity or reads g
    (``_starts_infinite``), or the initial values put the argument of a sign or |x|, a divisor
    or a domain marker's argument of the step at exactly 0 (``exp(-1 / prev(g, 0)^2)``: 0 at
    step 1, positive at every other value of the state)."""
    if _starts_infinite(*sides):
        return True
    return any(_vanishes_at(side, side.every_init) for side in sides)


def _vanishes_at(side: _Side, values: dict) -> bool:
    """Whether the states at ``values`` (name -> value) put the argument of a sign or |x|, a
    divisor or a domain marker's argument of ``side``'s step at exactly 0."""
    import sympy as sp  # heavy: only for the proofs
    from .symbolic import DEFINED  # sympy
    at = {side.sym[k]: v for k, v in values.items()}
    for e in side.exprs.values():
        vanishing = [a.args[0] for a in e.atoms(sp.sign, sp.Abs, DEFINED)]
        vanishing += [x.base for x in e.atoms(sp.Pow) if x.exp.is_negative]
        if any(x.free_symbols & set(at) and x.xreplace(at) == 0 for x in vanishing):
            return True
    return False


def _agree_at_first_step(src: _Side, dst: _Side, sigma: dict) -> bool:
    """Step 1 from the initial values, which the step proof above (for every real value of
    the states, but for null sets such as a state at 0) does not cover: a state starts at an
    infinity (``runmax``), or at 0 (``exp(-1 / prev(g, 0)^2)`` is 0 at step 1, positive at
    every other value). Each side is translated again at t = 1 with its states read as their
    initial values, node by node as the language computes (exp(-inf) is 0, -inf - -inf a NaN
    that proves nothing), at g and at g = 0, and must agree there, with every state finite
    after it. ``1 - (p > 1000) (1 - sign(exp(prev(g, -inf))))`` is 1 at every real state, 0
    at step 1 where p > 1000. Step 1 is translated as a case of signs is, with none put in
    (an infinity times a value, -inf (g - 1), is then no number sympy may reason with).
    ``sigma`` {}: the updates only. Not needed where nothing of step 1 is outside
    (``_step_one_outside``)."""
    return not _step_one_outside(src, dst) or _agree_from(src, dst, sigma, first=True)


def _agree_from(src: _Side, dst: _Side, sigma: dict, first: bool = False,
                starts: tuple = ({}, {})) -> bool:
    """One step of each side from where the step proof may not reach (step 1 from the initial
    values, ``first``; or states read as the values in ``starts``, one dict per side),
    translated node by node as a case of signs with none put in, at g and at g = 0: the two
    agree there, with every state finite after it."""
    import sympy as sp  # heavy: only for the proofs
    from .symbolic import Unsigned  # sympy
    for gradient in (None, sp.Integer(0)):
        try:
            sides = [_Side(s.rule, s.hypers, s.tag, s, signs={}, gradient=gradient, first=first,
                           start=start) for s, start in zip((src, dst), starts)]
        except (Unsigned, ArithmeticError):
            return False
        if any(side.lost or any(_infinite(e) for e in side.exprs.values()) for side in sides):
            return False  # an infinite update, or a state still infinite after the step
        if not _sides_agree(*sides, sigma):
            return False
    return True


def _agree_where_states_land(src: _Side, dst: _Side, sigma: dict) -> bool:
    """A step may leave a state at a constant: ``s := 0 * g`` at every step, ``prev(g, 1)``
    after a zero gradient. The step proof holds for every real value of the states but null
    sets, and that constant may lie in one (``sign(1 / s)`` at s = 0: 1 / -0.0 is -inf, so
    ``0 * g`` and ``0 * |g|`` differ at g < 0). So after a step at g, and after one at g = 0,
    the states each side leaves at a constant are read as it, the others
    kept as symbols, and where that puts a vanishing point of the step at 0
    (``_vanishes_at``) the next step is compared from there as step 1 is (``_agree_from``).
    A state read as a constant 0 is not +0.0 for certain, so a quotient by it proves
    nothing."""
    zero = _at_zero_gradient(src, dst)
    if zero is None:
        return False
    for sides in ((src, dst), zero):
        starts = tuple({k: e for k, e in side.exprs.items() if k != "update" and e.is_number}
                       for side in sides)
        if any(_infinite(e) for st in starts for e in st.values()):
            return False
        if any(_vanishes_at(s, st) for s, st in zip((src, dst), starts)) \
                and not _agree_from(src, dst, sigma, starts=starts):
            return False
    return True


def _leaves_infinite(*sides: _Side) -> bool:
    """Whether a step leaves a state, or the parameter where a rule reads it, at an infinity
    (``prev(1 / g, 1)`` at g = 0): the next step is then outside what a proof for every real
    value of them covers."""
    reads_p = any(side.p in e.free_symbols for side in sides for e in side.exprs.values())
    return any(_infinite(e) for side in sides for k, e in side.exprs.items()
               if k != "update" or reads_p)


def _at_zero_gradient(*sides: _Side) -> tuple | None:
    """The sides translated again with g = 0 (None where that gives a NaN or an infinity
    without its sign, or leaves a state infinite, ``_leaves_infinite``: no proof there). A
    marker that g = 0 drops (``g sqrt(m)``: NaN at m < 0 in the language, 0 to sympy) is kept
    as a ``nan_where`` term (``symbolic.translate``'s ``zero_leaf``), which the other side
    must hold too."""
    from .symbolic import Unsigned  # sympy
    try:
        zero = tuple(s.at_zero() for s in sides)
    except (Unsigned, ArithmeticError):  # 2 % 0 is sympy's ZeroDivisionError
        return None
    return None if _leaves_infinite(*zero) else zero


SIGN_CASES = 32  # _agree_by_sign_cases: at most this many cases


def _agree_by_sign_cases(src: _Side, dst: _Side, sigma: dict, apart: list | None = None) -> bool:
    """One step agrees in every case of the signs the two steps split on (``symbolic.sign_atoms``:
    ``sign(g)``, ``sign(0.9 m + 0.1 g)``, each +-1, and 0 where it is not 0 only on a null
    set), each side translated again from its program with the signs' values put in
    (``symbolic.translate(..., signs=...)``). What a case makes a number is then computed
    node by node as the language does, so ``log|sign(g) + sign(m)|`` is -inf where the signs
    disagree and ``g / (-inf + 1e-8)`` is 0 there, which no identity of sympy's, written for
    finite values, can show (``log(0)`` is its ``zoo``). A case whose step differs at a point
    where the signs take its values (``_apart_in_case``) is appended to ``apart``: the step
    differs there, and no proof of the whole expression can hold."""
    from .symbolic import Unsigned, sign_atoms  # sympy
    rep = {src.sym[k]: dst.sym[v] for k, v in sigma.items()}
    back = {}  # each split sign of dst's symbols -> the signs of src it is, read by sigma
    for a, values in sign_atoms(dst.exprs.values()).items():
        back.setdefault(a, ([], values))[0].append(a)
    for a, values in sign_atoms(src.exprs.values()).items():
        back.setdefault(a.xreplace(rep), ([], values))[0].append(a)
    keys = list(back)
    cases = list(itertools.product(*(back[k][1] for k in keys)))
    if not keys or len(cases) > SIGN_CASES:
        return False
    for case in cases:
        # each sign in the case as either side writes it (dst's symbols: the key itself)
        signs = {a: v for k, v in zip(keys, case) for a in back[k][0] + [k]}
        try:
            sides = [_Side(side.rule, side.hypers, side.tag, side, signs, side.gradient)
                     for side in (src, dst)]
        except Unsigned:  # NaN in this case (-inf - -inf, 0 * -inf): no proof
            return False
        if any(side.lost for side in sides):
            return False
        diffs = _differences(*sides, sigma)
        if _apart(diffs) or not _proved_zero(diffs, *sides, sigma):
            if apart is not None and _apart_in_case(diffs, dict(zip(keys, case))):
                apart.append(case)
            return False
    return True


def _apart_in_case(diffs: list, signs: dict) -> bool:
    """Whether a step's differences in one case of the signs (``signs``: sign(x) -> its value
    there) are a finite nonzero number at a point where each x has that sign (points over
    nine decades of magnitude, so that sign(g - 1000) = 1 is met too)."""
    import sympy as sp  # heavy: only for the proofs
    syms = set().union(*(d.free_symbols for d in diffs), *(a.free_symbols for a in signs))
    for pt in _points(syms, sp, n=64, seed=2, wide=True):
        try:
            inside = all(sp.sign(a.args[0].xreplace(pt).evalf(30)) == v for a, v in signs.items())
        except (TypeError, ValueError, ArithmeticError):
            continue
        if inside and not _numeric_close(diffs, [pt], sp):
            return True
    return False


def scaled_step(pair: Pair):
    """(proved?, mapping, text) — states that correspond up to constant factors, by induction
    from the first step: each state of one rule is ``c`` times a state of the other after step
    1 (computed from the initial values, at t = 1; ``c`` a function of hyperparameters only),
    and from any step t >= 2 where that holds, the updates agree and it holds again. Proves
    what ``single_step`` cannot: the lecture's NAG rewrite against torch's Nesterov (m = lr b),
    EMA momentum against torch's (m = (1 - momentum) b), whose buffers start as b_1 = g."""
    import sympy as sp  # heavy: only for the proofs
    from .symbolic import T_SYMBOL, equal  # sympy
    ha, hb = _symbols(pair, sp)
    A, B = _Side(pair.a, ha, "a"), _Side(pair.b, hb, "b")
    if A.lost or B.lost:
        return False, {}, LOST
    if _starts_infinite(A, B):  # step 1 below puts the initial values into expressions
        return False, {}, "a state starts at an infinity: no induction from step 1"
    constants = set().union(*(sp.sympify(v).free_symbols for v in [*ha.values(), *hb.values()]))
    earlier = sp.Symbol("t_before", integer=True, positive=True)

    def first(side, e):  # at step 1, from the initial values
        return e.xreplace({T_SYMBOL: sp.Integer(1), **{side.sym[k]: side.init[k] for k in side.init}})

    def later(e):  # at a step t >= 2
        return e.xreplace({T_SYMBOL: earlier + 1})

    for src, dst, flip in ((B, A, False), (A, B, True)):
        for sigma in _maps(src, dst):
            if set(sigma) != set(src.init):
                continue  # every state of src must be a multiple of one of dst
            scale = {}
            for k, v in sigma.items():
                after = first(dst, dst.exprs[v])
                c = sp.simplify(first(src, src.exprs[k]) / after) if after != 0 else None
                if c is None or not c.is_finite or c.free_symbols - constants:
                    break
                scale[k] = c
            if len(scale) != len(sigma):
                continue
            rep = {src.sym[k]: scale[k] * dst.sym[v] for k, v in sigma.items()}

            def differences(s, d):  # step 1, then a step t >= 2 from proportional states
                pairs = [(first(s, s.exprs["update"]), first(d, d.exprs["update"])),
                         (later(s.exprs["update"].xreplace(rep)), later(d.exprs["update"]))]
                pairs += [(later(s.exprs[k].xreplace(rep)), later(scale[k] * d.exprs[v]))
                          for k, v in sigma.items()]
                return None if _unbalanced(pairs) else [x - y for x, y in pairs]

            diffs = differences(src, dst)
            if diffs is None or _apart(diffs):
                continue
            # the steps at g = 0 too (_agree_at_zero_gradient)
            zero = _at_zero_gradient(src, dst)
            zero_diffs = differences(*zero) if zero else None
            if zero_diffs is not None and all(d == 0 or equal(d, sp.Integer(0))
                                              for d in diffs + zero_diffs) \
                    and _agree_at_first_step(src, dst, {}) \
                    and _agree_where_states_land(src, dst, {}):
                return True, sigma, _scaled_text(sigma, scale, flip)
    return False, {}, "no states proportional from step 1 make the steps agree"


def _scaled_text(sigma: dict, scale: dict, flip: bool) -> str:
    """What ``scaled_step`` proved: each state of one rule with its factor of the other's."""
    import sympy as sp  # heavy: only for the proofs
    pairs = {k: v if scale[k] == 1 else f"({sp.sstr(scale[k])}) * {v}"
             if scale[k].is_Add else f"{sp.sstr(scale[k])} * {v}" for k, v in sigma.items()}
    return ("induction from step 1, states matched up to factors: "
            + _mapping_text(pairs, flip).split(": ", 1)[-1])


def _mapping_text(sigma: dict, flip: bool) -> str:
    """'a-state ↔ b-state' pairs, the first rule's states on the left; a state of one rule that
    stands for several of the other's is listed with all of them."""
    if not sigma:
        return "single step, no state"
    groups = {}
    for k, v in sigma.items():
        groups.setdefault(v, []).append(k)
    if flip:  # sigma: a -> b
        parts = [f"{', '.join(ks)} ↔ {v}" for v, ks in groups.items()]
    else:  # sigma: b -> a
        parts = [f"{v} ↔ {', '.join(ks)}" for v, ks in groups.items()]
    return "single step, states matched: " + "; ".join(parts)


def unrolled(pair: Pair, k: int):
    """(agree?, text): the first k steps' parameters agree for symbolic g_1..g_k and p_0 (no
    proof for later steps)."""
    import sympy as sp  # heavy: only for the proofs
    from .symbolic import equal, leaf_map, lost_domains, translate  # sympy
    ha, hb = _symbols(pair, sp)
    p = sp.Symbol("p0", real=True)
    gs = [sp.Symbol(f"g{i}", real=True) for i in range(1, k + 1)]
    sides = [(pair.a, ha), (pair.b, hb)]
    states = []
    for rule, hy in sides:
        env = {"g": gs[0], "p": p, "t": sp.Integer(1)}
        tr = translate([s.init for s in rule.slots], leaf_map(hy, env, {}), domains=True)
        states.append({s.name: tr[s.init] for s in rule.slots})
        if lost_domains(tr, states[-1].values()):
            return False, LOST
    for i in range(k):
        env = {"g": gs[i], "p": p, "t": sp.Integer(i + 1)}
        us = []
        for j, (rule, hy) in enumerate(sides):
            tr = translate([rule.update] + [s.update for s in rule.slots],
                           leaf_map(hy, env, states[j]), domains=True)
            us.append(tr[rule.update])
            states[j] = {s.name: tr[s.update] for s in rule.slots}
            if lost_domains(tr, [us[-1], *states[j].values()]):
                return False, LOST
        d = us[0] - us[1]
        if not _numeric_close([d], _points(d.free_symbols, sp), sp) or not equal(us[0], us[1]):
            return False, f"step {i + 1} not proven equal by unrolling"
        p = p - us[0]
    return True, (f"the first {k} steps agree (unrolled, states eliminated: equal parameters "
                  f"after each for all g_1..g_{k}, p_0 and hyperparameters but exact zeros, "
                  "which this does not compare)")


def _symbolic(pair: Pair, steps: int):
    """The symbolic phase: (status, method, text, mapping)."""
    from .symbolic import Opaque, Unsigned  # sympy: only for the proofs
    try:
        ok, sigma, text = single_step(pair)
        if ok:
            return _at_singular_values(pair, single_step, "single-step", text, sigma)
        ok, sigma, scaled = scaled_step(pair)
        if ok:
            return _at_singular_values(pair, scaled_step, "scaled-induction", scaled, sigma)
        if steps > 0:
            ok, text2 = unrolled(pair, steps)
            if ok:  # the first k steps only: not a proof
                return (UNKNOWN, f"unrolled(k={steps})",
                        f"{text2}, but no proof for every step: {text}", {})
            return UNKNOWN, "symbolic", "; ".join(dict.fromkeys((text, text2))), {}
        return UNKNOWN, "symbolic", text, {}
    except Unsigned as e:
        return UNKNOWN, "symbolic", f"no symbolic proof: {e}", {}
    except Opaque as e:
        return UNKNOWN, "random", f"the rules draw random numbers ({e}): no symbolic proof", {}
    except RecursionError:
        return UNKNOWN, "symbolic", "sympy recursed too deeply", {}


def _at_singular_values(pair: Pair, prove, method: str, text: str, sigma: dict):
    """The proof's verdict once it is made again at each special value of a hyperparameter
    (``_singular_values``: a divisor 0 for every input, a root of ``momentum == 0``): the proof
    takes hyperparameters as generic, and ``wd * x / wd`` is ``x`` except at wd = 0 (NaN).
    A special value it cannot make the proof at (one no float is exactly, as 1/3; one of a
    zero it cannot solve for, as ``floor(10 b) - 2``) leaves the verdict unknown."""
    from .symbolic import Unsigned  # sympy
    special, unchecked = _singular_values(pair)
    if unchecked:
        return (UNKNOWN, "symbolic", f"proved ({text}) for generic hyperparameters, but not "
                f"where {unchecked[0]}", {})
    for name, value in special:
        try:
            ok = prove(pair.at(name, value))[0]
        except Unsigned:  # (0 / 0 at wd = 0)
            ok = False
        if not ok:
            return (UNKNOWN, "symbolic", f"proved ({text}) for generic hyperparameters, but "
                    f"not at {name} = {value:g}, a special value (a divisor is 0 there, or an "
                    "equation of it holds)", {})
    return PROVED, method, text, sigma


def _singular_values(pair: Pair) -> tuple:
    """([(name, value)], [what cannot be checked]) of the shared hyperparameters at special
    values an Optimizer takes: 0 and 1 where a divisor of either rule is 0 for every input
    (``wd`` in ``x * wd / wd``, ``1 - d`` at d = 1), the zeros of each factor of a divisor
    that is a function of one of them and constants (``a - 0.25``, ``(b - 0.3) t``, ``exp(b)
    - 2``), and the roots of an equation between one of them and constants (``momentum ==
    0``, which the proof takes as false: ``_generic``). A zero no float is exactly (1/3, ln 2:
    the proof is over the reals, and the float nearest it is another value), or the zeros of a
    factor sympy cannot list (``floor(10 b) - 2``: a whole interval), cannot be checked."""
    import sympy as sp  # heavy: only for the proofs
    from .symbolic import state_symbol  # sympy: only for the proofs
    found, unchecked = [], []

    def add(name, value):
        if (name, value) not in found and pair.accepts(name, value):
            found.append((name, value))
    ha, hb = _symbols(pair, sp)
    for rule, hypers in ((pair.a, ha), (pair.b, hb)):
        # the states' initial values too: a state that starts as wd / wd, or as (wd == 0.5),
        # matches another's start for every value but that one
        nodes = ir.topological(rule.outputs() + [s.init for s in rule.slots])
        _scan_special(nodes, hypers, {s.name: state_symbol(s.name) for s in rule.slots},
                      pair, add, unchecked)
    # and the maps of hyperparameters (``lr + (wd == 0.5)``), over the second rule's
    _scan_special(ir.topological(list(pair.maps.values())), hb, {}, pair, add, unchecked)
    return found, unchecked


def _scan_special(nodes, hypers: dict, states: dict, pair: Pair, add, unchecked: list) -> None:
    """``_singular_values`` for one set of IR nodes (hyperparameter leaves valued by
    ``hypers``): ``add(name, value)`` for each special value found, what cannot be checked to
    ``unchecked``."""
    import sympy as sp  # heavy: only for the proofs
    from .symbolic import hyper_symbol, input_symbols, leaf_map, number, translate  # sympy
    powers = [n for n in nodes if n.op == "pow"]
    # the equations _generic takes as false come from these: x == c, x != c, where(x, ...)
    conditions = [n for n in nodes if n.op in ("eq", "ne", "where")]
    divisors = [n.args[1] for n in nodes if n.op in ("div", "mod")]
    values = translate(divisors + [a for n in powers for a in n.args] + conditions,
                       leaf_map(hypers, input_symbols(), states))
    divisors += [n.args[0] for n in powers  # x^-k divides by x^k
                 if not values[n.args[1]].is_nonnegative]
    zeros = [r.lhs - r.rhs for r in set().union(*(values[n].atoms(sp.Eq, sp.Ne)
                                                    for n in conditions))]
    zeros += [sp.numer(sp.together(values[d])) for d in divisors]
    for factor in {f for diff in zeros for f in _zero_factors(diff)}:
        h = _hyper_of(factor, hypers)
        if h is None:
            continue
        roots = _real_zeros(factor, h)
        if roots is None:
            unchecked.append(f"{factor} = 0 (zeros of {h.name} not found)")
            continue
        for root in roots:
            value = float(root)
            if not pair.accepts(h.name, value):
                continue
            if number(value) != root:
                unchecked.append(f"{h.name} = {root} (no float is exactly that value)")
            else:
                add(h.name, value)
    for name in pair.free:
        for v in (0.0, 1.0):
            if any(sp.expand(values[d].subs(hyper_symbol(name), number(v))) == 0
                   for d in divisors):
                add(name, v)


def _zero_factors(diff) -> list:
    """The factors of ``diff`` (one equation's ``lhs - rhs`` or a divisor's numerator): where
    it is 0 is where one of them is."""
    import sympy as sp  # heavy: only for the proofs
    try:
        whole = sp.factor(diff)
    except (sp.PolynomialError, sp.polys.polyerrors.PolificationFailed, TypeError):
        whole = diff
    out = []
    for f in sp.Mul.make_args(whole):
        while f.is_Pow and f.exp.is_positive:
            f = f.base
        if f.free_symbols:
            out.append(f)
    return out


def _hyper_of(factor, hypers: dict):
    """The hyperparameter symbol of a factor that is a function of one free hyperparameter and
    constants, else None (a factor in inputs or states is 0 on a null set of them)."""
    import sympy as sp  # heavy: only for the proofs
    symbols = factor.free_symbols
    if len(symbols) != 1:
        return None
    h = next(iter(symbols))
    return h if any(v == h for v in hypers.values() if isinstance(v, sp.Symbol)) else None


def _real_zeros(factor, h):
    """The real zeros of ``factor`` in ``h`` (exact sympy numbers), or None when sympy cannot
    list them (a condition set, an interval, infinitely many)."""
    import sympy as sp  # heavy: only for the proofs
    if factor.is_polynomial(h):
        return list(sp.Poly(factor, h).real_roots())
    try:
        zeros = sp.solveset(factor, h, sp.S.Reals)
    except (NotImplementedError, ValueError, TypeError):
        return None
    if isinstance(zeros, sp.FiniteSet) and all(z.is_real for z in zeros):
        return list(zeros)
    return [] if zeros is sp.S.EmptySet else None


def _equation_symbol(diff, hypers: dict):
    """The hyperparameter symbol of an equation ``diff = 0`` that is a polynomial in one
    hyperparameter and constants (``momentum == 0``, ``1 - d == 0``), else None. ``hypers``:
    names -> their sympy values (a free one is a symbol)."""
    h = _hyper_of(diff, hypers)
    return h if h is not None and diff.is_polynomial(h) else None


def _generic(e, hypers: dict):
    """``e`` with each equation between one hyperparameter and constants false (and each
    inequation true), as it is for all but the special values that ``_singular_values``
    proves again at."""
    import sympy as sp  # heavy: only for the proofs
    return e.xreplace({r: sp.false if isinstance(r, sp.Eq) else sp.true
                       for r in e.atoms(sp.Eq, sp.Ne)
                       if _equation_symbol(r.lhs - r.rhs, hypers) is not None})


def _child(conn, pair, steps):
    try:
        conn.send(_symbolic(pair, steps))
    except BaseException as e:  # report, never hang the parent
        conn.send((UNKNOWN, "error", f"sympy failed: {type(e).__name__}: {e}", {}))
    finally:
        conn.close()


def check_timeout(timeout) -> None:
    """A proof's time limit: seconds, 0 (numeric probing only) to inf (no limit)."""
    if not isinstance(timeout, (int, float)) or not timeout >= 0:
        raise DSLError(f"timeout must be a number of seconds, 0 (probing only) to inf (no "
                       f"limit), not {timeout!r}")


# The longest wait for a forked prover: waits are select() calls, whose timeout is a C int of
# milliseconds (24.8 days); 1e6 s (11.6 days) is far more than any proof is given. A longer
# budget (infinity included) waits without a limit; the CLI's --timeout stops here.
MAX_TIMEOUT = 1e6


def run_with_budget(fn, args, budget: float, fallback, tries: int = 2):
    """``fn(conn, *args)`` in a forked process; its message, or ``fallback`` after ``budget`` s
    (over ``MAX_TIMEOUT``, infinity included: no limit). A child that dies without a word (a
    forked process can crash on a lock another thread of the parent held) is started again,
    ``tries`` times in all, within what is left of the budget."""
    end = time.perf_counter() + budget
    for _ in range(tries):
        out = _run_forked(fn, args, budget)
        if out is not _DIED:
            return fallback if out is _TIMED_OUT else out
        budget = end - time.perf_counter()
        if budget <= 0:
            break
    return fallback


_DIED, _TIMED_OUT = object(), object()  # what _run_forked answers besides the child's message


def _run_forked(fn, args, budget: float):
    """One run of ``run_with_budget``: the message, ``_TIMED_OUT`` or ``_DIED``."""
    wait = None if budget > MAX_TIMEOUT else max(budget, 0.0)
    if "fork" not in multiprocessing.get_all_start_methods():
        box = []

        class _Conn:
            def send(self, x):
                box.append(x)

            def close(self):
                pass
        th = threading.Thread(target=fn, args=(_Conn(), *args), daemon=True)
        th.start()
        th.join(wait)
        return box[0] if box else _TIMED_OUT
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=fn, args=(send, *args), daemon=True)
    proc.start()
    send.close()
    try:
        if recv.poll(wait):
            return recv.recv()
        return _TIMED_OUT
    except EOFError:  # the child ended without sending
        return _DIED
    finally:
        if proc.is_alive():
            proc.kill()
        proc.join(1)
        recv.close()


def equivalent(a: Rule, b: Rule, steps: int = 3, bind: dict | None = None,
               hyper_map: dict | None = None, timeout: float = 10.0, seed: int = 0,
               domain: str = "all") -> Verdict:
    """Prove rules ``a`` and ``b`` equivalent, refute them
    with a re-evaluated counterexample, or answer unknown within ``timeout`` seconds (a
    wall-clock budget for probing and proof together: see the module).

    Only a proof for every step (a single-step proof with matched states) says proved. Without
    one, numeric probing of ``LONG_STEPS`` steps looks for a counterexample at later steps
    (``t <= 5`` differs at step 6): refuted, or unknown with what agrees (such as the first
    ``steps`` steps unrolled).

    ``steps``: how many steps the unrolled comparison checks (0 disables it); ``bind``: name ->
    value fixed for both rules; ``hyper_map``: name of a hyperparameter of ``a`` -> expression
    (language syntax) over the hyperparameters, e.g. ``{"lr": "lr / (1 - momentum)"}``;
    ``domain``: "all" (every input, exact zeros included) or "defined" (only where ``a``'s
    update is finite; see the module docstring).
    """
    check_timeout(timeout)
    try:
        whole = None if isinstance(steps, bool) else operator.index(steps)  # (numpy's too)
    except TypeError:
        whole = None
    if whole is None or whole < 0:
        raise DSLError(f"steps must be a whole number >= 0 (0: no unrolled steps), not {steps!r}")
    steps = whole
    start = time.perf_counter()
    pair = Pair(a, b, bind, hyper_map, domain)
    verdict = _decide(pair, steps, timeout, seed, start)
    if pair.apart:
        verdict.note = "each rule at its own " + ", ".join(
            f"{h} ({x:g} and {y:g})" for h, (x, y) in pair.apart.items()) + \
            f"; bind {next(iter(pair.apart))} to compare them at one value"
    return verdict


def _same_program(a: Rule, b: Rule) -> bool:
    """Whether two rules are one program (nodes are interned: equal means identical), with the
    same states, storage dtypes and defaults: the same optimizer, whatever sympy can do with it
    (swats against itself was 'unknown')."""
    def parts(r):  # (a default of -0.0 is not 0.0: 1 / wd tells them apart)
        return (r.new_p, r.update, r.assigns_p, {k: float(v).hex() for k, v in r.defaults.items()},
                r.state_dtypes,
                [(s.name, s.kind, s.init, s.update) for s in r.slots])
    return parts(a) == parts(b)


def _decide(pair: Pair, steps: int, timeout: float, seed: int, start: float) -> Verdict:
    """The verdict within ``timeout`` seconds of ``start`` (see the module: each phase's share)."""
    domain = pair.domain
    if not pair.maps and _same_program(pair.a, pair.b):
        return Verdict(PROVED, "identical", "the same program", elapsed=time.perf_counter() - start)
    cex, evidence = probe(pair, steps=max(STEPS_PROBED, steps), seed=seed,
                          deadline=start + timeout / 2, end=start + timeout)
    if cex is not None:
        return Verdict(REFUTED, "numeric", str(cex), cex, time.perf_counter() - start)
    if pair.random:
        return Verdict(UNKNOWN, "random", "the rules draw random numbers: no symbolic proof",
                       elapsed=time.perf_counter() - start, evidence=evidence)
    budget = timeout - (time.perf_counter() - start)
    fallback = (UNKNOWN, "timeout", f"no proof within {timeout:.3g} s", {})
    status, method, text, sigma = run_with_budget(_child, (pair, steps), budget, fallback)
    if status != PROVED:  # no proof for every step: look for a difference at later steps
        cex, evidence = probe(pair, steps=max(LONG_STEPS, steps), seed=seed,
                              deadline=start + timeout)
        if cex is not None:
            return Verdict(REFUTED, "numeric", str(cex), cex, time.perf_counter() - start)
    elif domain != "all":
        text += f"; {DOMAINS[domain]}"
    return Verdict(status, method, text, None, time.perf_counter() - start, sigma, evidence)
