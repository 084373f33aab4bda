"""Gradient streams with the structure update rules react to, and a rule's updates on them.

Two consumers: the behaviour-match task scores a candidate on one set (``search.match``: 40
steps, 64 elements per stream, seed 2017), and the near-copy filter compares candidates on a
smaller set of their own (``search.filters``: 16 steps, 8 elements per stream, seed 11), so
that "the same behaviour" means what a match score can tell apart.

Each stream is one parameter tensor of ``width`` elements over ``steps`` steps, float64:

* every element has its own scale ``a = 10^U(-3, 0)`` (three decades) and a persistent mean of
  random sign, ``g_t = a * d_t * (rho * s + noise_t)``, noise N(0, 1), and every gradient
  shrinks by a decade over the stream (``d_t = 10^(-t/steps)``): magnitudes, their trend and
  the sign agreement of g with its running average all matter;
* the streams differ in signal to noise ``rho`` (``KINDS``): *steady* ``10^U(-0.3, 1)`` (g
  keeps its sign), *noisy* ``10^U(-1.5, -0.3)`` (g and its average often disagree),
  *switching* ``10^U(-0.5, 0.5)`` with the mean's sign flipped after half the steps (momentum
  lags behind);
* the parameter is teacher-forced, the same for every rule: ``p_t = p_0 (1 - 0.01 t)``,
  ``p_0`` N(0, 1); each step starts from ``p_t`` and the update is ``p_t - p_after``;
* a *cancelling* stream is made of inputs where states are exactly 0, which random gradients
  never give and optimizers meet (a rule that equals AddSign wherever the ema is not 0 steps
  1e8 g where it is): pairs of steps ``c_k``, then ``-0.9 c_k`` (``ema(g, 0.9)`` is exactly 0
  after each pair, as it was before it) or ``-c_k`` (``g + prev(g)`` is), throughout, with
  ``c_k = +-2^j`` the power of two nearest the element's scale ``a d_t``, so that float64
  rounds every element as it rounds ``c = 1``. Half of its steps see the ema at 0, so that a
  rule wrong only there is as far from its target, for the match score and the near-copy
  filter, as a rule wrong on a typical input. (Until match protocol version 4 only the first
  pair cancelled, an *exact* stream steady afterwards: 1 of 40 steps in a quarter of the
  elements, and ``g sqrt|sign(g) + sign(m)|``, AddSign but where m = 0, was a near-copy of
  AddSign: after it AddSign was never evaluated.)
"""
from __future__ import annotations

import functools

import numpy as np
import torch

KINDS = {  # name -> (log10 rho range, whether the mean flips sign after half the steps,
    #                   whether the steps cancel in pairs)
    "steady": ((-0.3, 1.0), False, False),
    "noisy": ((-1.5, -0.3), False, False),
    "switching": ((-0.5, 0.5), True, False),
    "cancelling": ((-0.3, 1.0), False, True),
}


@functools.lru_cache(maxsize=None)
def make(seed: int, steps: int, width: int) -> tuple:
    """(p_t per step, g_t per step): each a list over steps of [one tensor per kind]. Made
    once per arguments and shared: callers read the tensors, never write them."""
    gen = torch.Generator().manual_seed(seed)

    def uniform(lo, hi):
        return lo + (hi - lo) * torch.rand(width, generator=gen, dtype=torch.float64)

    ps, gs = [[] for _ in range(steps)], [[] for _ in range(steps)]
    for (lo, hi), flips, cancels in KINDS.values():
        scale = 10 ** uniform(-3, 0)
        rho = 10 ** uniform(lo, hi)
        sign = torch.where(torch.rand(width, generator=gen) < 0.5, -1.0, 1.0).double()
        p0 = torch.randn(width, generator=gen, dtype=torch.float64)
        for t in range(1, steps + 1):
            s = -sign if flips and t > steps // 2 else sign
            noise = torch.randn(width, generator=gen, dtype=torch.float64)
            gs[t - 1].append(scale * 10 ** (-t / steps) * (rho * s + noise))
            ps[t - 1].append(p0 * (1 - 0.01 * t))
        if cancels:  # the draws above are made all the same: the other streams keep theirs
            second = torch.full((width,), -1.0, dtype=torch.float64)  # odd: g + prev(g) at 0
            second[::2] = -0.9  # even elements: ema(g, 0.9) at 0
            for t in range(1, steps + 1, 2):  # the pair (t, t + 1)
                c = sign * 2.0 ** torch.round(torch.log2(scale * 10 ** (-t / steps)))
                gs[t - 1][-1] = c
                if t < steps:
                    gs[t][-1] = second * c
    return ps, gs


def updates(rule, hypers: dict, ps: list, gs: list, late: int = 0) -> torch.Tensor:
    """The rule's updates on streams ``(ps, gs)`` at ``hypers``: (steps, kinds x width), as the
    rule computes them (``p - p_after`` for a rule that assigns ``p``), on the
    reference interpreter (random primitives from a generator seeded 0), as an optimizer
    steps one tensor per stream: one scalar cache per step, per-tensor reductions per tensor.
    With ``late``, the steps after the first are counted from ``late`` on (t = late + 1, ...):
    the streams as met late in a training, where its schedules have moved."""
    from optdsl.interpreter import Interpreter
    interp = Interpreter(rule)
    states = [{} for _ in ps[0]]
    gen = torch.Generator().manual_seed(0)
    width = len(ps[0][0])
    out = torch.empty(len(ps), len(ps[0]) * width, dtype=torch.float64)
    with np.errstate(all="ignore"):
        for t, (pt, gt) in enumerate(zip(ps, gs)):
            cache: dict = {}
            for k, (p, g, st) in enumerate(zip(pt, gt, states)):
                q = p.clone()
                u = interp.step_tensor(q, g.clone(), hypers, st, cache, gen)
                # the update as computed: p - q keeps only the digits of |u| / |p|
                out[t, k * width:(k + 1) * width] = p - q if u is None else u
                if t == 0 and late:
                    st["step"] = late
    return out
