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


# --- the host step ---------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_a_step_that_fails_on_its_scalars_counts_no_parameter(backend):
    # cosine(t, 3 - t) is invalid at t = 3: the first parameter's step count had gone up
    # before the error, the second's not, and the next steps ran them at different t
    p, q = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = optdsl.Optimizer([p, q], "r(lr=0.1, T=3) = lr*g*cosine(t, T - t)", backend=backend)
    for step in range(3):
        p.grad, q.grad = torch.ones(2), torch.ones(2)
        if step < 2:
            opt.step()
        else:
            with pytest.raises(optdsl.DSLError, match="at t = 3"):
                opt.step()
    assert [opt.state[x]["step"] for x in (p, q)] == [2, 2]


def test_a_failed_step_leaves_no_states_for_a_parameter_it_would_have_started():
    # q (first in the group) gets its first gradient at the step where p's scalars fail
    q, p = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    opt = optdsl.Optimizer([q, p], "r(lr=0.1, b=0.3) = lr*ema(g, b*t)", backend="eager")
    for _ in range(3):
        p.grad = torch.ones(2)
        opt.step()
    q.grad, p.grad = torch.ones(2), torch.ones(2)
    with pytest.raises(optdsl.DSLError, match="at t = 4"):
        opt.step()
    assert len(opt.state[q]) == 0 and opt.state[p]["step"] == 3


def test_a_schedule_in_a_branch_not_taken_at_step_one_says_how_to_start_it_later():
    with pytest.raises(optdsl.DSLError, match="max\\(t - 5, 1\\)"):
        optdsl.parse("lr * where(t <= 5, warmup(t, 5), cosine(t - 5, 20)) * g")


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_argument_with_a_range_that_reads_t_is_checked_at_every_step(backend):
    # ema(g, b * t) grew past beta = 1 and diverged without a word (schedules raise)
    p = torch.nn.Parameter(torch.ones(2))
    opt = optdsl.Optimizer([p], "r(lr=0.1, b=0.3) = lr*ema(g, b*t)", backend=backend)
    for _ in range(3):
        p.grad = torch.ones(2)
        opt.step()
    before = p.detach().clone()
    p.grad = torch.ones(2)
    with pytest.raises(optdsl.DSLError, match="ema\\(\\) at t = 4: beta is 1.2"):
        opt.step()
    assert torch.equal(p.detach(), before) and opt.state[p]["step"] == 3


def test_an_argument_that_reads_t_is_checked_at_step_one_with_the_optimizers_values():
    with pytest.raises(optdsl.HyperparameterError, match="t=1, every\\(\\)'s k is 1.5"):
        optdsl.Optimizer([torch.nn.Parameter(torch.ones(2))],
                         "r(lr=0.1, k=0.5) = lr*g*every(t, k+t)")


# --- the language ----------------------------------------------------------------------------

def test_simplify_prints_no_placeholder_that_reads_p():
    from optdsl import ir
    from optdsl.interpreter import trajectory
    for src in ["lr*norm(g^0)*g", "lr*norm(t + 0*sign(g))*g"]:
        text, verdict = optdsl.simplify(src, timeout=30)
        out = optdsl.parse(text)
        assert "p" not in ir.walk_leaves([out.update], "input"), text
        p0 = torch.tensor([1.0, float("inf"), 2.0], dtype=torch.float64)
        g = [torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)]
        a = trajectory(optdsl.parse(src), {"lr": 1e-3}, p0, g)[0]
        b = trajectory(out, {"lr": 1e-3}, p0, g)[0]
        assert torch.equal(a[[0, 2]], b[[0, 2]])


@pytest.mark.parametrize("text", ["f(lr=0.1) = lookahead(inner=adam(beta1=g))",
                                  "lookahead(lookahead(adam))"])
def test_a_rule_argument_with_arguments_that_are_not_numbers_says_so(text):
    with pytest.raises(optdsl.DSLError) as e:
        optdsl.parse(text)
    assert "must be numbers written by name" in str(e.value)
    assert "did you mean" not in str(e.value)


def test_an_alias_that_sets_a_default_twice_to_two_numbers_is_an_error():
    with pytest.raises(optdsl.DSLError, match="sets beta1 twice: 0.8 in its header and 0.5"):
        optdsl.parse("f(beta1=0.8) = adam(beta1=0.5)")
    assert optdsl.parse("f(beta1=0.5) = adam(beta1=0.50)").defaults["beta1"] == 0.5


# --- the command line and export ---------------------------------------------------------------

def test_train_with_lr_nan_is_a_clear_error(capsys):
    from optdsl.cli import main
    assert main(["train", "adam", "--epochs", "1", "--lr", "nan"]) == 2
    assert "lr is NaN" in capsys.readouterr().err


def test_compile_with_an_empty_output_name_is_an_argument_error(capsys):
    from optdsl.cli import main
    with pytest.raises(SystemExit) as e:
        main(["compile", "adam", "-o", ""])
    assert e.value.code == 2 and "an empty file name" in capsys.readouterr().err


def test_export_into_a_missing_folder_says_which(tmp_path):
    with pytest.raises(FileNotFoundError, match="no folder"):
        optdsl.export("adam", str(tmp_path / "missing" / "step.pt"))
