"""Learning-rate schedules: scalar multipliers f(t) of the base learning rate, in closed form.

A schedule is a pure function of the 1-based optimizer step ``t`` (``t = 1`` at the first
step) and a few float hyperparameters; it returns a Python float that multiplies ``lr``::

    lr * cosine(t, 5000) * g / (sqrt(ema(g^2, 0.99)) + 1e-8)

Every function uses only :mod:`math`, is written from the cited closed form (never by
replaying a framework's recursive update), accepts integers given as floats (``100.0``),
and raises :class:`ValueError` with a readable message for invalid arguments.

Step conventions (``k = t - 1`` is the number of steps already taken)
-------------------------------------------------------------------
* torch families (step, multistep, exponential, polynomial, linear, cosine, sgdr, cyclic_*,
  onecycle_*): ``f(t) * base_lr`` equals ``optimizer.param_groups[0]["lr"]`` after
  ``t - 1`` calls of ``scheduler.step()``, i.e. torch's ``last_epoch = k``. So ``f(1)`` is
  torch's initial factor. For onecycle the reference lr is ``max_lr`` (the lr the user
  passes); for cyclic_* it is whatever lr the user multiplies by (``base_factor`` and
  ``max_factor`` are relative to it).
* TensorFlow families (piecewise, reciprocal, linear_decay, cosine_decay, restart_decay,
  linear_cosine, noisy_linear_cosine): TF's ``global_step`` is 0 during the first update
  (``apply_gradients`` increments it afterwards), so ``f(t)`` is TF's value at
  ``global_step = k = t - 1``.
* Paper families that count from one (warmup, warmup_cosine, noam): ``f(t)`` uses ``t``
  itself, so the first step already gets a non-zero warm-up factor ``1/W``.

:data:`SCHEDULES` lists every schedule as a :class:`Schedule` (name, function, argument
names after ``t``, defaults, variadic flag, a one-line formula and the reference).
"""
from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Callable

__all__ = [
    "Schedule", "SCHEDULES",
    "constant", "step", "multistep", "piecewise", "exponential", "reciprocal", "polynomial",
    "linear", "cosine", "sgdr", "cyclic_triangular", "cyclic_triangular2", "cyclic_exp_range",
    "onecycle_cos", "onecycle_linear", "warmup", "warmup_cosine", "noam",
    "linear_decay", "cosine_decay", "restart_decay", "linear_cosine", "noisy_linear_cosine",
]


# ----------------------------------------------------------------------------- validation

def _num(name: str, x: object) -> float:
    """``x`` as a finite float, or a ValueError naming the argument."""
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {x!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    return v


def _step_t(t: object) -> float:
    v = _num("t", t)
    if v < 1:
        raise ValueError(f"t is the 1-based step count and must be >= 1, got {v:g} (a schedule "
                         "that starts later reads a step count that starts at 1, such as "
                         "max(t - 5, 1): both branches of where() are computed at every step)")
    return v


def _positive(name: str, x: object) -> float:
    v = _num(name, x)
    if v <= 0:
        raise ValueError(f"{name} must be > 0, got {v:g}")
    return v


def _nonneg(name: str, x: object) -> float:
    v = _num(name, x)
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {v:g}")
    return v


def _count(name: str, x: object, minimum: int = 1) -> int:
    """An integer-valued float (``100.0``) >= ``minimum``, returned as an int."""
    v = _num(name, x)
    if v != math.floor(v):
        raise ValueError(f"{name} must be a whole number, got {v:g}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v:g}")
    return int(v)


def _flag(name: str, x: object) -> bool:
    v = _num(name, x)
    if v not in (0.0, 1.0):
        raise ValueError(f"{name} is a flag and must be 0 or 1, got {v:g}")
    return v == 1.0


# ----------------------------------------------------------------------------- torch family

def constant(t: float) -> float:
    """f(t) = 1: the base learning rate unchanged."""
    _step_t(t)
    return 1.0


def step(t: float, step_size: float, gamma: float = 0.1) -> float:
    """torch StepLR: ``gamma ** floor((t-1) / step_size)``.

    ``step_size`` is a positive whole number of steps; ``gamma > 0`` (``> 1`` grows).
    """
    k = _step_t(t) - 1
    size = _count("step_size", step_size)
    g = _positive("gamma", gamma)
    return float(g ** (k // size))


def multistep(t: float, gamma: float, *milestones: float) -> float:
    """torch MultiStepLR: ``gamma ** #{m in milestones : m <= t-1}``.

    Milestones are whole numbers >= 0 in any order; a repeated milestone counts each time
    (as torch's Counter does). No milestones gives 1.
    """
    k = _step_t(t) - 1
    g = _positive("gamma", gamma)
    ms = [_count(f"milestone {i + 1}", m, minimum=0) for i, m in enumerate(milestones)]
    n = sum(1 for m in ms if m <= k)
    return float(g ** n)


def piecewise(t: float, *pieces: float) -> float:
    """TF ``piecewise_constant`` with interleaved arguments ``v0, b1, v1, ..., bn, vn``.

    With ``x = t - 1`` (TF's global_step): ``v0`` if ``x <= b1``; ``v_i`` if
    ``b_i < x <= b_{i+1}``; ``vn`` if ``x > bn``. Values are multipliers (>= 0) of the base
    lr; boundaries must be strictly increasing. Note TF's ``<=``: a boundary ``b`` switches
    value at step ``t = b + 2`` (MultiStepLR's milestone ``m`` switches at ``t = m + 1``).
    """
    x = _step_t(t) - 1
    if len(pieces) % 2 == 0:
        raise ValueError(
            "piecewise needs an odd number of arguments after t: v0, b1, v1, ..., bn, vn "
            f"(values interleaved with boundaries), got {len(pieces)}")
    values = [_nonneg(f"piecewise value {i}", v) for i, v in enumerate(pieces[0::2])]
    bounds = [_num(f"piecewise boundary {i + 1}", b) for i, b in enumerate(pieces[1::2])]
    for i in range(1, len(bounds)):
        if bounds[i] <= bounds[i - 1]:
            raise ValueError(
                f"piecewise boundaries must be strictly increasing, got {bounds[i - 1]:g} "
                f"then {bounds[i]:g}")
    for b, v in zip(bounds, values):
        if x <= b:
            return v
    return values[-1]


def exponential(t: float, gamma: float) -> float:
    """torch ExponentialLR: ``gamma ** (t-1)``; ``gamma > 0`` (``> 1`` for an LR range test)."""
    k = _step_t(t) - 1
    g = _positive("gamma", gamma)
    return float(g ** k)


def reciprocal(t: float, r: float) -> float:
    """Inverse-time decay ``1 / (1 + (t-1)/r)`` (TF ``inverse_time_decay`` with
    ``decay_rate = 1``, ``decay_steps = r``, at global_step ``t-1``); ``f(1) = 1``, halved at
    ``t = r + 1``. ``r > 0``."""
    k = _step_t(t) - 1
    rr = _positive("r", r)
    return 1.0 / (1.0 + k / rr)


def polynomial(t: float, total_iters: float = 5.0, power: float = 1.0) -> float:
    """torch PolynomialLR: ``(1 - min(t-1, T)/T) ** power`` with ``T = total_iters``
    (a positive whole number); 0 from ``t = T + 1`` on. ``power >= 0``."""
    k = _step_t(t) - 1
    T = _count("total_iters", total_iters)
    p = _nonneg("power", power)
    return float((1.0 - min(T, k) / T) ** p)


def linear(t: float, start_factor: float = 1.0 / 3, end_factor: float = 1.0,
           total_iters: float = 5.0) -> float:
    """torch LinearLR: ``s + (e - s) * min(t-1, T)/T``.

    ``T = total_iters`` is a positive whole number. Both factors must be >= 0; unlike torch
    (whose recursion divides by the factor) ``start_factor = 0`` and factors above 1 are
    allowed, since the closed form needs neither restriction.
    """
    k = _step_t(t) - 1
    s = _nonneg("start_factor", start_factor)
    e = _nonneg("end_factor", end_factor)
    T = _count("total_iters", total_iters)
    return s + (e - s) * min(T, k) / T


def cosine(t: float, T_max: float, min_factor: float = 0.0) -> float:
    """torch CosineAnnealingLR: ``m + (1 - m) * (1 + cos(pi * (t-1) / T_max)) / 2``.

    ``min_factor`` is torch's ``eta_min`` divided by the base lr. The formula is NOT clipped
    at ``T_max``: torch's recursive update keeps following this cosine past ``T_max`` (the
    lr climbs back to the base lr at ``t - 1 = 2 T_max``, period ``2 T_max``), and so does
    this function. Clip ``t`` yourself, or use ``cosine_decay``, to stay at the minimum.
    """
    k = _step_t(t) - 1
    T = _positive("T_max", T_max)
    m = _nonneg("min_factor", min_factor)
    return m + (1.0 - m) * (1.0 + math.cos(math.pi * k / T)) / 2


def _sgdr_position(k: float, T_0: int, T_mult: int) -> tuple[float, int]:
    """(steps since the last restart, current period length) after ``k`` steps."""
    if T_mult == 1:
        return k % T_0, T_0

    def start(n: int) -> int:  # first step of period n: T_0 (T_mult^n - 1) / (T_mult - 1)
        return T_0 * (T_mult ** n - 1) // (T_mult - 1)

    n = int(math.log(k * (T_mult - 1) / T_0 + 1, T_mult)) if k > 0 else 0
    while n > 0 and start(n) > k:   # correct the float log by exact integer comparisons
        n -= 1
    while start(n + 1) <= k:
        n += 1
    return k - start(n), T_0 * T_mult ** n


def sgdr(t: float, T_0: float, T_mult: float = 1.0, min_factor: float = 0.0) -> float:
    """torch CosineAnnealingWarmRestarts (SGDR): ``m + (1 - m)(1 + cos(pi T_cur / T_i)) / 2``.

    After ``k = t-1`` steps, period ``n`` is the one with
    ``T_0 (T_mult^n - 1)/(T_mult - 1) <= k`` (``n T_0`` when ``T_mult = 1``) before the next;
    ``T_i = T_0 T_mult^n`` and ``T_cur`` counts steps since that restart. ``T_0`` (>= 1)
    and ``T_mult`` (>= 1) are whole numbers, as torch requires; ``min_factor`` is eta_min
    divided by the base lr.
    """
    k = _step_t(t) - 1
    T0 = _count("T_0", T_0)
    mult = _count("T_mult", T_mult)
    m = _nonneg("min_factor", min_factor)
    T_cur, T_i = _sgdr_position(k, T0, mult)
    return m + (1.0 - m) * (1.0 + math.cos(math.pi * T_cur / T_i)) / 2


def _cyclic(t, base_factor, max_factor, step_size_up, step_size_down, scale) -> float:
    k = _step_t(t) - 1
    lo = _nonneg("base_factor", base_factor)
    hi = _nonneg("max_factor", max_factor)
    up = _positive("step_size_up", step_size_up)
    down = _nonneg("step_size_down", step_size_down)
    if down == 0:
        down = up
    total = up + down
    ratio = up / total
    cycle = math.floor(1 + k / total)
    x = 1.0 + k / total - cycle
    frac = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
    return lo + (hi - lo) * frac * scale(cycle, k)


def cyclic_triangular(t: float, base_factor: float, max_factor: float,
                      step_size_up: float = 2000.0, step_size_down: float = 0.0) -> float:
    """torch CyclicLR(mode='triangular'): ``lo + (hi - lo) * tri(t-1)``.

    ``tri`` rises linearly 0 -> 1 over ``step_size_up`` steps and falls back over
    ``step_size_down`` steps (0, the default, means equal to ``step_size_up`` — torch's
    None). ``base_factor``/``max_factor`` are torch's base_lr/max_lr divided by the lr.
    """
    return _cyclic(t, base_factor, max_factor, step_size_up, step_size_down,
                   lambda cycle, k: 1.0)


def cyclic_triangular2(t: float, base_factor: float, max_factor: float,
                       step_size_up: float = 2000.0, step_size_down: float = 0.0) -> float:
    """torch CyclicLR(mode='triangular2'): the triangle's height halves every cycle,
    ``lo + (hi - lo) * tri(t-1) / 2^(cycle-1)``, ``cycle = floor(1 + (t-1)/(up + down))``."""
    return _cyclic(t, base_factor, max_factor, step_size_up, step_size_down,
                   lambda cycle, k: 2.0 ** -(cycle - 1))  # underflows to 0: never inf


def cyclic_exp_range(t: float, base_factor: float, max_factor: float,
                     step_size_up: float = 2000.0, step_size_down: float = 0.0,
                     gamma: float = 1.0) -> float:
    """torch CyclicLR(mode='exp_range'): ``lo + (hi - lo) * tri(t-1) * gamma^(t-1)``; ``gamma > 0``."""
    g = _positive("gamma", gamma)
    return _cyclic(t, base_factor, max_factor, step_size_up, step_size_down,
                   lambda cycle, k: g ** k)


def _anneal_cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)


def _anneal_linear(start: float, end: float, pct: float) -> float:
    return (end - start) * pct + start


def _onecycle(t, total_steps, pct_start, div_factor, final_div_factor, three_phase,
              anneal: Callable[[float, float, float], float]) -> float:
    t = _step_t(t)
    total = _count("total_steps", total_steps)
    pct = _num("pct_start", pct_start)
    if not 0.0 <= pct <= 1.0:
        raise ValueError(f"pct_start must be between 0 and 1, got {pct:g}")
    div = _positive("div_factor", div_factor)
    final_div = _positive("final_div_factor", final_div_factor)
    three = _flag("three_phase", three_phase)
    end_up = float(pct * total) - 1
    if end_up == 0:
        raise ValueError(
            f"pct_start * total_steps must not be 1 (got {pct:g} * {total}): the warm-up "
            "phase would have zero length (torch divides by zero here)")
    k = min(t - 1, total - 1)  # past total_steps, hold the final value
    initial = 1.0 / div
    final = initial / final_div
    if three:
        phases = ((end_up, initial, 1.0),
                  (float(2 * pct * total) - 2, 1.0, initial),
                  (total - 1, initial, final))
    else:
        phases = ((end_up, initial, 1.0), (total - 1, 1.0, final))
    start = 0.0
    for i, (end, a, b) in enumerate(phases):
        if k <= end or i == len(phases) - 1:
            return anneal(a, b, (k - start) / (end - start))
        start = end
    raise AssertionError("unreachable")


def onecycle_cos(t: float, total_steps: float, pct_start: float = 0.3,
                 div_factor: float = 25.0, final_div_factor: float = 1e4,
                 three_phase: float = 0.0) -> float:
    """torch OneCycleLR(anneal_strategy='cos'), as a multiplier of ``max_lr``.

    Cosine from ``1/div_factor`` up to 1 over ``pct_start * total_steps`` steps, then down to
    ``1/(div_factor * final_div_factor)`` at ``t = total_steps`` (``three_phase = 1``: back
    to ``1/div_factor`` symmetrically, then down to the minimum). For ``t > total_steps`` the
    final value is held (torch extrapolates its last phase one step further, at ``t =
    total_steps + 1``: linear annealing goes below 0 there, and raises after).
    """
    return _onecycle(t, total_steps, pct_start, div_factor, final_div_factor, three_phase,
                     _anneal_cos)


def onecycle_linear(t: float, total_steps: float, pct_start: float = 0.3,
                    div_factor: float = 25.0, final_div_factor: float = 1e4,
                    three_phase: float = 0.0) -> float:
    """torch OneCycleLR(anneal_strategy='linear'), as a multiplier of ``max_lr``; same
    phases as :func:`onecycle_cos` with linear interpolation."""
    return _onecycle(t, total_steps, pct_start, div_factor, final_div_factor, three_phase,
                     _anneal_linear)


# ----------------------------------------------------------------------------- papers

def warmup(t: float, W: float) -> float:
    """Linear warm-up ``min(1, t / W)`` (Goyal et al. 2017, gradual warm-up), 1-based.

    The first step gets ``1/W`` (never 0), step ``W`` and later get 1. ``W = 0`` means no
    warm-up (always 1). Compose by multiplication, e.g. ``warmup(t, 500) * cosine(t, 10000)``.
    """
    t = _step_t(t)
    w = _nonneg("W", W)
    if w == 0:
        return 1.0
    return min(1.0, t / w)


def warmup_cosine(t: float, W: float, T: float, min_factor: float = 0.0) -> float:
    """Linear warm-up then cosine decay, ending at ``min_factor`` at step ``T``.

    ``t / W`` for ``t <= W``; then ``m + (1 - m)(1 + cos(pi p))/2`` with
    ``p = min(1, (t - W) / (T - W))``, so ``f(W) = 1`` and ``f(t) = m`` for ``t >= T``.
    Requires ``0 <= W < T``.
    """
    t = _step_t(t)
    w = _nonneg("W", W)
    total = _positive("T", T)
    m = _nonneg("min_factor", min_factor)
    if total <= w:
        raise ValueError(f"T (total steps) must be greater than W (warm-up steps), "
                         f"got T={total:g}, W={w:g}")
    if t <= w:
        return t / w
    p = min(1.0, (t - w) / (total - w))
    return m + (1.0 - m) * (1.0 + math.cos(math.pi * p)) / 2


def noam(t: float, d_model: float, warmup: float = 4000.0) -> float:
    """Transformer ("Noam") schedule, Vaswani et al. 2017 eq. 3, with step_num = t:
    ``d_model^-0.5 * min(t^-0.5, t * warmup^-1.5)``.

    This is the paper's absolute lr; as a multiplier use ``lr = 1`` (or a scale factor).
    """
    t = _step_t(t)
    d = _positive("d_model", d_model)
    w = _positive("warmup", warmup)
    return d ** -0.5 * min(t ** -0.5, t * w ** -1.5)


# ----------------------------------------------------------------------------- TensorFlow

def linear_decay(t: float, decay_steps: float) -> float:
    """TF ``sign_decay.get_linear_decay_fn`` (Bello et al. 2017), at global_step ``t-1``:
    ``max(0, (T - min(t-1, T)) / T)``. TF casts the step difference to int32, which only
    matters for fractional ``t``/``T``; here the subtraction is exact in floats."""
    gs = _step_t(t) - 1
    T = _positive("decay_steps", decay_steps)
    gs = min(gs, T)
    return max(0.0, (T - gs) / T)


def cosine_decay(t: float, decay_steps: float, num_periods: float = 0.5) -> float:
    """TF ``sign_decay.get_cosine_decay_fn``, at global_step ``x = min(t-1, T)``:
    ``0.5 * (1 + cos(pi * 2 * num_periods * x / T))``; with the default 0.5 periods it
    reaches 0 at ``t = T + 1`` and stays there."""
    gs = _step_t(t) - 1
    T = _positive("decay_steps", decay_steps)
    n = _nonneg("num_periods", num_periods)
    gs = min(gs, T)
    fraction = 2.0 * n * (gs / T)
    return 0.5 * (1.0 + math.cos(math.pi * fraction))


def restart_decay(t: float, decay_steps: float, num_periods: float = 1.0) -> float:
    """TF ``sign_decay.get_restart_decay_fn``, at global_step ``x = min(t-1, T)``:
    ``0.5 * (1 + cos(pi * ((num_periods * x) mod T) / T))``.

    Exactly as TF: since ``x`` is clipped to ``T`` and ``(n T) mod T = 0`` for whole ``n``,
    the value jumps back to 1 at ``t = T + 1`` and stays 1 afterwards.
    """
    gs = _step_t(t) - 1
    T = _positive("decay_steps", decay_steps)
    n = _nonneg("num_periods", num_periods)
    gs = min(gs, T)
    num = (n * gs) % T
    return 0.5 * (1.0 + math.cos(math.pi * (num / T)))


def _lin_cos_parts(t, decay_steps, num_periods):
    gs = _step_t(t) - 1
    T = _positive("decay_steps", decay_steps)
    n = _nonneg("num_periods", num_periods)
    gs = min(gs, T)
    linear_decayed = (T - gs) / T
    fraction = 2.0 * n * (gs / T)
    cosine_decayed = 0.5 * (1.0 + math.cos(math.pi * fraction))
    return gs, linear_decayed, cosine_decayed


def linear_cosine(t: float, decay_steps: float, num_periods: float = 0.5,
                  alpha: float = 0.0, beta: float = 0.001) -> float:
    """TF ``linear_cosine_decay`` (Bello et al. 2017), at global_step ``x = min(t-1, T)``:
    ``(alpha + (T - x)/T) * 0.5 * (1 + cos(pi * 2 * num_periods * x / T)) + beta``."""
    a = _nonneg("alpha", alpha)
    b = _nonneg("beta", beta)
    _, lin, cos_ = _lin_cos_parts(t, decay_steps, num_periods)
    return (a + lin) * cos_ + b


def noisy_linear_cosine(t: float, decay_steps: float, noise: float,
                        initial_variance: float = 1.0, variance_decay: float = 0.55,
                        num_periods: float = 0.5, alpha: float = 0.0,
                        beta: float = 0.001) -> float:
    """TF ``noisy_linear_cosine_decay``, at global_step ``x = min(t-1, T)``:
    ``(alpha + (T - x)/T + eps) * 0.5 * (1 + cos(pi * 2 * num_periods * x / T)) + beta``,
    ``eps = noise * sqrt(initial_variance / (1 + x)^variance_decay)``.

    ``noise`` is a standard normal draw supplied by the caller (one per step), which keeps
    this function pure; the result may be negative, as in TF.
    """
    eps0 = _num("noise", noise)
    iv = _nonneg("initial_variance", initial_variance)
    vd = _nonneg("variance_decay", variance_decay)
    a = _nonneg("alpha", alpha)
    b = _nonneg("beta", beta)
    gs, lin, cos_ = _lin_cos_parts(t, decay_steps, num_periods)
    std = math.sqrt(iv / (1.0 + gs) ** vd)
    return (a + (lin + eps0 * std)) * cos_ + b


# ----------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class Schedule:
    """One schedule primitive: called as ``name(t, args...)`` in the language.

    ``params`` are the argument names after ``t`` in order; when ``variadic`` is true the
    last name collects any number of further positional arguments. ``defaults`` holds the
    values of optional trailing arguments.
    """

    name: str
    fn: Callable[..., float]
    params: tuple[str, ...]
    defaults: dict[str, float] = field(hash=False)
    variadic: bool
    doc: str
    reference: str

    def __call__(self, t: float, *args: float, **kwargs: float) -> float:
        return self.fn(t, *args, **kwargs)


def _entry(fn: Callable[..., float], doc: str, reference: str) -> Schedule:
    """A registry row whose params/defaults/variadic are read off ``fn``'s signature."""
    sig = list(inspect.signature(fn).parameters.values())
    assert sig[0].name == "t", fn.__name__
    rest = sig[1:]
    return Schedule(
        name=fn.__name__,
        fn=fn,
        params=tuple(p.name for p in rest),
        defaults={p.name: float(p.default) for p in rest
                  if p.default is not inspect.Parameter.empty},
        variadic=any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in rest),
        doc=doc,
        reference=reference,
    )


_TORCH = "torch.optim.lr_scheduler."

SCHEDULES: dict[str, Schedule] = {s.name: s for s in (
    _entry(constant, "1", "constant learning rate"),
    _entry(step, "gamma^floor((t-1)/step_size)", _TORCH + "StepLR"),
    _entry(multistep, "gamma^#{m in milestones: m <= t-1}", _TORCH + "MultiStepLR"),
    _entry(piecewise, "v_i for b_i < t-1 <= b_{i+1} (args v0, b1, v1, ..., bn, vn)",
           "tf.compat.v1.train.piecewise_constant"),
    _entry(exponential, "gamma^(t-1)", _TORCH + "ExponentialLR"),
    _entry(reciprocal, "1/(1 + (t-1)/r)",
           "inverse time decay, tf.compat.v1.train.inverse_time_decay (decay_rate=1)"),
    _entry(polynomial, "(1 - min(t-1, T)/T)^power", _TORCH + "PolynomialLR"),
    _entry(linear, "s + (e - s) min(t-1, T)/T", _TORCH + "LinearLR"),
    _entry(cosine, "m + (1-m)(1 + cos(pi (t-1)/T_max))/2 (not clipped: periodic like torch)",
           _TORCH + "CosineAnnealingLR; Loshchilov & Hutter 2017"),
    _entry(sgdr, "m + (1-m)(1 + cos(pi T_cur/T_i))/2, T_i = T_0 T_mult^n",
           _TORCH + "CosineAnnealingWarmRestarts; Loshchilov & Hutter 2017 (SGDR)"),
    _entry(cyclic_triangular, "lo + (hi-lo) tri(t-1)",
           _TORCH + "CyclicLR(mode='triangular'); Smith 2017"),
    _entry(cyclic_triangular2, "lo + (hi-lo) tri(t-1) / 2^(cycle-1)",
           _TORCH + "CyclicLR(mode='triangular2'); Smith 2017"),
    _entry(cyclic_exp_range, "lo + (hi-lo) tri(t-1) gamma^(t-1)",
           _TORCH + "CyclicLR(mode='exp_range'); Smith 2017"),
    _entry(onecycle_cos, "cosine 1/div -> 1 -> 1/(div final_div) over total_steps (x max_lr)",
           _TORCH + "OneCycleLR(anneal_strategy='cos'); Smith & Topin 2017"),
    _entry(onecycle_linear, "linear 1/div -> 1 -> 1/(div final_div) over total_steps (x max_lr)",
           _TORCH + "OneCycleLR(anneal_strategy='linear'); Smith & Topin 2017"),
    _entry(warmup, "min(1, t/W)", "linear warm-up, Goyal et al. 2017"),
    _entry(warmup_cosine, "t/W for t <= W, then m + (1-m)(1 + cos(pi min(1, (t-W)/(T-W))))/2",
           "linear warm-up (Goyal et al. 2017) + cosine decay (Loshchilov & Hutter 2017)"),
    _entry(noam, "d_model^-0.5 min(t^-0.5, t warmup^-1.5)",
           "Vaswani et al. 2017, Attention Is All You Need, eq. 3"),
    _entry(linear_decay, "max(0, (T - min(t-1, T))/T)",
           "tf.contrib.opt sign_decay.get_linear_decay_fn; Bello et al. 2017"),
    _entry(cosine_decay, "0.5(1 + cos(2 pi num_periods min(t-1, T)/T))",
           "tf.contrib.opt sign_decay.get_cosine_decay_fn; Bello et al. 2017"),
    _entry(restart_decay, "0.5(1 + cos(pi ((num_periods min(t-1, T)) mod T)/T))",
           "tf.contrib.opt sign_decay.get_restart_decay_fn; Bello et al. 2017"),
    _entry(linear_cosine, "(alpha + (T-x)/T) 0.5(1 + cos(2 pi num_periods x/T)) + beta, x = min(t-1, T)",
           "tf.compat.v1.train.linear_cosine_decay; Bello et al. 2017"),
    _entry(noisy_linear_cosine,
           "(alpha + (T-x)/T + noise sqrt(iv/(1+x)^vd)) 0.5(1 + cos(2 pi num_periods x/T)) + beta",
           "tf.compat.v1.train.noisy_linear_cosine_decay; Bello et al. 2017"),
)}
