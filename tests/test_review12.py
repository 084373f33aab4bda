"""What the sixth session's reviews found (2026-12-04): each test fails on the tree before
its fix."""
from __future__ import annotations

import warnings

import pytest
import torch

import optdsl
from optdsl.cli import main


def test_simplify_never_prints_a_form_its_proof_refutes(capsys):
    """sympy's algebra is exact and the update's floats are not: ``(g + 1e20) - 1e20`` is 0
    for a small g, so ``g * lr`` is refuted. It was printed anyway (exit 1); the program now
    comes back unchanged, with the refutation and the form it did not print."""
    source = "lr*((g + 1e20) - 1e20)"
    text, verdict = optdsl.simplify(optdsl.parse(source), timeout=60)
    assert text == source + "\n" and verdict.refuted
    assert "g * lr" in str(verdict) and "unchanged" in str(verdict)
    assert main(["simplify", source, "--timeout", "60"]) == 1
    out, err = capsys.readouterr()
    assert out == source + "\n" and "refuted" in err and "g * lr" in err


# --- the Optimizer: memory, state and failed steps ---------------------------------------------

BACKENDS = ("eager", "inductor", "torchscript")


def _optimizer(params, backend, **kw):
    if backend == "torch":
        return torch.optim.Adam(params, lr=0.1, foreach=False, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return optdsl.Optimizer(params, "adam", backend=backend, lr=0.1, **kw)


def _m(opt, p):
    return opt.state[p]["exp_avg" if isinstance(opt, torch.optim.Adam) else "m"]


@pytest.mark.parametrize("two_groups", [False, True])
def test_a_gradient_that_is_another_parameters_state_reads_its_new_value(two_groups):
    """torch.optim updates its states in place, so c's gradient that is a's first moment
    (stepped before c) reads the new moment. The interpreter gave new tensors each step and
    read the old one, so eager, and inductor in one group (which hands the pair to the
    interpreter), differed from torch, torchscript and inductor across groups."""
    out = {}
    for backend in BACKENDS + ("torch",):
        torch.manual_seed(0)
        a, c = (torch.nn.Parameter(torch.randn(4, dtype=torch.float64)) for _ in range(2))
        opt = _optimizer([{"params": [a]}, {"params": [c]}] if two_groups else [a, c], backend)
        a.grad, c.grad = torch.ones_like(a), torch.ones_like(c)
        opt.step()
        m = _m(opt, a)
        a.grad, c.grad = torch.full_like(a, 2.0), m
        opt.step()
        assert m is _m(opt, a) and torch.equal(m, _m(opt, a))  # a reference sees the new value
        out[backend] = c.detach().clone()
    for backend in BACKENDS:
        assert torch.equal(out[backend], out["eager"]), backend
    torch.testing.assert_close(out["torch"], out["eager"], rtol=1e-15, atol=1e-15)


def test_inductor_replans_when_an_aliasing_gradient_reads_other_memory():
    """c's gradient is parameter b's memory at step 2 (c and b go to the interpreter), then d's
    at step 3: the same item aliased, so the plan was kept, and the kernel stepped d before
    the interpreter stepped c, which read the new d (torch's loop reads the old one)."""
    out = {}
    for backend in BACKENDS:
        torch.manual_seed(0)
        c, b, d = (torch.nn.Parameter(torch.randn(4, dtype=torch.float64)) for _ in range(3))
        opt = _optimizer([c, b, d], backend)
        for p in (c, b, d):
            p.grad = torch.ones_like(p)
        opt.step()
        b.grad, d.grad, c.grad = torch.full_like(b, 2.0), torch.full_like(d, 2.0), b.detach()
        opt.step()
        b.grad, d.grad, c.grad = torch.full_like(b, 3.0), torch.full_like(d, 3.0), d.detach()
        opt.step()
        out[backend] = torch.cat([c.detach(), b.detach(), d.detach()])
    assert torch.equal(out["inductor"], out["eager"])
    assert torch.equal(out["torchscript"], out["eager"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_state_that_no_longer_fits_changes_nothing(backend):
    """A parameter whose shape changed is a StateError before any tensor changes; eager had
    stepped the parameters before it, and every backend had counted the step of all."""
    torch.manual_seed(0)
    a, c = torch.nn.Parameter(torch.randn(4)), torch.nn.Parameter(torch.randn(6))
    new = torch.nn.Parameter(torch.randn(2))  # its first step: no states left behind either
    opt = _optimizer([a, c], backend)
    a.grad, c.grad = torch.ones(4), torch.ones(6)
    opt.step()
    opt.add_param_group({"params": [new]})
    c.data = c.data[:3]
    a.grad, c.grad, new.grad = torch.ones(4), torch.ones(3), torch.ones(2)
    before = a.detach().clone()
    with pytest.raises(optdsl.host.StateError):
        opt.step()
    assert torch.equal(a.detach(), before)
    assert opt.state[a]["step"] == 1 and opt.state[c]["step"] == 1


# --- export, lookahead's k, and where an error is shown ----------------------------------------

def test_an_exported_step_says_the_dtype_each_state_is_stored_in(tmp_path, capsys):
    """`v: bfloat16 = ...` was in no attribute of the exported module, nor in `--emit`'s header
    or `show`: a caller filled v in the parameter's dtype and drifted from the Optimizer."""
    source = ("r(lr=1e-3, beta2=0.999):\n    v: bfloat16 = ema(g^2, beta2)\n"
              "    return lr * g / (sqrt(v) + 1e-8)\n")
    path = tmp_path / "bf.pt"
    optdsl.export(source, str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path))
    assert list(module.state_names) == ["v"] and list(module.state_dtypes) == ["bfloat16"]
    torch.manual_seed(0)
    p0, grads = torch.randn(50), [torch.randn(50) for _ in range(10)]
    params, states = [p0.clone()], [torch.zeros(50, dtype=getattr(torch, module.state_dtypes[0]))]
    q = torch.nn.Parameter(p0.clone())
    opt = optdsl.Optimizer([q], source, backend="torchscript")
    for g in grads:
        module(params, [g], states, torch.tensor([1e-3, 0.999, 1 - 0.999]))
        q.grad = g.clone()
        opt.step()
    assert torch.equal(params[0], q.detach())
    adam = optdsl.export("adam", str(path))
    assert adam is not None and list(torch.jit.load(str(path)).state_dtypes) == ["", ""]
    file = tmp_path / "bf.opt"
    file.write_text(source)
    assert main(["compile", str(file), "--emit"]) == 0 and "stored as bfloat16" in capsys.readouterr().out
    assert main(["show", str(file)]) == 0 and "v (tensor, stored as bfloat16)" in capsys.readouterr().out


@pytest.mark.parametrize("k", [2.5, 0.5, 0])
def test_lookaheads_k_is_a_whole_number(k):
    """k = 2.5 synced at steps 5 and 10 (t % k == 0) and k = 0.5 at every step, without a word."""
    text = f"lookahead(adam, k={k})"
    with pytest.raises(optdsl.DSLError) as e:
        optdsl.parse(text)
    assert "k must be a whole number >= 1" in str(e.value) or "k must be > 0" in str(e.value)
    p = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="k"):
        optdsl.Optimizer([p], "lookahead(inner=sgd, alpha=0.5)", lr=0.1, k=k)


def test_lookahead_syncs_every_k_steps_on_every_backend():
    for backend in BACKENDS:
        p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = optdsl.Optimizer([p], "lookahead(inner=sgd, alpha=0.5)", lr=1.0, k=3,
                                   backend=backend)
        path = []
        for _ in range(6):
            p.grad = torch.ones(1, dtype=torch.float64)
            opt.step()
            path.append(p.item())
        # fast steps -1, -2; at step 3 slow moves half way to -3; again from -1.5
        assert path == [-1.0, -2.0, -1.5, -2.5, -3.5, -3.0], backend


@pytest.mark.parametrize("text, value", [("adamwr(T_0=0)", "0"),
                                         ("powersign_linear(decay_steps=0)", "0"),
                                         ("lookahead(adam, k=2.5)", "2.5")])
def test_an_invalid_value_handed_to_a_rule_is_shown_where_it_is_written(text, value):
    """The caret was under the call (column 1), where `adam(beta1=2)` puts it under the value."""
    with pytest.raises(optdsl.DSLError) as e:
        optdsl.parse(text)
    assert (e.value.line, e.value.column) == (1, text.index("=" + value) + 2)


def test_two_states_with_one_initial_value_are_two_tensors():
    """`state a = g * 2` and `state b = g * 2` start from one node, so the interpreter gave
    both states one tensor; once it wrote states in place, b's write landed in a too."""
    src = """r(lr=0.1):
    state a = g * 2
    state b = g * 2
    a := a + g
    b := b * 0.5
    return lr * (a + b)"""
    out = {}
    for backend in BACKENDS:
        p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = optdsl.Optimizer([p], src, backend=backend)
        for _ in range(3):
            p.grad = torch.ones(3, dtype=torch.float64)
            opt.step()
        assert opt.state[p]["a"].data_ptr() != opt.state[p]["b"].data_ptr()
        out[backend] = p.detach().clone()
    # a: 2, then 3, 4, 5; b: 2, then 1, 0.5, 0.25; each update 0.1 (a + b) of the new values
    assert torch.allclose(out["eager"], torch.full((3,), -0.1 * (4 + 4.5 + 5.25),
                                                   dtype=torch.float64))
    assert all(torch.equal(out[b], out["eager"]) for b in BACKENDS)


# --- proofs and cache keys ---------------------------------------------------------------------

def _eager_updates(rule, grads, **hypers):
    p = torch.nn.Parameter(torch.zeros(len(grads[0]), dtype=torch.float64))
    opt = optdsl.Optimizer([p], rule, backend="eager", seed=0, **hypers)
    out = []
    for g in grads:
        before = p.detach().clone()
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append(before - p.detach())
    return torch.stack(out)


@pytest.mark.parametrize("a, b, at", [
    ("r(lr=0.1, a=0.5) = lr*g*(a-0.25)/(a-0.25)", "r(lr=0.1, a=0.5) = lr*g", {"a": 0.25}),
    ("r(lr=0.1, a=0.5) = lr*ema(g, a)*(a-0.75)/(a-0.75)", "r(lr=0.1, a=0.5) = lr*ema(g, a)",
     {"a": 0.75}),
    ("r(lr=0.1, beta1=0.9, beta2=0.99) = lr*g*(beta2-beta1)/(beta2-beta1)",
     "r(lr=0.1, beta1=0.9, beta2=0.99) = lr*g", {"beta1": 0.9, "beta2": 0.9})])
def test_a_divisor_of_hyperparameters_is_not_taken_as_nonzero_at_its_roots(a, b, at):
    """Proved for a divisor that is 0 at a = 0.25 (or wherever beta1 = beta2), where the first
    rule is NaN: only 0 and 1 were tried as special values, and a divisor of several
    hyperparameters was taken as nonzero."""
    grads = [[0.3, -1.2]] * 3
    assert not torch.equal(_eager_updates(a, grads, **at), _eager_updates(b, grads, **at))
    assert not optdsl.equivalent(a, b, timeout=60).proved


@pytest.mark.parametrize("a, b", [
    ("lr*(g + noise(1) - noise(1.0*1))", "lr*(g + noise(1) - noise(1))"),
    ("lr*(g + noise(0.1) + noise(0.1*1))", "lr*(g + 2*noise(0.1))"),
    ("lr*(drop(g+1, 0.5) + drop(g+1+0, 0.5))", "lr*2*drop(g+1, 0.5)"),
    ("r(lr=0.1):\n    m: bfloat16 = ema(g, 0.9)\n    return lr * m",
     "r(lr=0.1):\n    m = ema(g, 0.9)\n    return lr * m")])
def test_canonical_hash_tells_apart_rules_that_step_differently(a, b):
    """Two calls are one draw only where they are one node, and a rewrite of a call's argument
    (1.0 * 1 -> 1) merged two draws; a state stored in bfloat16 was not in the hash."""
    grads = [[0.123456789, 0.3, -0.7]] * 4
    assert not torch.equal(_eager_updates(a, grads), _eager_updates(b, grads))
    assert optdsl.canonical_hash(optdsl.parse(a)) != optdsl.canonical_hash(optdsl.parse(b))


def test_canonical_hash_still_merges_one_draw_written_alike():
    assert optdsl.canonical_hash(optdsl.parse("lr*(g + noise(0.1))")) == \
        optdsl.canonical_hash(optdsl.parse("lr*(noise(0.1) + g)"))


# --- a review of this session's own changes ------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("r(lr=0.1) = 1 * lookahead(adam, k=0.5, alpha=0.5)", None),
    ("r(lr=0.1) = 1 * adamwr(T_mult=0, T_0=0)", None),
    ("r(lr=0.1) = 1 * lookahead(adam, k=0.5, alpha=0.25)", "k=0.5")])
def test_two_arguments_of_one_value_show_an_error_at_the_call(text, value):
    """Two arguments of one value are one IR node: the caret went under the other one
    (alpha's 0.5 for k's error). It is now at the call, and under the value where only one
    argument has it."""
    with pytest.raises(optdsl.DSLError) as e:
        optdsl.parse(text)
    where = text.index(value) + len(value.split("=")[0]) + 2 if value else text.index("* ") + 3
    assert (e.value.line, e.value.column) == (1, where), str(e.value)


@pytest.mark.parametrize("k", ["inf", "1/0", "2*inf"])
def test_every_of_an_infinite_k_is_an_error_at_its_position(k):
    """math.floor(inf) raised OverflowError: a traceback and exit 1 from `optdsl check`."""
    with pytest.raises(optdsl.DSLError, match="k must be a whole number"):
        optdsl.parse(f"lr * g * every(t, {k})")


def test_one_gradient_given_to_two_parameters_plans_once():
    """A gradient given to two tied parameters is a new tensor every step: keyed by its
    address, the check re-planned every step (and dropped every other group's plan)."""
    from optdsl import compiled
    if compiled.inductor_available():
        pytest.skip(compiled.inductor_available())
    plans = []
    make = compiled.InductorBackend._plan_chunks

    def counting(self, *args):
        plans.append(1)
        return make(self, *args)
    tied = [torch.nn.Parameter(torch.randn(8)) for _ in range(2)]
    body = [torch.nn.Parameter(torch.randn(4, 4)) for _ in range(5)]
    opt = optdsl.Optimizer([{"params": tied}, {"params": body}], "adam", backend="inductor")
    try:
        compiled.InductorBackend._plan_chunks = counting
        for _ in range(6):
            tied[0].grad = torch.randn(8)
            tied[1].grad = tied[0].grad
            for p in body:
                p.grad = torch.randn(4, 4)
            opt.step()
    finally:
        compiled.InductorBackend._plan_chunks = make
    assert len(plans) == 2


def test_a_refused_step_keeps_states_loaded_at_step_0():
    """torch's Adagrad makes its states at construction (step 0): from_torch before its
    first step gives states at step 0, which the roll-back of a refused step deleted (the
    accumulator restarted from the group's initial value)."""
    from optdsl.host import StateError

    def run(refuse: bool):
        torch.manual_seed(0)
        a = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
        b = torch.nn.Parameter(torch.randn(3, dtype=torch.float64))
        torch_opt = torch.optim.Adagrad([{"params": [a, b], "initial_accumulator_value": 0.1}],
                                        lr=0.1, initial_accumulator_value=0.5)
        opt = optdsl.Optimizer.from_torch(torch_opt, backend="eager")
        if refuse:
            kept, b.data = b.data, torch.randn(5, dtype=torch.float64)
            a.grad, b.grad = torch.ones(4, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
            with pytest.raises(StateError):
                opt.step()
            b.data = kept
        gen = torch.Generator().manual_seed(1)
        for _ in range(3):
            for x in (a, b):
                x.grad = torch.randn(x.shape, dtype=x.dtype, generator=gen)
            opt.step()
        return a.detach().clone()
    assert torch.equal(run(True), run(False))


# --- schedules and checkpoints written around load_state_dict ------------------------------------

def test_cyclic_triangular2_tends_to_its_base_after_1024_cycles():
    """1 / 2.0 ** (cycle - 1) raised OverflowError at cycle 1025, which the schedule table
    reads as a value past float64's range: inf, and the parameters became -inf."""
    from optdsl.primitives import PRIMITIVES
    f = PRIMITIVES["cyclic_triangular2"].scalar_fn
    assert f(100 * 2 * 1024 + 1.0, 0.1, 1.0, 100.0) == 0.1
    p = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = optdsl.Optimizer([p], "lr * cyclic_triangular2(t, 0.1, 1, 1) * g", lr=0.01,
                           backend="eager")
    for _ in range(2050):
        p.grad = torch.full_like(p, 1e-3)
        opt.step()
    assert bool(torch.isfinite(p).all())


@pytest.mark.parametrize("formula, column", [("2) * (3", 2), ("cosine(t, 100)) * (2", 15)])
def test_a_schedule_that_closes_the_wrappers_parenthesis_is_an_error(formula, column):
    """`2) * (3` was read inside `lr * (...) * g` as `lr * (2) * (3) * g`: 3 was plotted, 6
    used."""
    from optdsl.lr_tools import schedule_values
    with pytest.raises(optdsl.DSLError) as e:
        schedule_values(formula, 5)
    assert (e.value.line, e.value.column) == (1, column)


def test_states_of_another_rule_written_past_load_state_dict_are_a_clear_error():
    """ZeroRedundancyOptimizer's load_state_dict writes each parameter's states directly: an
    adam checkpoint in a lion optimizer ended in a bare KeyError at the first step."""
    from optdsl.host import StateError
    p = torch.nn.Parameter(torch.randn(3))
    adam = optdsl.Optimizer([p], "adam", backend="eager")
    p.grad = torch.ones(3)
    adam.step()
    lion = optdsl.Optimizer([p], "lion", backend="eager")
    lion.state[p] = dict(adam.state[p])
    with pytest.raises(StateError, match="rule lion keeps"):
        lion.step()


def _dies_the_first_time(conn, marker):
    import os
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)  # as a forked child that crashes on a lock another thread held
    conn.send("proved")
    conn.close()


def test_a_proof_process_that_dies_without_a_word_is_started_again(tmp_path):
    """A forked sympy child that crashed at once was read as 'no proof within 60 s' (a
    timeout after 0.8 s): seen once in a CI run of tests/test_sign_cases.py."""
    from optdsl.equivalence import run_with_budget
    assert run_with_budget(_dies_the_first_time, (str(tmp_path / "m"),), 30, "fallback") == "proved"
