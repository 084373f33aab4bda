"""optdsl.schedules against torch.optim.lr_scheduler (2000 steps each) and against loops
written here from the cited formulas (TensorFlow's code structure, the papers)."""
from __future__ import annotations

import dataclasses
import inspect
import math
import random
import warnings

import pytest
import torch

from optdsl import schedules as S

N = 2000          # steps compared per configuration
RTOL = 1e-10      # relative tolerance against the reference
FLOOR = 1e-12     # relative error is measured against max(|reference|, FLOOR)


def rel_err(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), FLOOR)


def assert_close_seq(ours: list[float], ref: list[float], label: str) -> float:
    """Every pair within RTOL; returns the worst relative error."""
    assert len(ours) == len(ref)
    worst, at = 0.0, 0
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert isinstance(a, float), f"{label}: t={i + 1} returned {type(a).__name__}"
        e = rel_err(a, b)
        if e > worst:
            worst, at = e, i + 1
    assert worst <= RTOL, (
        f"{label}: relative error {worst:.3g} at t={at}: ours {ours[at - 1]!r}, "
        f"reference {ref[at - 1]!r}")
    return worst


def torch_lrs(make_sched, lr: float, n: int = N, momentum: float = 0.0) -> list[float]:
    """The lr an SGD optimizer uses at steps t = 1..n under ``make_sched(opt)``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
        opt = torch.optim.SGD([p], lr=lr, momentum=momentum)
        sched = make_sched(opt)
        out = []
        for t in range(1, n + 1):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            if t < n:
                sched.step()
    return out


def ours(fn, *args, n: int = N, scale: float = 1.0, **kwargs) -> list[float]:
    return [scale * fn(float(t), *args, **kwargs) for t in range(1, n + 1)]


LR = 0.1
LRS = torch.optim.lr_scheduler


# ----------------------------------------------------------------------------- torch

@pytest.mark.parametrize("step_size, gamma", [(30, 0.1), (1, 0.995), (7, 0.5), (500, 2.0)])
def test_step_matches_torch(step_size, gamma):
    ref = torch_lrs(lambda o: LRS.StepLR(o, step_size=step_size, gamma=gamma), LR)
    got = ours(S.step, float(step_size), gamma, scale=LR)
    assert_close_seq(got, ref, f"StepLR({step_size}, {gamma})")


@pytest.mark.parametrize("gamma, milestones", [
    (0.1, [30, 80]), (0.5, [1, 1, 500, 1000, 1500]), (0.9, [1999, 0, 10]), (0.3, []),
])
def test_multistep_matches_torch(gamma, milestones):
    ref = torch_lrs(lambda o: LRS.MultiStepLR(o, milestones=milestones, gamma=gamma), LR)
    got = ours(S.multistep, gamma, *[float(m) for m in milestones], scale=LR)
    assert_close_seq(got, ref, f"MultiStepLR({milestones}, {gamma})")


@pytest.mark.parametrize("gamma", [0.99, 0.999, 1.001, 0.95])
def test_exponential_matches_torch(gamma):
    ref = torch_lrs(lambda o: LRS.ExponentialLR(o, gamma=gamma), LR)
    assert_close_seq(ours(S.exponential, gamma, scale=LR), ref, f"ExponentialLR({gamma})")


@pytest.mark.parametrize("total_iters, power", [
    (5, 1.0), (1000, 0.9), (1999, 2.0), (2500, 0.5), (1, 1.0),
])
def test_polynomial_matches_torch(total_iters, power):
    ref = torch_lrs(lambda o: LRS.PolynomialLR(o, total_iters=total_iters, power=power), LR)
    got = ours(S.polynomial, float(total_iters), power, scale=LR)
    assert_close_seq(got, ref, f"PolynomialLR({total_iters}, {power})")


@pytest.mark.parametrize("start, end, total_iters", [
    (1 / 3, 1.0, 5), (0.05, 1.0, 40), (1.0, 0.1, 1500), (1.0, 0.0, 1000), (0.5, 0.0, 2000),
])
def test_linear_matches_torch(start, end, total_iters):
    ref = torch_lrs(lambda o: LRS.LinearLR(o, start_factor=start, end_factor=end,
                                           total_iters=total_iters), LR)
    got = ours(S.linear, start, end, float(total_iters), scale=LR)
    assert_close_seq(got, ref, f"LinearLR({start}, {end}, {total_iters})")


@pytest.mark.parametrize("T_max, min_factor", [
    (100, 0.0), (333, 0.5), (1000, 0.01), (2000, 0.0), (7, 0.1), (1, 0.0), (2, 0.0),
])
def test_cosine_matches_torch_past_T_max(T_max, min_factor):
    # 2000 steps run far past T_max for most rows: torch keeps following the cosine.
    ref = torch_lrs(lambda o: LRS.CosineAnnealingLR(o, T_max=T_max, eta_min=min_factor * LR),
                    LR)
    got = ours(S.cosine, float(T_max), min_factor, scale=LR)
    assert_close_seq(got, ref, f"CosineAnnealingLR({T_max}, {min_factor})")


@pytest.mark.parametrize("T_0, T_mult, min_factor", [
    (10, 1, 0.0), (1, 1, 0.0), (37, 1, 0.2), (10, 2, 0.05), (1, 2, 0.1), (50, 2, 0.0),
    (7, 3, 0.0),
])
def test_sgdr_matches_torch(T_0, T_mult, min_factor):
    ref = torch_lrs(lambda o: LRS.CosineAnnealingWarmRestarts(
        o, T_0=T_0, T_mult=T_mult, eta_min=min_factor * LR), LR)
    got = ours(S.sgdr, float(T_0), float(T_mult), min_factor, scale=LR)
    assert_close_seq(got, ref, f"CosineAnnealingWarmRestarts({T_0}, {T_mult}, {min_factor})")


CYCLIC = [  # base_factor, max_factor, step_size_up, step_size_down (None = torch default)
    (0.1, 1.0, 100, None), (0.01, 1.0, 37, 113), (0.5, 2.0, 250, 50), (0.0, 1.0, 1, None),
]


@pytest.mark.parametrize("mode", ["triangular", "triangular2", "exp_range"])
@pytest.mark.parametrize("base_f, max_f, up, down", CYCLIC)
def test_cyclic_matches_torch(mode, base_f, max_f, up, down):
    gamma = 0.9995 if mode == "exp_range" else 1.0
    ref = torch_lrs(lambda o: LRS.CyclicLR(
        o, base_lr=base_f * LR, max_lr=max_f * LR, step_size_up=up, step_size_down=down,
        mode=mode, gamma=gamma, cycle_momentum=False), LR)
    fn = {"triangular": S.cyclic_triangular, "triangular2": S.cyclic_triangular2,
          "exp_range": S.cyclic_exp_range}[mode]
    extra = (gamma,) if mode == "exp_range" else ()
    got = ours(fn, base_f, max_f, float(up), 0.0 if down is None else float(down), *extra,
               scale=LR)
    assert_close_seq(got, ref, f"CyclicLR({mode}, {base_f}, {max_f}, {up}, {down})")


def test_cyclic_exp_range_with_momentum_cycling():
    # The common default setup: SGD with momentum, cycle_momentum=True, a second gamma.
    ref = torch_lrs(lambda o: LRS.CyclicLR(o, base_lr=0.002, max_lr=0.1, step_size_up=150,
                                           mode="exp_range", gamma=0.999), LR, momentum=0.9)
    got = ours(S.cyclic_exp_range, 0.02, 1.0, 150.0, 0.0, 0.999, scale=LR)
    assert_close_seq(got, ref, "CyclicLR(exp_range, momentum)")


ONECYCLE = [  # total_steps, pct_start, div_factor, final_div_factor
    (2000, 0.3, 25.0, 1e4), (1000, 0.25, 10.0, 100.0), (537, 0.45, 5.0, 1e3),
    (300, 0.6, 25.0, 1e4), (100, 0.005, 25.0, 1e4),
]


@pytest.mark.parametrize("strategy", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("total, pct, div, final_div", ONECYCLE)
def test_onecycle_matches_torch(strategy, three_phase, total, pct, div, final_div):
    max_lr = 0.3
    ref = torch_lrs(lambda o: LRS.OneCycleLR(
        o, max_lr=max_lr, total_steps=total, pct_start=pct, anneal_strategy=strategy,
        div_factor=div, final_div_factor=final_div, three_phase=three_phase),
        LR, n=total, momentum=0.9)
    fn = S.onecycle_cos if strategy == "cos" else S.onecycle_linear
    got = ours(fn, float(total), pct, div, final_div, float(three_phase), n=total, scale=max_lr)
    assert_close_seq(got, ref, f"OneCycleLR({strategy}, 3p={three_phase}, {total}, {pct})")


def test_onecycle_holds_final_value_past_total_steps():
    for fn in (S.onecycle_cos, S.onecycle_linear):
        last = fn(500.0, 500.0)
        assert last == pytest.approx(1 / (25 * 1e4), rel=1e-12)
        assert fn(501.0, 500.0) == last and fn(10_000.0, 500.0) == last


# ----------------------------------------------------------------------------- sgdr, exact periods

def test_sgdr_period_boundaries_far_out():
    """Restart positions from a cumulative loop, at and around each restart, to t ~ 1e12."""
    for T_0, T_mult in [(1, 2), (3, 2), (10, 3), (5, 7)]:
        start, T_i = 0, T_0
        while start < 10**12:
            for k in (start - 1, start, start + 1, start + T_i // 2):
                if k < 0:
                    continue
                # reference position: walk the periods again from the beginning
                s, ti = 0, T_0
                while k >= s + ti:
                    s, ti = s + ti, ti * T_mult
                expect = (1 + math.cos(math.pi * (k - s) / ti)) / 2
                assert S.sgdr(float(k + 1), float(T_0), float(T_mult)) == pytest.approx(
                    expect, rel=1e-12, abs=1e-15), (T_0, T_mult, k)
            start, T_i = start + T_i, T_i * T_mult


# ----------------------------------------------------------------------------- TensorFlow formulas
# TF evaluates a schedule at its global_step, which is 0 during the first update. Each
# reference below is TF's function body transcribed; the loop advances global_step from 0.

def tf_piecewise_constant(x, boundaries, values):
    if x <= boundaries[0]:
        return values[0]
    if x > boundaries[-1]:
        return values[-1]
    for low, high, v in zip(boundaries[:-1], boundaries[1:], values[1:-1]):
        if low < x <= high:
            return v
    raise AssertionError


def tf_inverse_time_decay(global_step, decay_steps, decay_rate=1.0):
    return 1.0 / (1.0 + decay_rate * (global_step / decay_steps))


def tf_linear_decay(global_step, decay_steps):
    global_step = min(global_step, decay_steps)
    remaining_steps = int(decay_steps) - int(global_step)
    decayed = float(remaining_steps) / float(decay_steps)
    return max(0.0, decayed)


def tf_cosine_decay(global_step, decay_steps, num_periods=0.5):
    global_step = min(global_step, decay_steps)
    completed_fraction = float(global_step) / float(decay_steps)
    fraction = 2.0 * num_periods * completed_fraction
    return 0.5 * (1.0 + math.cos(math.pi * fraction))


def tf_restart_decay(global_step, decay_steps, num_periods=1):
    global_step = min(global_step, decay_steps)
    num = math.fmod(num_periods * float(global_step), decay_steps)  # both >= 0: fmod = mod
    fraction = num / float(decay_steps)
    return 0.5 * (1.0 + math.cos(math.pi * fraction))


def tf_linear_cosine_decay(global_step, decay_steps, num_periods=0.5, alpha=0.0, beta=0.001,
                           normal_draw=None, initial_variance=1.0, variance_decay=0.55):
    global_step = min(global_step, decay_steps)
    linear_decayed = (decay_steps - global_step) / decay_steps
    if normal_draw is not None:  # noisy_linear_cosine_decay
        variance = initial_variance / ((1.0 + global_step) ** variance_decay)
        std = math.sqrt(variance)
        linear_decayed = linear_decayed + std * normal_draw
    completed_fraction = global_step / decay_steps
    fraction = 2.0 * num_periods * completed_fraction
    cosine_decayed = 0.5 * (1.0 + math.cos(math.pi * fraction))
    return (alpha + linear_decayed) * cosine_decayed + beta


def tf_loop(ref, *args, **kwargs) -> list[float]:
    out, global_step = [], 0
    for _ in range(N):
        out.append(ref(global_step, *args, **kwargs))
        global_step += 1
    return out


@pytest.mark.parametrize("boundaries, values", [
    ([100], [1.0, 0.1]), ([0, 10, 500, 1998], [2.0, 1.0, 0.5, 0.25, 0.0]),
    ([250.5, 1000, 1500], [1.0, 0.3, 0.09, 0.027]),
])
def test_piecewise_matches_tf(boundaries, values):
    pieces = [values[0]]
    for b, v in zip(boundaries, values[1:]):
        pieces += [float(b), v]
    got = ours(S.piecewise, *pieces)
    assert_close_seq(got, tf_loop(tf_piecewise_constant, boundaries, values), "piecewise")


@pytest.mark.parametrize("r", [1.0, 10.0, 333.0, 1e5])
def test_reciprocal_matches_tf_inverse_time(r):
    assert_close_seq(ours(S.reciprocal, r), tf_loop(tf_inverse_time_decay, r), f"reciprocal({r})")
    assert S.reciprocal(1.0, r) == 1.0 and S.reciprocal(r + 1, r) == pytest.approx(0.5)


@pytest.mark.parametrize("decay_steps", [1, 100, 1000, 1999, 5000])
def test_linear_decay_matches_tf(decay_steps):
    got = ours(S.linear_decay, float(decay_steps))
    assert_close_seq(got, tf_loop(tf_linear_decay, decay_steps), f"linear_decay({decay_steps})")


@pytest.mark.parametrize("decay_steps, num_periods", [(1000, 0.5), (1500, 2.0), (300, 3.25), (1, 0.5)])
def test_cosine_decay_matches_tf(decay_steps, num_periods):
    got = ours(S.cosine_decay, float(decay_steps), num_periods)
    ref = tf_loop(tf_cosine_decay, decay_steps, num_periods)
    assert_close_seq(got, ref, f"cosine_decay({decay_steps}, {num_periods})")


@pytest.mark.parametrize("decay_steps, num_periods", [(1000, 1), (1500, 4), (700, 2.5), (2000, 1)])
def test_restart_decay_matches_tf(decay_steps, num_periods):
    got = ours(S.restart_decay, float(decay_steps), float(num_periods))
    ref = tf_loop(tf_restart_decay, decay_steps, num_periods)
    assert_close_seq(got, ref, f"restart_decay({decay_steps}, {num_periods})")


def test_restart_decay_returns_to_one_after_decay_steps_like_tf():
    T = 100.0
    assert S.restart_decay(1.0, T) == 1.0                     # global_step 0
    assert S.restart_decay(T, T) == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert S.restart_decay(T + 1, T) == 1.0 == S.restart_decay(10 * T, T)  # clipped: T mod T = 0


@pytest.mark.parametrize("decay_steps, num_periods, alpha, beta", [
    (1000, 0.5, 0.0, 0.001), (1500, 2.0, 0.1, 0.0), (2000, 0.5, 0.5, 0.01),
])
def test_linear_cosine_matches_tf(decay_steps, num_periods, alpha, beta):
    got = ours(S.linear_cosine, float(decay_steps), num_periods, alpha, beta)
    ref = tf_loop(tf_linear_cosine_decay, decay_steps, num_periods, alpha, beta)
    assert_close_seq(got, ref, "linear_cosine")


@pytest.mark.parametrize("decay_steps, iv, vd, num_periods, alpha, beta", [
    (1000, 1.0, 0.55, 0.5, 0.0, 0.001), (1500, 0.1, 1.0, 2.0, 0.2, 0.0),
])
def test_noisy_linear_cosine_matches_tf(decay_steps, iv, vd, num_periods, alpha, beta):
    rng = random.Random(1234)
    draws = [rng.gauss(0.0, 1.0) for _ in range(N)]
    got = [S.noisy_linear_cosine(float(t), float(decay_steps), draws[t - 1], iv, vd,
                                 num_periods, alpha, beta) for t in range(1, N + 1)]
    ref, global_step = [], 0
    for z in draws:
        ref.append(tf_linear_cosine_decay(global_step, decay_steps, num_periods, alpha, beta,
                                          normal_draw=z, initial_variance=iv,
                                          variance_decay=vd))
        global_step += 1
    assert_close_seq(got, ref, "noisy_linear_cosine")
    # with no noise it is linear_cosine
    assert S.noisy_linear_cosine(5.0, 100.0, 0.0) == S.linear_cosine(5.0, 100.0)


# ----------------------------------------------------------------------------- papers

@pytest.mark.parametrize("d_model, warmup", [(512, 4000), (1024, 100), (64, 1)])
def test_noam_matches_paper(d_model, warmup):
    ref = []
    for step_num in range(1, N + 1):  # Vaswani et al. 2017 eq. 3, step_num from 1
        ref.append(d_model ** -0.5 * min(step_num ** -0.5, step_num * warmup ** -1.5))
    assert_close_seq(ours(S.noam, float(d_model), float(warmup)), ref, "noam")


@pytest.mark.parametrize("W", [0, 1, 10, 1000, 5000])
def test_warmup_matches_formula(W):
    ref = [1.0 if W == 0 or t >= W else t / W for t in range(1, N + 1)]
    assert_close_seq(ours(S.warmup, float(W)), ref, f"warmup({W})")


@pytest.mark.parametrize("W, T, m", [(100, 1000, 0.0), (10, 2000, 0.1), (0, 500, 0.0), (1999, 2000, 0.0)])
def test_warmup_cosine_matches_formula(W, T, m):
    ref = []
    for t in range(1, N + 1):
        if t <= W:
            ref.append(t / W)
        elif t >= T:
            ref.append(m)
        else:
            ref.append(m + (1 - m) * 0.5 * (1 + math.cos(math.pi * (t - W) / (T - W))))
    assert_close_seq(ours(S.warmup_cosine, float(W), float(T), m), ref, "warmup_cosine")


def test_constant_is_one():
    assert ours(S.constant) == [1.0] * N


# ----------------------------------------------------------------------------- validation

INVALID = [
    ("constant", (0.0,)), ("constant", (float("nan"),)), ("step", (0.5, 10.0)),
    ("step", (1.0, 0.0)), ("step", (1.0, 2.5)), ("step", (1.0, 10.0, 0.0)),
    ("step", (1.0, 10.0, -0.1)), ("step", (1.0, "ten")),
    ("multistep", (1.0, 0.0, 10.0)), ("multistep", (1.0, 0.1, -5.0)),
    ("multistep", (1.0, 0.1, 10.5)), ("multistep", (1.0, 0.1, float("inf"))),
    ("piecewise", (1.0,)), ("piecewise", (1.0, 1.0, 10.0)),
    ("piecewise", (1.0, 1.0, 10.0, 0.5, 10.0, 0.1)), ("piecewise", (1.0, 1.0, 10.0, -0.5)),
    ("exponential", (1.0, 0.0)), ("exponential", (1.0, -0.9)),
    ("reciprocal", (1.0, 0.0)), ("reciprocal", (1.0, -3.0)),
    ("polynomial", (1.0, 0.0)), ("polynomial", (1.0, 10.5)), ("polynomial", (1.0, 10.0, -1.0)),
    ("linear", (1.0, -0.1)), ("linear", (1.0, 0.5, -1.0)), ("linear", (1.0, 0.5, 1.0, 0.0)),
    ("cosine", (1.0, 0.0)), ("cosine", (1.0, -100.0)), ("cosine", (1.0, 100.0, -0.1)),
    ("sgdr", (1.0, 0.0)), ("sgdr", (1.0, 10.5)), ("sgdr", (1.0, 10.0, 0.0)),
    ("sgdr", (1.0, 10.0, 1.5)), ("sgdr", (1.0, 10.0, 2.0, -0.1)),
    ("cyclic_triangular", (1.0, -0.1, 1.0)), ("cyclic_triangular", (1.0, 0.1, 1.0, 0.0)),
    ("cyclic_triangular2", (1.0, 0.1, 1.0, 10.0, -1.0)),
    ("cyclic_exp_range", (1.0, 0.1, 1.0, 10.0, 0.0, 0.0)),
    ("onecycle_cos", (1.0, 0.0)), ("onecycle_cos", (1.0, 100.5)),
    ("onecycle_cos", (1.0, 100.0, 1.5)), ("onecycle_cos", (1.0, 100.0, -0.1)),
    ("onecycle_cos", (1.0, 100.0, 0.01)),  # pct_start * total_steps == 1: zero-length phase
    ("onecycle_linear", (1.0, 100.0, 0.3, 0.0)), ("onecycle_linear", (1.0, 100.0, 0.3, 25.0, -1.0)),
    ("onecycle_linear", (1.0, 100.0, 0.3, 25.0, 1e4, 0.5)),
    ("warmup", (1.0, -1.0)), ("warmup", (0.5, 10.0)),
    ("warmup_cosine", (1.0, 100.0, 100.0)), ("warmup_cosine", (1.0, 100.0, 50.0)),
    ("warmup_cosine", (1.0, -1.0, 50.0)), ("warmup_cosine", (1.0, 10.0, 50.0, -0.5)),
    ("noam", (1.0, 0.0)), ("noam", (1.0, 512.0, 0.0)), ("noam", (1.0, -512.0)),
    ("linear_decay", (1.0, 0.0)), ("cosine_decay", (1.0, -10.0)),
    ("cosine_decay", (1.0, 10.0, -0.5)), ("restart_decay", (1.0, 0.0)),
    ("restart_decay", (1.0, 10.0, -1.0)), ("linear_cosine", (1.0, 0.0)),
    ("linear_cosine", (1.0, 10.0, 0.5, -0.1)), ("linear_cosine", (1.0, 10.0, 0.5, 0.0, -0.1)),
    ("noisy_linear_cosine", (1.0, 10.0, float("nan"))),
    ("noisy_linear_cosine", (1.0, 10.0, 0.3, -1.0)),
    ("noisy_linear_cosine", (1.0, 10.0, 0.3, 1.0, -0.5)),
    ("noisy_linear_cosine", (1.0, 0.0, 0.3)),
]


@pytest.mark.parametrize("name, args", INVALID, ids=[f"{n}{a}" for n, a in INVALID])
def test_invalid_arguments_raise_value_error(name, args):
    with pytest.raises(ValueError):
        S.SCHEDULES[name](*args)


def test_error_messages_name_the_argument():
    with pytest.raises(ValueError, match="T_max"):
        S.cosine(1.0, 0.0)
    with pytest.raises(ValueError, match="step_size"):
        S.step(1.0, 2.5)
    with pytest.raises(ValueError, match=r"\bt\b"):
        S.noam(0.0, 512.0)


def test_every_schedule_rejects_step_zero():
    for name, sched in S.SCHEDULES.items():
        with pytest.raises(ValueError):
            sched(0.0, *SAMPLE_ARGS[name])


# ----------------------------------------------------------------------------- registry

EXPECTED_NAMES = {
    "constant", "step", "multistep", "piecewise", "exponential", "reciprocal", "polynomial",
    "linear", "cosine", "sgdr", "cyclic_triangular", "cyclic_triangular2", "cyclic_exp_range",
    "onecycle_cos", "onecycle_linear", "warmup", "warmup_cosine", "noam", "linear_decay",
    "cosine_decay", "restart_decay", "linear_cosine", "noisy_linear_cosine",
}

SAMPLE_ARGS = {  # valid positional arguments after t
    "constant": (), "step": (10.0,), "multistep": (0.5, 3.0, 7.0), "piecewise": (1.0, 5.0, 0.5),
    "exponential": (0.99,), "reciprocal": (10.0,), "polynomial": (20.0,), "linear": (),
    "cosine": (20.0,), "sgdr": (5.0, 2.0), "cyclic_triangular": (0.1, 1.0, 5.0),
    "cyclic_triangular2": (0.1, 1.0, 5.0), "cyclic_exp_range": (0.1, 1.0, 5.0, 0.0, 0.99),
    "onecycle_cos": (100.0,), "onecycle_linear": (100.0, 0.25, 10.0, 100.0, 1.0),
    "warmup": (10.0,), "warmup_cosine": (10.0, 100.0), "noam": (512.0,),
    "linear_decay": (100.0,), "cosine_decay": (100.0,), "restart_decay": (100.0,),
    "linear_cosine": (100.0,), "noisy_linear_cosine": (100.0, 0.3),
}


def test_registry_names():
    assert set(S.SCHEDULES) == EXPECTED_NAMES
    assert set(SAMPLE_ARGS) == EXPECTED_NAMES
    for name, sched in S.SCHEDULES.items():
        assert sched.name == name and name == name.lower() and name.isidentifier()


def test_registry_rows_describe_their_functions():
    for name, sched in S.SCHEDULES.items():
        params = list(inspect.signature(sched.fn).parameters.values())
        assert params[0].name == "t"
        assert sched.params == tuple(p.name for p in params[1:]), name
        assert sched.variadic == (params[-1].kind is inspect.Parameter.VAR_POSITIONAL), name
        for p in params[1:]:
            if p.default is not inspect.Parameter.empty:
                assert sched.defaults[p.name] == p.default and isinstance(
                    sched.defaults[p.name], float), (name, p.name)
        assert set(sched.defaults) <= set(sched.params)
        # defaults only on trailing arguments
        with_default = [p in sched.defaults for p in sched.params if not (
            sched.variadic and p == sched.params[-1])]
        assert with_default == sorted(with_default), name
        assert sched.doc and "\n" not in sched.doc, name
        assert sched.reference, name
        assert sched.fn.__doc__, name
    assert S.SCHEDULES["multistep"].variadic and S.SCHEDULES["piecewise"].variadic
    assert S.SCHEDULES["onecycle_cos"].params[-1] == "three_phase"


def test_registry_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        S.SCHEDULES["step"].name = "other"


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
def test_calls_by_keyword_and_with_int_like_floats(name):
    sched = S.SCHEDULES[name]
    args = SAMPLE_ARGS[name]
    for t in (1, 2, 17, 1000):
        value = sched(float(t), *args)
        assert isinstance(value, float) and math.isfinite(value)
        assert sched.fn(t, *[int(a) if float(a).is_integer() else a for a in args]) == value
        if not sched.variadic:
            names = sched.params[:len(args)]
            assert sched.fn(t=float(t), **dict(zip(names, args))) == value


def test_initial_factors():
    assert S.step(1.0, 5.0) == S.exponential(1.0, 0.5) == S.cosine(1.0, 10.0) == 1.0
    assert S.sgdr(1.0, 3.0, 2.0, 0.1) == 1.0 == S.multistep(1.0, 0.1, 5.0)
    assert S.linear(1.0, 0.25, 1.0, 10.0) == 0.25
    assert S.onecycle_cos(1.0, 100.0) == pytest.approx(1 / 25)
    assert S.cyclic_triangular(1.0, 0.1, 1.0, 10.0) == 0.1
    assert S.warmup(1.0, 10.0) == 0.1
    assert S.linear_decay(1.0, 10.0) == S.cosine_decay(1.0, 10.0) == S.restart_decay(1.0, 10.0) == 1.0
    assert S.linear_cosine(1.0, 10.0) == 1.0 + 0.001
