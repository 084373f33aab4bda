"""Schedules written inside formulas give exactly the LR that torch's schedulers give."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

import optdsl
from optdsl.ir import Kind, topological

S = torch.optim.lr_scheduler
BASE = 0.1

# (formula multiplier of lr, torch scheduler factory)
CASES = {
    "step": ("step(t, 30, 0.5)", lambda o: S.StepLR(o, 30, 0.5)),
    "multistep": ("multistep(t, 0.3, 100, 700, 1500)", lambda o: S.MultiStepLR(o, [100, 700, 1500], 0.3)),
    "exponential": ("exponential(t, 0.999)", lambda o: S.ExponentialLR(o, 0.999)),
    "polynomial": ("polynomial(t, 1500, 2)", lambda o: S.PolynomialLR(o, 1500, 2.0)),
    "linear": ("linear(t, 0.25, 1, 800)", lambda o: S.LinearLR(o, 0.25, 1.0, 800)),
    "cosine": ("cosine(t, 700, 0.1)", lambda o: S.CosineAnnealingLR(o, 700, eta_min=0.1 * BASE)),
    "sgdr_mult1": ("sgdr(t, T_0=150, T_mult=1)", lambda o: S.CosineAnnealingWarmRestarts(o, 150, 1)),
    "sgdr_mult2": ("sgdr(t, T_0=100, T_mult=2, min_factor=0.05)",
                   lambda o: S.CosineAnnealingWarmRestarts(o, 100, 2, eta_min=0.05 * BASE)),
    "cyclic_triangular": ("cyclic_triangular(t, 0.1, 1, 250)",
                          lambda o: S.CyclicLR(o, 0.1 * BASE, BASE, 250, cycle_momentum=False)),
    "cyclic_triangular2": ("cyclic_triangular2(t, 0.1, 1, 200, 300)",
                           lambda o: S.CyclicLR(o, 0.1 * BASE, BASE, 200, 300, mode="triangular2",
                                                cycle_momentum=False)),
    "cyclic_exp_range": ("cyclic_exp_range(t, 0.1, 1, 250, gamma=0.999)",
                         lambda o: S.CyclicLR(o, 0.1 * BASE, BASE, 250, mode="exp_range",
                                              gamma=0.999, cycle_momentum=False)),
    "onecycle_cos": ("onecycle_cos(t, 2000)", lambda o: S.OneCycleLR(o, BASE, total_steps=2000,
                                                                     cycle_momentum=False)),
    "onecycle_linear_3": ("onecycle_linear(t, 2000, three_phase=1)",
                          lambda o: S.OneCycleLR(o, BASE, total_steps=2000, anneal_strategy="linear",
                                                 three_phase=True, cycle_momentum=False)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_formula_schedule_matches_torch_scheduler(name):
    formula, factory = CASES[name]
    ours = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = optdsl.Optimizer([ours], f"lr * {formula} * g", lr=BASE, backend="eager")
    ref_p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    ref = torch.optim.SGD([ref_p], lr=BASE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = factory(ref)
        for t in range(1, 2001):
            with torch.no_grad():
                ours.zero_()  # so that the step taken is exactly -p
            ours.grad = torch.ones(1, dtype=torch.float64)
            opt.step()
            taken, expected = -float(ours), ref.param_groups[0]["lr"]
            assert abs(taken - expected) <= 1e-10 * max(abs(expected), 1e-6), (t, taken, expected)
            ref.step()
            sched.step()


def test_warmup_composes_with_any_schedule_and_noam_matches_the_paper():
    vals = _multipliers("warmup(t, 100) * cosine(t, 1000)", 300)
    for t, v in enumerate(vals, start=1):
        expected = min(1, t / 100) * 0.5 * (1 + math.cos(math.pi * (t - 1) / 1000))
        assert v == pytest.approx(expected, rel=1e-12)
    noam = _multipliers("noam(t, 512, 4000)", 8000)
    for t in (1, 10, 3999, 4000, 4001, 8000):
        assert noam[t - 1] == pytest.approx(512 ** -0.5 * min(t ** -0.5, t * 4000 ** -1.5), rel=1e-12)


def _multipliers(formula, steps):
    from optdsl.lr_tools import schedule_values
    return list(schedule_values(formula, steps))


def test_schedules_are_step_scalars_in_the_ir():
    rule = optdsl.parse("lr * exp(linear_decay(t, 100) * sign(g) * sign(ema(g, 0.9))) * g")
    decay = [n for n in topological(rule.outputs()) if n.op == "linear_decay"]
    assert decay and decay[0].kind == Kind.SCALAR


@pytest.mark.parametrize("text,fragment", [
    ("lr * sgdr(t, T_0=0) * g", "T_0"),
    ("lr * exponential(t, -0.5) * g", "gamma"),
    ("lr * step(t, 10, gamma=g) * g", "a tensor where a scalar is required"),
    ("lr * noise(p)", "a tensor where a scalar is required"),
])
def test_invalid_schedule_arguments_are_dsl_errors(text, fragment):
    with pytest.raises(optdsl.DSLError, match=fragment) as info:
        optdsl.parse(text)
    assert info.value.line == 1 and info.value.column > 1


def test_invalid_schedule_hyperparameter_fails_at_construction_not_at_step_1000():
    rule = optdsl.parse("r(lr=0.1, T=100) = lr * cosine(t, T) * g")
    with pytest.raises(ValueError, match="T_max"):
        optdsl.Optimizer([torch.zeros(1, requires_grad=True)], rule, T=-3)


@pytest.mark.parametrize("t", [1, 10, 100])
def test_gradient_noise_has_the_annealed_variance(t):
    c, gamma = 0.3, 0.55
    sigma = c / (1 + t) ** gamma
    p = torch.zeros(200_000, dtype=torch.float64, requires_grad=True)
    opt = optdsl.Optimizer([p], "noisy(lr=1, c=0.3, gamma=0.55) = lr * noise(c / (1 + t)^gamma)",
                           backend="eager",
                           seed=t)
    opt.state[p]["step"] = t - 1  # jump to step t (the rule has no other state)
    p.grad = torch.zeros_like(p)
    before = p.detach().clone()
    opt.step()
    draws = (before - p).detach()
    n = draws.numel()
    assert abs(float(draws.mean())) < 5 * sigma / math.sqrt(n)
    # the sample variance of n normals has standard error sigma^2 sqrt(2/(n-1))
    assert abs(float(draws.var()) - sigma ** 2) < 5 * sigma ** 2 * math.sqrt(2 / (n - 1))


def test_same_seed_same_trajectory_and_drop_keeps_the_expected_fraction():
    def run(seed):
        p = torch.ones(1000, dtype=torch.float64, requires_grad=True)
        opt = optdsl.Optimizer([p], "lr * drop(g, 0.3)", lr=0.1, seed=seed, backend="eager")
        for _ in range(5):
            p.grad = torch.ones_like(p)
            opt.step()
        return p.detach()
    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    p = torch.zeros(100_000, dtype=torch.float64, requires_grad=True)
    opt = optdsl.Optimizer([p], "lr * drop(g, 0.3)", lr=1.0, seed=0, backend="eager")
    p.grad = torch.ones_like(p)
    opt.step()
    kept = (p != 0).double().mean()
    assert abs(float(kept) - 0.7) < 0.01
    assert torch.allclose(p[p != 0], torch.full_like(p[p != 0], -1 / 0.7))


@pytest.mark.parametrize("rate", [0.05, 0.3, 0.5, 0.95])
def test_drop_keeps_each_element_independently_with_probability_one_minus_rate(rate):
    """Over 400,000 elements: the kept share is 1 - rate, and so is the share of kept elements
    whose neighbour (the next lane of the same random word, or the next word's first) is kept:
    the lanes are independent; within 5 standard errors (10 nominal ones for the pairs, which
    overlap)."""
    from optdsl.primitives import PRIMITIVES
    n = 400_000
    kept = PRIMITIVES["drop"].torch_fn(torch.Generator().manual_seed(3), torch.empty(n), 1.0,
                                       rate) != 0
    q = 1 - rate
    assert abs(float(kept.double().mean()) - q) < 5 * math.sqrt(q * rate / n)
    for lag in (1, 2, 3, 4):  # the other lanes of a word, and the same lane of the next word
        both = (kept[:-lag] & kept[lag:]).double().mean()
        assert abs(float(both) - q * q) < 5 * math.sqrt(q * q * (1 - q * q) / n) * 2


def _reference_keep(seed, n, rate):
    """drop's documented draw, written with shifts: element i is kept when the i-th 16-bit lane
    (lowest first) of the generator's 64-bit words, read as a signed integer, is at least
    round(rate * 2^16) - 2^15."""
    words = torch.empty(-(-n // 4), dtype=torch.int64)
    words.random_(-2 ** 63, None, generator=torch.Generator().manual_seed(seed))
    lanes = [(w >> (16 * j)) & 0xFFFF for w in words.tolist() for j in range(4)][:n]
    signed = [lane - 2 ** 16 if lane >= 2 ** 15 else lane for lane in lanes]
    threshold = round(rate * 2 ** 16)
    return torch.tensor([s >= threshold - 2 ** 15 for s in signed]), 1 - threshold / 2 ** 16


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_drop_selects_exactly_what_where_selects(dtype):
    """drop's bit mask gives, element for element and bit for bit, torch.where(keep, x / q,
    +0.0) on its documented draws: NaN, inf and -0.0 dropped or kept, and a scalar operand."""
    from optdsl.primitives import PRIMITIVES
    drop = PRIMITIVES["drop"].torch_fn
    special = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0, -3.5, 1e-30])
    # 4,009 elements: the last of the 1,003 words is used in part
    x = torch.cat([special, torch.randn(4002, dtype=torch.float64)]).to(dtype)
    for operand, rate in ((x, 0.3), (x, 0.5), (-2.0, 0.1)):
        gen = torch.Generator().manual_seed(7)
        got = drop(gen, x, operand, rate)
        # it took ceil(4009 / 4) words of the generator, no more
        words = torch.Generator().manual_seed(7)
        torch.empty(1003, dtype=torch.int64).random_(-2 ** 63, None, generator=words)
        assert torch.equal(gen.get_state(), words.get_state())
        keep, q = _reference_keep(7, len(x), rate)
        scaled = torch.as_tensor(operand, dtype=dtype).expand_as(x) / q
        want = torch.where(keep, scaled, torch.zeros_like(scaled))
        assert got.dtype == dtype and got.shape == x.shape
        assert torch.equal(got.view(-1).view(torch.uint8), want.view(-1).view(torch.uint8))
        assert 0 < int((~keep).sum()) < len(x)  # both branches taken
