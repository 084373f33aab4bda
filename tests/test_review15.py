"""Regression tests for the defects found in the ninth session's reviews (2026-12-05)."""
import warnings

import pytest
import torch

import optdsl

BACKENDS = ["eager", "inductor", "torchscript"]


def _three(make, shared):
    """x, c, a in one group; c gets no gradient at step 1 (so it is one step behind), and at
    step 2 its gradient is memory of a (``shared``), which comes after c in the group."""
    torch.manual_seed(0)
    x, c, a = (torch.nn.Parameter(torch.randn(4, dtype=torch.float64)) for _ in range(3))
    opt = make([x, c, a])
    x.grad, a.grad = torch.ones(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    opt.step()
    x.grad, a.grad = torch.ones(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    c.grad = shared(opt, a)
    opt.step()
    return torch.stack([x.detach(), c.detach(), a.detach()])


@pytest.mark.parametrize("backend", BACKENDS)
def test_tensors_at_other_step_counts_that_share_memory_step_in_the_groups_order(backend):
    # the host grouped a group's tensors by step count and ran the groups in turn: a stepped
    # before c although c comes first, and c read a's new value (0.01 off torch's for-loop)
    warnings.simplefilter("ignore")
    want = _three(lambda P: torch.optim.SGD(P, lr=0.1, foreach=False), lambda o, a: a.detach())
    got = _three(lambda P: optdsl.Optimizer(P, "sgd", lr=0.1, backend=backend),
                 lambda o, a: a.detach())
    assert torch.equal(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_gradient_that_is_a_later_parameters_state_reads_it_before_its_step(backend):
    warnings.simplefilter("ignore")
    want = _three(lambda P: torch.optim.Adam(P, lr=0.1, foreach=False),
                  lambda o, a: o.state[a]["exp_avg"])
    got = _three(lambda P: optdsl.Optimizer(P, "adam", lr=0.1, backend=backend),
                 lambda o, a: o.state[a]["m"])
    assert torch.allclose(got, want, rtol=1e-15, atol=0)


def test_buckets_without_shared_memory_stay_one_per_step_count():
    from optdsl.host import HostStep
    host = HostStep(optdsl.library["sgd"])
    ps = [torch.zeros(3), torch.zeros(3), torch.zeros(3)]
    states = [{"step": 1}, {}, {"step": 1}]
    grads = [torch.ones(3), torch.ones(3), torch.ones(3)]
    buckets = host.prepare(ps, grads, states, {**optdsl.library["sgd"].defaults}, None)
    assert [len(b.items) for b in buckets] == [2, 1]
    states = [{"step": 1}, {}, {"step": 1}]
    grads[1] = ps[2]  # now in order: three runs
    buckets = host.prepare(ps, grads, states, {**optdsl.library["sgd"].defaults}, None)
    assert [len(b.items) for b in buckets] == [1, 1, 1]
