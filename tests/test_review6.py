"""A sixth review's findings: rules a user writes beyond the library (selects of step
scalars, 0-d parameters in half precision, ...), each backend against the interpreter."""
from __future__ import annotations

import pytest
import torch

import optdsl


def _trajectory(rule, backend, dtype, shape=(7, 5), steps=20, **hypers):
    gen = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype))
    opt = optdsl.Optimizer([p], rule, backend=backend, **hypers)
    out = []
    for _ in range(steps):
        p.grad = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
        opt.step()
        out.append(p.detach().clone())
    return out


def _assert_same(rule, backend, dtype, **kw):
    ref = _trajectory(rule, "eager", dtype, **kw)
    got = _trajectory(rule, backend, dtype, **kw)
    for step, (a, b) in enumerate(zip(got, ref), start=1):
        same = (a == b) | (a.isnan() & b.isnan())
        assert bool(same.all()), (rule, backend, dtype, step, int((~same).sum()))


@pytest.mark.parametrize("backend", ["torchscript", "inductor"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_select_of_two_step_scalars_is_in_the_parameters_dtype(backend, dtype):
    """``where(g > 0, 1.5, 0.5)`` selected between two float32 scalars: the rest of the step
    ran in float32 and was rounded once at ``p.sub_`` (the interpreter rounds each operation
    to the parameter's dtype): 11 of 35 bfloat16 elements differed after 20 steps."""
    _assert_same("r(lr=0.1) = lr * where(g > 0, 1.5, 0.5) * g", backend, dtype)
    if backend == "torchscript":  # cheap to compile: the other forms of a scalar select
        _assert_same("r(lr=0.1) = lr * where(g > 0, lr, 0.5 * lr) * g", backend, dtype)
        _assert_same("r(lr=0.1) = lr * where(norm(g) > 2, 1.5, 0.5) * g", backend, dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_0d_half_precision_parameter_computes_in_its_dtype_on_torchscript(dtype):
    """A 0-d float16/bfloat16 parameter met the kernel's 0-d float32 step scalars in
    operations without a 1-element operand, where torch promotes to float32 (``abs(g)^k``,
    ``2^g``, ``min(0.1, g)``): the step ran in float32, off the interpreter from step 1. The
    Inductor backend already passed 1-element views."""
    for rule in ("r(lr=0.1, k=1.7) = lr * abs(g)^k", "r(lr=0.1) = lr * (g % 0.3) + lr * 2 ^ g",
                 "r(lr=0.1) = lr * max(g, 0.25) - lr * min(0.1, g)"):
        _assert_same(rule, "torchscript", dtype, shape=())
    p = torch.nn.Parameter(torch.tensor(0.5, dtype=dtype))  # states stay 0-d
    opt = optdsl.Optimizer([p], "adam", backend="torchscript")
    p.grad = torch.tensor(0.25, dtype=dtype)
    opt.step()
    assert opt.state[p]["m"].shape == () and p.shape == ()
