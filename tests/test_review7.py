"""The seventh review: library rules against torch.optim and tests/references.py on option
combinations the matrix (tests/test_library_matrix.py) does not reach, float64, random gradients
(independent of the parameters, so no rounding difference is amplified), on a 0-d, a 1-d and a
non-contiguous 2-d parameter."""
from __future__ import annotations

import pytest
import torch

import optdsl
from references import DEFAULTS, make

F64 = torch.float64
STEPS = 220


def _params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.tensor(0.7, dtype=F64), torch.randn(7, generator=gen, dtype=F64),
            torch.randn(6, 5, generator=gen, dtype=F64).t()]  # the last is not contiguous


def _copy(params):
    out = []
    for p in params:
        q = torch.empty_strided(p.shape, p.stride(), dtype=p.dtype)
        out.append(q.copy_(p).requires_grad_(True))
    return out


def _worst_error(ours, theirs, opt, ref, steps=STEPS, seed=3):
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for _ in range(steps):
        for p, q in zip(ours, theirs):
            g = torch.randn(p.shape[::-1], generator=gen, dtype=F64).t() if p.dim() == 2 else \
                torch.randn(p.shape, generator=gen, dtype=F64)
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
        worst = max([worst] + [float((p - q).detach().abs().max()) for p, q in zip(ours, theirs)])
    return worst


def _against_reference(name, hypers, steps=STEPS):
    base = _params()
    ours, theirs = _copy(base), _copy(base)
    opt = optdsl.Optimizer(ours, name, backend="eager", **hypers)
    return _worst_error(ours, theirs, opt, make(name, theirs, {**DEFAULTS[name], **hypers}), steps)


def _against_torch(name, hypers, torch_opt):
    base = _params()
    ours, theirs = _copy(base), _copy(base)
    opt = optdsl.Optimizer(ours, name, backend="eager", **hypers)
    return _worst_error(ours, theirs, opt, torch_opt(theirs))


# --- sgdw with momentum = 0 is SGD: torch SGD ignores dampening there ------------------------------

@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_sgdw_without_momentum_ignores_dampening_as_torch_sgd(weight_decay):
    """sgdw damped g by (1 - dampening) from step 2 when momentum = 0 (heavyball's b = (1-d) g),
    where torch SGD and the reference SGDW take b = g: 0.35 off after 220 steps at lr 0.03."""
    h = dict(lr=0.03, momentum=0.0, dampening=0.3, weight_decay=weight_decay)
    assert _against_reference("sgdw", h) <= 1e-12
    if weight_decay == 0:
        assert _against_torch("sgdw", h, lambda ps: torch.optim.SGD(
            ps, lr=0.03, momentum=0.0, dampening=0.3, foreach=False)) <= 1e-12


# --- swats switches with a Lambda of either sign, as Algorithm 1 -----------------------------------

def test_swats_switches_to_sgd_with_a_negative_lambda_as_algorithm_1():
    """Noisy gradients make a.d < 0 and so gamma and Lambda negative; swats marked its SGD phase
    by sgd_lr > 0, so such a switch set sgd_lr but stayed in the Adam phase (0.26 off the
    reference after 220 steps of random gradients)."""
    h = dict(lr=0.1, beta2=0.5, eps=0.05)
    p, q = torch.tensor([1.0], dtype=F64), torch.tensor([1.0], dtype=F64)
    opt = optdsl.Optimizer([p], "swats", backend="eager", **h)
    ref = make("swats", [q], {**DEFAULTS["swats"], **h})
    for g in (1.0, -0.2, -0.2, 1.0, 0.5):
        p.grad, q.grad = torch.tensor([g], dtype=F64), torch.tensor([g], dtype=F64)
        opt.step()
        ref.step()
        torch.testing.assert_close(p, q, rtol=1e-13, atol=1e-15)
    assert ref.state[q]["sgd"] and ref.state[q]["switch_step"] == 3
    assert float(ref.state[q]["Lambda"]) < 0
    assert float(opt.state[p]["sgd_lr"]) == pytest.approx(float(ref.state[q]["Lambda"]), rel=1e-13)


@pytest.mark.parametrize("hypers", [
    dict(lr=0.03, beta1=0.9, beta2=0.99, eps=1e-3),
    dict(lr=0.03, beta1=0.5, beta2=0.99, eps=1e-3, weight_decay=0.1),
])
def test_swats_follows_the_reference_under_random_gradients(hypers):
    assert _against_reference("swats", hypers) <= 1e-12


# --- torch counterparts: option combinations beyond the matrix's settings -------------------------

def _sgd(**o):
    return lambda ps: torch.optim.SGD(ps, foreach=False, **o)


TORCH_CASES = [
    ("sgd", dict(lr=0.1, momentum=0.5, dampening=0.3), _sgd(lr=0.1, momentum=0.5, dampening=0.3)),
    ("sgd", dict(lr=0.1, momentum=0.0, dampening=0.3, weight_decay=0.05),
     _sgd(lr=0.1, momentum=0.0, dampening=0.3, weight_decay=0.05)),
    ("nesterov", dict(lr=0.1, momentum=0.9, weight_decay=0.05),
     _sgd(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.05)),
    ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True), _sgd(lr=0.1, momentum=0.9, nesterov=True)),
    ("amsgrad", dict(lr=0.03, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.1),
     lambda ps: torch.optim.Adam(ps, lr=0.03, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.1,
                                 amsgrad=True, foreach=False)),
    ("adam", dict(lr=0.03, betas=(0.0, 0.99), weight_decay=0.1),
     lambda ps: torch.optim.Adam(ps, lr=0.03, betas=(0.0, 0.99), weight_decay=0.1, foreach=False)),
    ("adamw", dict(lr=0.03, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.5),
     lambda ps: torch.optim.AdamW(ps, lr=0.03, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.5,
                                  foreach=False)),
    ("adamax", dict(lr=0.05, betas=(0.0, 0.5), eps=1e-2, weight_decay=0.1),
     lambda ps: torch.optim.Adamax(ps, lr=0.05, betas=(0.0, 0.5), eps=1e-2, weight_decay=0.1,
                                   foreach=False)),
    ("adagrad", dict(lr=0.3, lr_decay=0.5, initial_accumulator_value=2.0, eps=1e-3),
     lambda ps: torch.optim.Adagrad(ps, lr=0.3, lr_decay=0.5, initial_accumulator_value=2.0,
                                    eps=1e-3, foreach=False)),
    ("adadelta", dict(lr=0.1, rho=0.0, eps=1e-3, weight_decay=0.1),
     lambda ps: torch.optim.Adadelta(ps, lr=0.1, rho=0.0, eps=1e-3, weight_decay=0.1,
                                     foreach=False)),
    ("rmsprop", dict(lr=1e-2, alpha=0.5, eps=1e-2, centered=True),
     lambda ps: torch.optim.RMSprop(ps, lr=1e-2, alpha=0.5, eps=1e-2, centered=True,
                                    foreach=False)),
    ("rmsprop", dict(lr=1e-2, alpha=0.0, momentum=0.9, weight_decay=0.1),
     lambda ps: torch.optim.RMSprop(ps, lr=1e-2, alpha=0.0, momentum=0.9, weight_decay=0.1,
                                    foreach=False)),
    ("nadam", dict(lr=0.03, betas=(0.5, 0.9), momentum_decay=0.5, weight_decay=0.1),
     lambda ps: torch.optim.NAdam(ps, lr=0.03, betas=(0.5, 0.9), momentum_decay=0.5,
                                  weight_decay=0.1, foreach=False)),
    ("nadam", dict(lr=0.03, momentum_decay=0.0),
     lambda ps: torch.optim.NAdam(ps, lr=0.03, momentum_decay=0.0, foreach=False)),
    ("radam", dict(lr=0.03, betas=(0.9, 0.5), weight_decay=0.1),  # rho_t <= 5 throughout
     lambda ps: torch.optim.RAdam(ps, lr=0.03, betas=(0.9, 0.5), weight_decay=0.1, foreach=False)),
    ("rprop", dict(lr=100.0, etaminus=0.1, etaplus=3.0, step_size_min=1e-2, step_size_max=0.2),
     lambda ps: torch.optim.Rprop(ps, lr=100.0, etas=(0.1, 3.0), step_sizes=(1e-2, 0.2),
                                  foreach=False)),
]


@pytest.mark.parametrize("name,hypers,torch_opt", TORCH_CASES,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(TORCH_CASES)])
def test_option_combinations_match_torch(name, hypers, torch_opt):
    prev = torch.get_default_dtype()
    torch.set_default_dtype(F64)  # torch's own scalar states (NAdam's mu_product) in float64
    try:
        assert _against_torch(name, hypers, torch_opt) <= 1e-12
    finally:
        torch.set_default_dtype(prev)
