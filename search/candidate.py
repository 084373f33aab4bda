"""The search's one currency: a candidate rule built once, and its cache key.

A :class:`Candidate` is made from program text (or an already checked Rule) exactly once: it
is parsed and checked (``optdsl.parse``), printed back from its IR (``search.program``: the text
the store, the leaderboard and the exports show), run on probe inputs, and given its **cache
key**. Strategies hand candidates to the engine; the engine stores the text under the key and
the candidate's ``id`` (the proposal id the strategy gave it), and results go back to the
strategy by that id, never by text.

The key is the one duplicate key of the package: the strategies' filter and the store both
use it. It hashes two things:

* ``optdsl.canonical_hash`` of the rule with ``lr``'s default set to 1 (the protocol sets lr,
  so ``r(lr=0.1) = lr * g`` and ``r(lr=0.5) = lr * g`` are one candidate) where lr scales the
  update (``lr_scales``; a match task runs each rule at its own defaults and is blind only to
  a positive factor), else of the rule as it is, and
* the rule's updates on fixed probe inputs (``lr = 1``, other hyperparameters at their
  defaults, 4 steps of 16 elements, two gradient sequences across three decades and both
  signs), rounded to 6 significant digits.

* the rule's updates on special inputs (``special_probes``: gradients exactly 0 and -0,
  infinite and NaN beside ordinary ones, parameters 0 and -0; steps 1-4, and steps 1001-1003
  after a first one; lr = ``SPECIAL_LR``), rounded alike.

The numeric parts keep the key sound even where the symbolic normal form merges too much:
``lr * sqrt(g) * sqrt(g)`` (NaN for negative g) and ``lr * g`` get different keys whatever
``canonical_hash`` does with ``x^a * x^b``; so do the rules it merges by what it does not
model (the sign of zero, infinite gradients, overflow): ``lr * clip(1 / (0 - g), -1, 1)``
and ``lr * clip(1 / (-g), -1, 1)`` (+lr and -lr at g = 0), ``lr * where(g - g == 0, g, 0)``
and ``lr * g`` (0 and inf at g = inf), ``lr * g * exp(-t) / exp(-t)`` and ``lr * g`` (NaN
from step 746), ``r(lr=1, k=1) = lr * g + k * p`` and ``k * g + lr * p`` (a protocol sets lr
by name). Rules equal up to algebra keep one key (their updates agree to rounding; rules that
differ only where a product overflows or underflows, ``sign(g m)`` and ``sign(g) sign(m)``,
are not told apart). Where ``canonical_hash`` is not available, the text (comments and
spacing dropped) takes its place; keys carry their scheme as a prefix (``canon:`` / ``text:``).
The probe updates are kept on the candidate for the degenerate filters (``search.filters``).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, replace

import numpy as np
import torch

PROBE_STEPS = 4
PROBE_SIZE = 16
_PROBES = None


def probes():
    """(p0, grads A, grads B): fixed probe inputs with gradients across three decades."""
    global _PROBES
    if _PROBES is None:
        gen = torch.Generator().manual_seed(7)
        p0 = torch.randn(PROBE_SIZE, generator=gen, dtype=torch.float64)

        def seq():
            return [torch.randn(PROBE_SIZE, generator=gen, dtype=torch.float64)
                    * 10 ** (torch.rand(PROBE_SIZE, generator=gen, dtype=torch.float64) * 3 - 2.5)
                    for _ in range(PROBE_STEPS)]
        _PROBES = (p0, seq(), seq())
    return _PROBES


_SPECIAL = None
SPECIAL_LR = 0.37  # no default's value: lr and a hyperparameter of lr's default swapped differ


def special_probes():
    """(p0, grads): 16 elements of special values for the key (module docstring), 4 steps."""
    global _SPECIAL
    if _SPECIAL is None:
        inf, nan = float("inf"), float("nan")
        g = torch.tensor([0.0, -0.0, inf, -inf, nan, 1.0, -1.0, 0.5, -2.0, 3.0, -0.25, 10.0,
                          -10.0, 1e-3, -1e3, 0.0], dtype=torch.float64)
        p0 = torch.tensor([0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 0.0, 1.0, -3.0, 10.0, 0.0, -1e-3,
                           1e3, 0.1, -0.1, 5.0], dtype=torch.float64)
        _SPECIAL = (p0, [g, -g, g.flip(0), torch.zeros_like(g)])
    return _SPECIAL


def special_digest(rule) -> str:
    """The digest of the rule's updates on ``special_probes`` (steps 1-4, then steps 1001-1003
    after a first step), or the error that run raised."""
    p0, grads = special_probes()
    try:
        with np.errstate(all="ignore"):
            runs = [_held_updates(rule, {**rule.defaults, "lr": SPECIAL_LR}, late, (p0, grads))
                    for late in (0, LATE_STEP)]
    except Exception as e:
        return f"special-error: {type(e).__name__}"
    from optdsl.probes import rounded_digest
    # + 0.0: an update of -0 is one of +0 (p - 0 is p either way); the signs of zero that
    # matter show in what they make, 1 / -0 = -inf
    return rounded_digest(torch.cat([r.flatten() for r in runs]) + 0.0)


def text_hash(text: str) -> str:
    """``text:`` + SHA-256 of program text with comments dropped and spacing normalized."""
    lines = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        line = re.sub(r"\s+", " ", line).strip()
        if line:
            lines.append(re.sub(r"\s*([-+*/^%(),=:<>!])\s*", r"\1", line))
    return "text:" + hashlib.sha256("\n".join(lines).encode()).hexdigest()


def without_lr_default(rule):
    """``rule`` with ``lr``'s default set to 1 (the protocol sets lr itself)."""
    if "lr" not in rule.hypers:
        return rule
    hypers = dict(rule.hypers)
    hypers["lr"] = replace(hypers["lr"], default=1.0)
    return replace(rule, hypers=hypers)


def lr_scales(rule) -> bool:
    """Whether the rule's update at its lr default is that default times its update at lr = 1
    (on the probe gradients A, the parameter held at p0 as a match task holds it): then the
    default changes nothing a protocol scores (a training protocol sets lr, a match score is
    blind to a positive factor). Where it does not (``lr * g + 0.01 * sign(g)``, adabound), a
    match task, which runs each rule at its own defaults, scores rules that differ only in
    lr's default differently."""
    from .batched import lr_is_linear
    lr = rule.defaults.get("lr")
    if lr is None or lr == 1.0:
        return True
    if not lr > 0:
        return False
    if lr_is_linear(rule):  # lr * X, X free of lr: no need to run the rule
        return True
    if rule.assigns_p:  # its update is a difference of parameters, exact only to p's rounding:
        return False    # at a small lr default every such rule would seem to scale
    try:  # early steps, and late ones (a term behind t > 4 escapes the first four)
        u, one = (torch.cat([_held_updates(rule, {**rule.defaults, "lr": x}, late)
                             for late in (0, LATE_STEP)]) for x in (lr, 1.0))
    except Exception:
        return False
    # the updates as computed (not p differences): equal up to rounding relative to each
    # element, so that a term 1e-13 beside lr * 1e-9 still tells the rules apart
    return bool(torch.allclose(u, lr * one, rtol=1e-9, atol=0.0, equal_nan=True))


LATE_STEP = 1000  # lr_scales also probes the steps after this one


def _held_updates(rule, hypers: dict, late: int = 0, inputs=None) -> torch.Tensor:
    """The updates of ``rule`` on the probe gradients A (or ``inputs``: (p0, grads)), each
    step from p0 (teacher-forced); with ``late``, the steps after the first are counted from
    ``late`` on (t = late + 1, ...)."""
    from optdsl.interpreter import Interpreter
    interp, state = Interpreter(rule), {}
    p0, grads = inputs or probes()[:2]
    gen = torch.Generator().manual_seed(0)
    out = []
    for k, g in enumerate(grads):
        p = p0.clone()
        u = interp.step_tensor(p, g.clone(), hypers, state, {}, gen)
        if k == 0 and late:
            state["step"] = late
        out.append(torch.broadcast_to(u, p.shape) if u is not None else p0 - p)
    return torch.stack(out)


def canonical_key(rule) -> str | None:
    """``optdsl.canonical_hash`` of the rule (None where it is missing or fails)."""
    import optdsl
    fn = getattr(optdsl, "canonical_hash", None)
    if fn is None:
        return None
    try:
        return str(fn(rule))
    except Exception:
        return None


@dataclass
class Candidate:
    """One rule as the search handles it (see the module docstring)."""
    text: str  # the program, printed from the IR
    rule: object  # the checked optdsl Rule
    key: str  # the cache key
    id: str | None = None  # the proposal id given by the strategy that made it
    fingerprint: str = ""  # of the probe updates on gradients A ('' when the probes failed)
    probe_error: str = ""  # why the probe run failed, if it did
    updates: tuple = field(default=(), repr=False)  # (updates on A, updates on B)


def build(source, id: str | None = None, text: str | None = None) -> Candidate:
    """A Candidate from program text or a checked Rule; raises DSLError for a bad program.

    ``text``: what to show and store instead of the printed program (the library's own source
    of a baseline, a user's seed file as written). The key is computed from the printed
    program (parsed again unless it is the source itself), so that equal programs get one key
    however they were written: the text a search stores always gives back its key."""
    import optdsl
    from optdsl.probes import rounded_digest, updates as probe_updates
    from .program import program_text
    rule = optdsl.parse(source) if isinstance(source, str) else source
    keyed = rule
    try:
        printed = program_text(rule)
        if printed != source:
            keyed = optdsl.parse(printed)
    except Exception:  # a rule the printer cannot render keeps the text it came as
        printed = source if isinstance(source, str) else rule.source
    text = printed if text is None else text
    p0, ga, gb = probes()
    updates, error, fp = (), "", ""
    try:
        updates = (probe_updates(rule, ga, p0), probe_updates(rule, gb, p0))
        fp = rounded_digest(torch.cat([u.flatten() for u in updates]))
    except Exception as e:  # e.g. a shape the interpreter rejects: keyed by the error
        error = f"error: {type(e).__name__}"
    canon = canonical_key(without_lr_default(keyed) if lr_scales(rule) else keyed)
    base = f"canon:{canon}" if canon is not None else text_hash(printed)
    scheme = base.split(":", 1)[0]
    special = special_digest(rule)
    digest = hashlib.sha256(f"{base}|{fp or error}|{special}".encode()).hexdigest()[:32]
    return Candidate(text, rule, f"{scheme}:{digest}", id, fp, error, updates)
