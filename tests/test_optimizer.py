"""optdsl.Optimizer behaves as a torch.optim.Optimizer: groups, schedulers, saving, edge cases.

Each behaviour runs on the default backend (inductor) and on the interpreter (eager); the
whole-library tests take their cases from tests/rule_info.py.
"""
from __future__ import annotations

import copy
import warnings

import pytest
import torch

import optdsl
from problems import compute_grads, make_data, make_params
from rule_info import RULES, rule_backend_cases

BACKENDS = ["inductor", "eager"]


def _params(dtype=torch.float64):
    ps = make_params(dtype)
    for p in ps:
        p.requires_grad_(True)
    return ps


@pytest.mark.parametrize("name,backend", rule_backend_cases())
def test_float32_library_stays_finite_and_decreases_the_loss(name, backend):
    data = make_data(torch.float32)
    params = _params(torch.float32)
    opt = optdsl.Optimizer(params, name, lr=RULES[name].float32_lr, backend=backend)
    first = compute_grads(params, data)
    for _ in range(100):
        compute_grads(params, data)
        opt.step()
    last = compute_grads(params, data)
    assert all(torch.isfinite(p).all() for p in params)
    assert all(p.dtype == torch.float32 for p in params)
    assert last < first, f"{name}: loss {first:.4g} -> {last:.4g}"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name,backend", rule_backend_cases())
def test_resume_is_bit_identical(name, backend, dtype):
    data = make_data(dtype)

    def run(params, opt, steps):
        for _ in range(steps):
            compute_grads(params, data)
            opt.step()

    straight = _params(dtype)
    opt = optdsl.Optimizer(straight, name, lr=1e-2, backend=backend)
    run(straight, opt, 100)

    first = _params(dtype)
    opt1 = optdsl.Optimizer(first, name, lr=1e-2, backend=backend)
    run(first, opt1, 50)
    saved_state = copy.deepcopy(opt1.state_dict())
    saved_params = [p.detach().clone() for p in first]
    resumed = _params(dtype)
    with torch.no_grad():
        for p, s in zip(resumed, saved_params):
            p.copy_(s)
    opt2 = optdsl.Optimizer(resumed, name, lr=1e-2, backend=backend)
    opt2.load_state_dict(saved_state)
    run(resumed, opt2, 50)
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_noise_resumes_with_the_same_draws(backend):
    rule = "noisy(lr=0.1, c=0.5, gamma=0.55) = lr * (g + noise(c / (1 + t)^gamma))"
    data = make_data()

    def run(params, opt, steps):
        for _ in range(steps):
            compute_grads(params, data)
            opt.step()

    a = _params()
    oa = optdsl.Optimizer(a, rule, seed=3, backend=backend)
    run(a, oa, 20)
    b = _params()
    ob = optdsl.Optimizer(b, rule, seed=3, backend=backend)
    run(b, ob, 10)
    state = copy.deepcopy(ob.state_dict())
    c = [p.detach().clone().requires_grad_(True) for p in b]
    oc = optdsl.Optimizer(c, rule, seed=999, backend=backend)  # the loaded state must win
    oc.load_state_dict(state)
    run(c, oc, 10)
    assert all(torch.equal(x, y) for x, y in zip(a, c))
    d = _params()
    run(d, optdsl.Optimizer(d, rule, seed=4, backend=backend), 20)
    assert not all(torch.equal(x, y) for x, y in zip(a, d))


@pytest.mark.parametrize("backend", BACKENDS)
def test_param_groups_have_their_own_hyperparameters(backend):
    w = torch.zeros(3, requires_grad=True)
    b = torch.zeros(3, requires_grad=True)
    opt = optdsl.Optimizer([{"params": [w]}, {"params": [b], "lr": 0.5}], "sgd", lr=0.1,
                           backend=backend)
    w.grad = torch.ones(3)
    b.grad = torch.ones(3)
    opt.step()
    assert torch.allclose(w, torch.full((3,), -0.1))
    assert torch.allclose(b, torch.full((3,), -0.5))
    assert all("lr" in g for g in opt.param_groups)


@pytest.mark.parametrize("backend", BACKENDS)
def test_params_without_grad_are_skipped_and_closure_is_called(backend):
    a = torch.ones(2, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    opt = optdsl.Optimizer([a, b], "adam", lr=0.1, backend=backend)

    def closure():
        opt.zero_grad()
        loss = (a ** 2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss.item() == 2.0
    assert torch.equal(b, torch.ones(2)) and b not in opt.state
    assert not torch.equal(a, torch.ones(2))
    opt.zero_grad()
    assert a.grad is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_sparse_gradients_raise_a_clear_error(backend):
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = optdsl.Optimizer(emb.parameters(), "adam", backend=backend)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def test_unknown_and_invalid_hyperparameters():
    p = [torch.zeros(1, requires_grad=True)]
    with pytest.raises(optdsl.DSLError, match=r"did you mean 'beta1'.*valid: lr, beta1"):
        optdsl.Optimizer(p, "adam", bta1=0.9)
    with pytest.raises(ValueError, match="lr must be >= 0"):
        optdsl.Optimizer(p, "adam", lr=-1)
    with pytest.raises(ValueError, match=r"beta1 must be in \[0, 1\)"):
        optdsl.Optimizer(p, "adam", beta1=1.0)
    with pytest.raises(ValueError, match="unknown backend"):
        optdsl.Optimizer(p, "adam", backend="eagre")


@pytest.mark.parametrize("backend", ["eager", "inductor", "torchscript"])
def test_a_tensor_lr_is_kept_and_read_at_every_step_as_torch_reads_it(backend):
    """A schedule may change a tensor lr in place (torch's idiom for compiled steps); optdsl
    turned it into a float at construction and kept stepping at the old value."""
    runs = []
    for make in (lambda ps, lr: torch.optim.Adam(ps, lr=lr, foreach=False),
                 lambda ps, lr: optdsl.Optimizer(ps, "adam", lr=lr, backend=backend)):
        w, lr = torch.ones(3, requires_grad=True), torch.tensor(0.1)
        opt = make([w], lr)
        assert opt.param_groups[0]["lr"] is lr
        for value in (0.1, 0.0, 0.05):
            lr.fill_(value)
            w.grad = torch.tensor([1.0, -2.0, 0.5])
            opt.step()
        runs.append(w.detach().clone())
    torch.testing.assert_close(runs[1], runs[0], rtol=0, atol=1e-6)


def test_repr_lists_every_group_as_torch_does():
    """Training logs print the optimizer to record its settings; the repr was one line."""
    a, b = torch.zeros(1, requires_grad=True), torch.zeros(2, requires_grad=True)
    text = repr(optdsl.Optimizer([{"params": [a]}, {"params": [b], "lr": 0.5}], "sgd",
                                 backend="eager", lr=0.1))
    assert text.startswith("optdsl.Optimizer(sgd, backend=eager) (\nParameter Group 0\n")
    assert "    lr: 0.1\n" in text and "Parameter Group 1\n" in text and "    lr: 0.5\n" in text
    assert "_betas_seen" not in text and "_rule" not in text


def test_a_hyperparameter_given_as_text_is_refused_as_torch_refuses_it():
    """torch.optim.SGD(p, lr="0.1") raises; optdsl parsed the text and ran at 0.1."""
    p = [torch.zeros(1, requires_grad=True)]
    with pytest.raises(TypeError):
        torch.optim.SGD(p, lr="0.1")
    with pytest.raises(optdsl.DSLError, match=r"lr='0.1' is a string, not a number"):
        optdsl.Optimizer(p, "sgd", lr="0.1")
    opt = optdsl.Optimizer(p, "adam")
    with pytest.raises(optdsl.DSLError, match=r"beta1='0.5' is a string"):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "beta1": "0.5"})


@pytest.mark.parametrize("rule, given", [("sgd", dict(nesterov=True)),
                                         ("sgd", dict(nesterov=True, momentum=0.9, dampening=0.1)),
                                         ("nesterov", dict(momentum=0))])
def test_nesterov_without_momentum_or_with_dampening_is_refused_as_torch_refuses_it(rule, given):
    """torch.optim.SGD raises for it; optdsl ran it as plain sgd (the where chose d)."""
    p = [torch.zeros(1, requires_grad=True)]
    torch_given = {"momentum": 0.9, **given} if rule == "nesterov" else given
    with pytest.raises(ValueError, match="Nesterov momentum requires a momentum and zero "
                                         "dampening") as torch_error:
        torch.optim.SGD(p, lr=0.1, **{"nesterov": True, **torch_given})
    with pytest.raises(ValueError, match=str(torch_error.value)):
        optdsl.Optimizer(p, rule, lr=0.1, **given)
    opt = optdsl.Optimizer(p, rule, lr=0.1)  # valid defaults
    with pytest.raises(ValueError, match=str(torch_error.value)):  # a later group alike
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], **given,
                             "nesterov": 1})


@pytest.mark.parametrize("rule, given, torch_class", [
    ("adam", dict(betas=0.5), torch.optim.Adam),  # torch: 'float' is not subscriptable
    ("adam", dict(betas=(0.5,)), None),  # torch fails at the first step
    ("sgd", dict(betas=(0.9, 0.99)), torch.optim.SGD),  # torch: an unexpected keyword
    ("r(lr=0.1, beta1=0.9) = lr * ema(g, beta1)", dict(betas=(0.5, 0.6)), None),
    ("rprop", dict(etas=(2.0, 1.2)), torch.optim.Rprop),  # torch: Invalid eta values
    ("rprop", dict(etas=(0.5, 0.9)), torch.optim.Rprop),
    ("rmsprop", dict(alpha=-0.5), torch.optim.RMSprop),  # torch: Invalid alpha value
])
def test_values_torch_refuses_are_refused_not_ignored(rule, given, torch_class):
    """``betas`` that is not two numbers, or given to a rule without beta1 and beta2, was
    dropped without a word (the rule ran at its defaults); Rprop's etas and RMSprop's alpha
    outside torch's ranges ran."""
    p = [torch.zeros(1, requires_grad=True)]
    if torch_class is not None:
        with pytest.raises((TypeError, ValueError)):
            torch_class(p, lr=0.1, **given)
    with pytest.raises(optdsl.HyperparameterError):
        optdsl.Optimizer(p, rule, **given)
    opt = optdsl.Optimizer(p, "adam", betas=torch.tensor([0.5, 0.6]))  # a tensor, as torch's
    assert (opt.defaults["beta1"], opt.defaults["beta2"]) == (0.5, pytest.approx(0.6))


@pytest.mark.parametrize("text, column, message", [
    ("lr * ema(g, 1.5)", 13, "invalid beta=1.5 in ema(): beta must be in [0, 1]"),
    ("lr * drop(g, 1)", 14, "invalid rate=1 in drop(): rate must be in [0, 1)"),
    ("lr * drop(g, -0.5)", 14, "invalid rate=-0.5 in drop()"),
    ("lr * g + noise(-1)", 16, "invalid sigma=-1 in noise(): sigma must be >= 0"),
    ("r(lr=1, b=1.2) = lr * ema(g, b)", 30, "invalid beta=1.2 in ema()"),  # at its default
    ("lr * heavyball(g, 0.9, 2)", 24, "invalid dampening=2 in heavyball()"),
])
def test_a_primitive_argument_outside_its_range_is_an_error_at_the_argument(text, column, message):
    """``ema(g, 1.5)`` grows without bound and ``drop(g, 1)`` divides by 0: they checked and ran."""
    with pytest.raises(optdsl.HyperparameterError) as e:
        optdsl.parse(text)
    assert (e.value.line, e.value.column) == (1, column) and message in e.value.message


def test_a_number_that_overflows_is_an_error_in_the_body_as_in_the_header():
    with pytest.raises(optdsl.DSLError, match="too large for float64") as e:
        optdsl.parse("lr * g * 1e999")
    assert (e.value.line, e.value.column) == (1, 10)
    with pytest.raises(optdsl.HyperparameterError, match="must be finite"):
        optdsl.parse("r(lr=1e999) = lr * g")
    optdsl.parse("lr * g + min(p, inf)")  # an infinity written as one


def test_arguments_in_range_or_that_change_with_t_still_check():
    for text in ["lr * ema(g, 0.9) + drop(g, 0) + noise(0)", "lr * ema(g, 1)",
                 "lr * ema(g, 1 - 1 / (t + 1))", "r(lr=1, b=0.5) = lr * drop(g, b)"]:
        optdsl.parse(text)


def test_an_unknown_backend_from_the_environment_says_where_it_came_from(monkeypatch):
    monkeypatch.setenv("OPTDSL_BACKEND", "bogus")
    with pytest.raises(ValueError, match=r"unknown backend 'bogus' \(from \$OPTDSL_BACKEND\)"):
        optdsl.Optimizer([torch.zeros(1, requires_grad=True)], "adam")


@pytest.mark.parametrize("name", ["maximize", "seed", "params", "backend", "betas"])
def test_a_hyperparameter_cannot_take_a_name_the_optimizer_takes(name):
    """``r(lr=0.1, maximize=0.5)`` passed the checker, then the group's maximize=False made its
    update 0; ``seed=`` went to the generator and ``params=`` was the parameter list."""
    with pytest.raises(optdsl.DSLError, match=f"'{name}' is optdsl.Optimizer's own argument") as e:
        optdsl.parse(f"r(lr=0.1, {name}=0.5) = lr * {name} * g")
    assert (e.value.line, e.value.column) == (1, 11)


def test_nesterov_without_momentum_in_program_text_is_an_error_at_the_call():
    with pytest.raises(optdsl.HyperparameterError) as e:
        optdsl.parse("r(lr=1) = lr * g + sgd(nesterov=1)")
    assert (e.value.line, e.value.column) == (1, 20) and "requires a momentum" in e.value.message
    optdsl.parse("r(lr=1) = lr * g + sgd(nesterov=1, momentum=0.9)")  # valid together


def test_param_group_keeps_unknown_keys_as_torch_does_and_warns_on_a_likely_typo():
    p = [torch.zeros(1, requires_grad=True)]
    opt = optdsl.Optimizer([{"params": p, "rule": "adam", "tag": "encoder"}], "adam")
    assert opt.param_groups[0]["rule"] == "adam" and opt.param_groups[0]["tag"] == "encoder"
    with pytest.warns(UserWarning, match="'bta1' is not a hyperparameter.*did you mean 'beta1'"):
        opt = optdsl.Optimizer([{"params": p, "bta1": 0.5}], "adam")
    assert opt.param_groups[0]["beta1"] == 0.9  # the typo changed nothing


@pytest.mark.parametrize("backend", ["eager", "torchscript", "inductor"])
def test_maximize_ascends_per_group_as_torch_optim_does(backend):
    """torch.optim's ``maximize`` (the keyword and per param group) was refused; a torch user's
    gradient ascent could not move over. The rule now sees -g, as torch's optimizers do (weight
    decay still pulls towards 0), on every backend; checkpoints and to_torch/from_torch carry it."""
    def run(make):
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
        q = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
        opt = make([{"params": [p]}, {"params": [q], "maximize": False}])
        for _ in range(30):
            opt.zero_grad()
            (-(p ** 2).sum() + (q ** 2).sum()).backward()
            opt.step()
        return p.detach(), q.detach(), opt
    for rule, torch_opt in [("sgd", lambda g: torch.optim.SGD(g, lr=0.01, momentum=0.9,
                                                              weight_decay=0.1, maximize=True)),
                            ("adam", lambda g: torch.optim.Adam(g, lr=0.01, weight_decay=0.1,
                                                                maximize=True))]:
        hypers = {"momentum": 0.9} if rule == "sgd" else {}
        want = run(torch_opt)
        got = run(lambda g: optdsl.Optimizer(g, rule, lr=0.01, weight_decay=0.1, maximize=True,
                                             backend=backend, **hypers))
        for x, y in zip(got[:2], want[:2]):
            torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-12)
    opt = got[2]
    assert [g["maximize"] for g in opt.to_torch().param_groups] == [True, False]
    back = optdsl.Optimizer.from_torch(want[2])
    assert [g["maximize"] for g in back.param_groups] == [True, False]
    with pytest.raises(ValueError, match="maximize must be True or False"):
        optdsl.Optimizer([torch.zeros(1, requires_grad=True)], "sgd", maximize="yes")


def _lr_trace(scheduler_factory, backend, steps=60, rule="sgd"):
    p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = optdsl.Optimizer([p], rule, lr=0.1, backend=backend)
    sched = scheduler_factory(opt)
    lrs = []
    for _ in range(steps):
        p.grad = torch.ones(2, dtype=torch.float64)
        before = p.detach().clone()
        opt.step()
        lrs.append((float((before - p)[0]), opt.param_groups[0]["lr"]))
        sched.step()
    return lrs


@pytest.mark.parametrize("factory", [
    lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=7, gamma=0.5),
    lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=25),
    lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.3, total_steps=61, cycle_momentum=False),
], ids=["StepLR", "CosineAnnealingLR", "OneCycleLR"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_schedulers_drive_the_step(factory, backend):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        trace = _lr_trace(factory, backend)
    # sgd's step on a unit gradient is exactly the lr the scheduler set for that step
    for taken, lr in trace:
        assert taken == pytest.approx(lr, rel=1e-12)
    assert len({round(lr, 12) for _, lr in trace}) > 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_onecycle_cycles_beta1_of_adam(backend):
    p = torch.zeros(2, requires_grad=True)
    opt = optdsl.Optimizer([p], "adam", lr=0.1, backend=backend)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.3, total_steps=20)
    seen = set()
    for _ in range(19):
        p.grad = torch.ones(2)
        opt.step()
        seen.add(round(opt.param_groups[0]["beta1"], 6))
        sched.step()
    assert len(seen) > 5 and min(seen) >= 0.85 - 1e-9 and max(seen) <= 0.95 + 1e-9


@pytest.mark.parametrize("backend", BACKENDS)
def test_reduce_lr_on_plateau_halves_the_lr(backend):
    p = torch.zeros(2, requires_grad=True)
    opt = optdsl.Optimizer([p], "adam", lr=0.1, backend=backend)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)
    for _ in range(10):
        p.grad = torch.ones(2)
        opt.step()
        sched.step(1.0)  # a loss that never improves
    assert opt.param_groups[0]["lr"] < 0.1
    assert opt.param_groups[0]["lr"] in (0.05, 0.025, 0.0125)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dtype_and_device_follow_the_params(backend):
    p = torch.zeros(4, dtype=torch.float32, requires_grad=True)
    opt = optdsl.Optimizer([p], "adabelief", backend=backend)
    p.grad = torch.ones(4)
    opt.step()
    assert all(v.dtype == torch.float32 for v in opt.state[p].values() if isinstance(v, torch.Tensor))


@pytest.mark.parametrize("backend", BACKENDS)
def test_lookahead_wraps_any_rule_and_equals_ranger(backend):
    data = make_data()
    a, b = _params(), _params()
    oa = optdsl.Optimizer(a, "lookahead(radam, k=6, alpha=0.5)", lr=1e-2, backend=backend)
    ob = optdsl.Optimizer(b, "ranger", lr=1e-2, backend=backend)
    assert set(oa.defaults) == set(ob.defaults)
    assert oa.defaults["k"] == 6
    for _ in range(30):
        compute_grads(a, data)
        compute_grads(b, data)
        oa.step()
        ob.step()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    # any library rule can be wrapped, including one with a clashing hyperparameter name
    r = optdsl.parse("lookahead(rmsprop, k=3)")
    assert {"alpha", "rmsprop_alpha", "k"} <= set(r.hypers)


def test_a_program_file_with_weight_decay(tmp_path):
    path = tmp_path / "myrule.opt"
    path.write_text("# my rule\nmyrule(lr=0.1, beta=0.9, weight_decay=0):\n"
                    "    m = ema(g + weight_decay * p, beta)\n    return lr * sign(m)\n")
    prog = optdsl.parse(path.read_text())
    w = torch.ones(3, requires_grad=True)
    opt = optdsl.Optimizer([w], prog, weight_decay=0.01)  # the default backend
    w.grad = torch.zeros(3)
    opt.step()
    assert torch.allclose(w, torch.full((3,), 0.9))


def test_schedules_are_computed_once_per_step_as_scalars():
    from optdsl.ir import Kind, topological
    from optdsl.primitives import PRIMITIVES
    rule = optdsl.parse("r(lr=0.1, T=100) = lr * warmup(t, 10) * cosine(t, T) * sgdr(t, 20, 2) * g")
    nodes = [n for n in topological(rule.outputs()) if n.op in ("warmup", "cosine", "sgdr")]
    assert len(nodes) == 3 and all(n.kind == Kind.SCALAR for n in nodes)
    assert all(PRIMITIVES[n.op].torch_fn is None for n in nodes)  # no per-element implementation


def test_building_an_optimizer_leaves_torchs_random_numbers_alone():
    """As with torch.optim: building one for a rule without random numbers neither reseeds
    torch's global generator (a model's dropout after it was no longer reproducible) nor draws
    from it; for a rule with ``noise`` and no ``seed=``, its draws follow ``torch.manual_seed``
    and two optimizers draw differently."""
    def draws(make):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        make(model.parameters())
        return torch.randn(4)
    assert torch.equal(draws(lambda ps: optdsl.Optimizer(ps, "adam", backend="eager")),
                       draws(torch.optim.Adam))

    def noise_run():
        p = torch.nn.Parameter(torch.zeros(16))
        opt = optdsl.Optimizer([p], "r(lr=1) = lr * noise(1)", backend="eager")
        p.grad = torch.zeros(16)
        opt.step()
        return p.detach().clone()
    torch.manual_seed(5)
    first = [noise_run(), noise_run()]
    torch.manual_seed(5)
    again = [noise_run(), noise_run()]
    assert not torch.equal(first[0], first[1])
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])


def test_torchs_betas_in_a_param_group_is_no_unknown_key_and_warnings_name_the_callers_line():
    """``betas`` is torch's alias of beta1/beta2, not an unknown key; a misspelt key warns at
    the line that wrote it, not inside optdsl or torch."""
    import warnings
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt = optdsl.Optimizer([{"params": [a]}, {"params": [b], "betas": (0.5, 0.6)}], "adam")
        assert not [w for w in caught if "optdsl" in str(w.message)]
        assert (opt.param_groups[1]["beta1"], opt.param_groups[1]["beta2"]) == (0.5, 0.6)
        optdsl.Optimizer([{"params": [a]}, {"params": [b], "lrr": 0.1}], "adam")
        opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lrr": 1})
    named = [w for w in caught if "is not a hyperparameter" in str(w.message)]
    assert len(named) == 2 and all(w.filename == __file__ for w in named), \
        [(w.filename, w.lineno) for w in named]


def test_rprop_takes_torchs_etas_and_step_sizes_tuples():
    """``Optimizer(..., "rprop", etas=..., step_sizes=...)`` (torch.optim.Rprop's keywords) was
    an unknown hyperparameter; only ``betas`` was split. It now steps as torch's Rprop."""
    def run(make):
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.randn(6, dtype=torch.float64))
        opt = make([p])
        for _ in range(50):
            opt.zero_grad()
            ((p - 1) ** 3).sum().backward()
            opt.step()
        return p.detach(), opt
    want, _ = run(lambda ps: torch.optim.Rprop(ps, lr=0.01, etas=(0.4, 1.3), step_sizes=(1e-5, 0.5)))
    got, opt = run(lambda ps: optdsl.Optimizer(ps, "rprop", lr=0.01, etas=(0.4, 1.3),
                                               step_sizes=(1e-5, 0.5), backend="eager"))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-14)
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "step_sizes": (1e-4, 2)})
    # the group holds the tuple too, as torch's Rprop does (a write to it is what the next
    # step uses: tests/test_review14.py), made from the names
    assert opt.param_groups[1]["step_size_max"] == 2
    assert opt.param_groups[1]["step_sizes"] == (1e-4, 2.0)
    with pytest.raises(ValueError, match="etas takes 2 values"):
        optdsl.Optimizer([torch.zeros(1, requires_grad=True)], "rprop", etas=(0.4,))
