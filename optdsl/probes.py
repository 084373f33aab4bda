"""Numeric probes of rules: the one place for fixed probe inputs, trajectories, rounding and
the question "does this rule draw random numbers?".

The cheap analyses run rules on numbers before (or instead of) reasoning about them: the
canonical form's fingerprint, the search's degenerate and duplicate filters, equivalence's
refutation by counterexample, the search's family test. They all use these pieces, so a
"numerically equal" means the same thing everywhere.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from . import ir
from .interpreter import trajectory
from .ir import Rule
from .primitives import PRIMITIVES


def random_nodes(rule: Rule) -> list:
    """The rule's nodes that draw from the optimizer's generator (noise, drop, randn), in its
    outputs and its states' initial values."""
    return [n for n in ir.topological(rule.outputs() + [s.init for s in rule.slots])
            if n.op in PRIMITIVES and PRIMITIVES[n.op].random]


def is_random(rule: Rule) -> bool:
    """True when the rule draws from the optimizer's generator (noise, drop, randn)."""
    return bool(random_nodes(rule))


def gradient_stream(generator: torch.Generator, steps: int, size: int,
                    decades: tuple = (-2.0, 1.0)) -> tuple:
    """(p0, g_1 .. g_steps): a standard normal start and an iterator of gradients whose
    magnitudes spread over ``decades`` (log10 of the smallest and largest scale), float64,
    drawn from ``generator`` as they are read (a probe that stops early draws no more)."""
    lo, hi = decades
    p0 = torch.randn(size, generator=generator, dtype=torch.float64)

    def grads():
        for _ in range(steps):
            scale = 10 ** (torch.rand(size, generator=generator, dtype=torch.float64) * (hi - lo)
                           + lo)
            yield torch.randn(size, generator=generator, dtype=torch.float64) * scale
    return p0, grads()


def with_special_values(p0: torch.Tensor, grads, cancel: tuple = ()) -> tuple:
    """Copies of (p0, grads) with the exact values random draws never hit, where generic-point
    identities fail (x/x, |x|/x and sign(x)^2 differ from 1 and sign(x) at 0; (g^2 - 1)/(g - 1)
    from g + 1 at 1; sign(g - prev(g)) from +-1 where a gradient repeats, sign(g + prev(g)) where
    it flips): p is 0 at every 4th entry and 1 at the next (LayerNorm weights start at 1); of
    each gradient a third is 0, a sixth repeats the step before and a sixth is its negative
    (+-1 at the first step), a sixth is +1 or -1 (the bounds of clip_grad_value_), shifted each
    step. Dead units and unused rows make such values common. For each ``b`` of ``cancel``
    (at most a sixth of the elements), one element reads ``c = +-1`` and then ``-b c``, so that
    ``ema(g, b)`` is exactly 0 at the second step (``b (1-b) c`` and ``(1-b) b c`` round alike:
    momentum that cancels, where ``sign`` of it is 0).
    The gradients are an iterator, made as they are read."""
    p = p0.clone()
    p[::4] = 0.0
    p[1::4] = 1.0

    def special():
        last = None
        for k, g in enumerate(grads):
            g = g.clone()
            z = k % 3
            g[z::3] = 0.0
            r = (z + 1) % 3
            if last is not None:
                g[r::6] = last[r::6]
                g[r + 3::6] = -last[r + 3::6]
            else:
                n = len(g[r::3])
                g[r::3] = torch.tensor([1.0, -1.0], dtype=g.dtype).repeat(n)[:n]
            g[(z + 2) % 3 + 3::6] = 1.0 if k % 2 == 0 else -1.0
            for i, b in enumerate(cancel[:len(g) // 6] if k < 2 else ()):
                c = 1.0 if i % 2 == 0 else -1.0
                g[-1 - i] = c if k == 0 else -b * c
            last = g
            yield g
    return p, special()


def updates(rule: Rule, grads, p0, hypers: dict | None = None, seed: int = 0) -> torch.Tensor:
    """The updates (``p_before - p_after``, stacked by step) of ``rule`` on ``grads`` from
    ``p0`` with the reference interpreter; hyperparameters are the rule's defaults with
    ``lr = 1`` unless ``hypers`` says otherwise."""
    values = {**rule.defaults, "lr": 1.0, **(hypers or {})}
    with np.errstate(all="ignore"):
        return torch.stack(trajectory(rule, values, p0, grads, seed))


def rounded_digest(values, digits: int = 6, size: int = 24) -> str:
    """A hex digest of numbers rounded to ``digits`` significant digits (NaN and infinities
    included as such): equal digests mean numerically equal to that precision."""
    flat = torch.cat([torch.as_tensor(v, dtype=torch.float64).flatten() for v in values]) \
        if isinstance(values, (list, tuple)) else torch.as_tensor(values).flatten()
    text = ",".join(f"{float(x):.{digits - 1}e}" for x in flat)
    return hashlib.sha256(text.encode()).hexdigest()[:size]


_FINGERPRINT_INPUTS = None


def fingerprint_inputs() -> tuple:
    """(p0, grads): 8 elements, 6 steps whose magnitudes shrink (so that second moments then
    decrease, and AMSGrad differs from Adam)."""
    global _FINGERPRINT_INPUTS
    if _FINGERPRINT_INPUTS is None:
        gen = torch.Generator().manual_seed(20240531)
        p0 = torch.randn(8, generator=gen, dtype=torch.float64)
        grads = [torch.randn(8, generator=gen, dtype=torch.float64) * 10 ** (1 - 0.5 * i) *
                 10 ** (torch.rand(8, generator=gen, dtype=torch.float64) - 0.5) for i in range(6)]
        _FINGERPRINT_INPUTS = (p0, grads)
    return _FINGERPRINT_INPUTS
