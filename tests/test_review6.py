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


def test_two_calls_lifting_one_name_with_other_defaults_keep_each_callees_default():
    """``adam() + adamw()``: both lift ``weight_decay``; the first default was kept for both,
    so adamw's decoupled decay of 0.01 became 0 (and ``adamw() + adam()`` gave adam an L2
    decay of 0.01; ``sgd() + momentum()`` was sgd twice). A later call's name with another
    default is lifted as ``<callee>_<name>``, as a name the caller declares is."""
    from optdsl.interpreter import trajectory
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(6, generator=gen, dtype=torch.float64)
    grads = [torch.randn(6, generator=gen, dtype=torch.float64) for _ in range(20)]

    def run(text):
        rule = optdsl.parse(text)
        return torch.stack(trajectory(rule, rule.defaults, p0, grads))

    both = optdsl.parse("r(lr=0.1) = adam() + adamw()")
    assert both.defaults["weight_decay"] == 0.0 and both.defaults["adamw_weight_decay"] == 0.01
    assert torch.allclose(run("r(lr=0.1) = adam() + adamw()"),
                          run("r(lr=0.1) = 2 * adam() + lr * 0.01 * p"), rtol=1e-12, atol=0)
    assert torch.allclose(run("r(lr=0.1) = sgd() + momentum()"),
                          run("r(lr=0.1) = sgd() + sgd(momentum=0.9)"), rtol=1e-12, atol=0)
    # equal defaults stay one hyperparameter, and lr is always shared
    assert list(optdsl.parse("r(lr=0.1) = adam() + adam()").hypers) == \
        ["lr", "beta1", "beta2", "eps", "weight_decay"]
    assert list(optdsl.parse("r(lr=0.1) = yogi() + adam()").hypers)[-1] == "adam_eps"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_number_minus_a_half_precision_tensor_rounds_the_number_as_eager_does_on_inductor(dtype):
    """``0.3 - g`` was printed with the literal first; eager torch (the interpreter, TorchScript)
    rounds 0.3 to g's dtype in that order (rsub), Inductor computed with 0.3 unrounded: one
    bfloat16 element of 35 off at step 1. The number is now a step scalar there, printed as
    eager computes it."""
    _assert_same("r(lr=0.1) = lr * (0.3 - g)", "inductor", dtype)
