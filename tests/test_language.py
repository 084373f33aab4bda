"""What programs mean: the grammar's forms, state semantics, kinds and rules calling rules."""
from __future__ import annotations

import re

import pytest
import torch

import optdsl
from optdsl.ir import Kind
from optdsl.library import names, program_source


def steps(rule, grads, p0=0.0, **hypers):
    """Parameter values after each step of a one-element parameter fed ``grads``."""
    p = torch.tensor([p0], dtype=torch.float64, requires_grad=True)
    opt = optdsl.Optimizer([p], rule, backend="eager", **hypers)  # the meaning (see conftest)
    out = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        out.append(p.item())
    return out


def test_library_programs_are_short_and_the_sign_rules_one_line():
    assert len(optdsl.library) == 35
    for name in names():  # statements are lines (one 'state a = 0, b = 0' declares several)
        assert len({st.pos.line for st in program_source(name).body}) <= 10, name
    for name in ("powersign", "addsign", "lion"):
        body = [l for l in optdsl.library[name].source.splitlines() if l and not l.startswith("#")]
        assert len(body) == 1, name


def test_numbers_comments_and_operators():
    rule = optdsl.parse("# a comment\nr(lr=2.5e-1, c=1E2) = lr * g ** 2 / c  # trailing\n")
    assert rule.defaults == {"lr": 0.25, "c": 100.0}
    assert steps(rule, [2.0]) == [pytest.approx(-0.25 * 4 / 100)]


def test_a_bare_formula_has_only_lr():
    rule = optdsl.parse("lr * sign(g)")
    assert list(rule.hypers) == ["lr"]


def test_state_reads_before_the_update_see_last_steps_value():
    rule = optdsl.parse("r(lr=1):\n    state s = 10\n    old = s\n    s := s + g\n"
                        "    return lr * (old + 100 * s)")
    # step 1: old = 10, s = 10 + 1 = 11 -> u = 10 + 1100; step 2: old = 11, s = 13 -> u = 11 + 1300
    assert steps(rule, [1.0, 2.0]) == [-1110.0, -1110.0 - 1311.0]


def test_prev_and_ema_semantics():
    assert steps("lr * prev(g)", [1.0, 2.0, 3.0], lr=1.0) == [0.0, -1.0, -3.0]
    assert steps("lr * ema(g, 0.5)", [2.0, 2.0], lr=1.0) == [-1.0, -2.5]
    assert steps("lr * heavyball(g, 0.5, 0.5)", [2.0, 2.0], lr=1.0) == [-2.0, -4.0]
    assert steps("lr * runmax(g)", [1.0, -5.0, 3.0], lr=1.0) == [-1.0, -2.0, -5.0]
    assert steps("lr * cumprod(g)", [2.0, 3.0], lr=1.0) == [-2.0, -8.0]


def test_direct_parameter_assignment():
    assert steps("r(lr=1) = lr * 0\n", [1.0], p0=3.0) == [3.0]
    rule = optdsl.parse("halve(lr=1):\n    p := p / 2 - lr * g")
    assert rule.assigns_p and steps(rule, [1.0], p0=4.0) == [1.0]


def test_kinds_scalar_reduced_tensor():
    rule = optdsl.parse("r(lr=1, beta1=0.9):\n    c = 1 - beta1^t\n    n = norm(p)\n    return lr * c * n * g")
    from optdsl.ir import topological
    nodes = topological([rule.update])
    assert {n.kind for n in nodes if n.op == "pow"} == {Kind.SCALAR}
    assert {n.kind for n in nodes if n.op == "norm"} == {Kind.REDUCED}
    assert rule.update.kind == Kind.TENSOR


def test_rule_calls_lift_hyperparameters_and_share_lr():
    r = optdsl.parse("mix(weight_decay=0.1) = lr * weight_decay * p + adam(weight_decay=0)")
    assert list(r.hypers) == ["lr", "weight_decay", "beta1", "beta2", "eps"]
    alias = optdsl.parse("fast() = adam(beta1=0.5)")
    assert alias.defaults["beta1"] == 0.5  # an alias's numbers are new defaults, not fixed values
    nested = optdsl.parse("lookahead(ranger, k=3)")  # a wrapper of a wrapper is no cycle
    # and ranger's own lookahead keeps its k and alpha apart from the outer one's
    assert {"k", "alpha", "lookahead_k", "lookahead_alpha"} <= set(nested.hypers)
    assert nested.defaults["k"] == 3 and nested.defaults["lookahead_k"] == 6


def test_a_call_sets_the_hyperparameters_its_rule_inherits_from_the_rules_it_calls():
    """``adamw(beta1=0.5)``: adamw's header names only weight_decay, its beta1 is adam's. Such a
    keyword is handed down to the call that declares it (an error before: "adamw has no
    parameter 'beta1'"), as a new default in an alias and as a fixed value elsewhere."""
    from optdsl.interpreter import trajectory
    torch.manual_seed(0)
    p0 = torch.randn(6, dtype=torch.float64)
    grads = [torch.randn(6, dtype=torch.float64) for _ in range(30)]

    def run(text, **hypers):
        rule = optdsl.parse(text)
        return torch.stack(trajectory(rule, {**rule.defaults, **hypers}, p0, grads))

    want = run("r(lr=0.1) = adamw()", beta1=0.5)
    alias = optdsl.parse("r(lr=0.1) = adamw(beta1=0.5)")
    assert alias.defaults["beta1"] == 0.5
    assert torch.equal(run("r(lr=0.1) = adamw(beta1=0.5)"), want)
    fixed = optdsl.parse("r(lr=0.1) = 1 * adamw(beta1=0.5)")
    assert "beta1" not in fixed.defaults
    assert torch.equal(run("r(lr=0.1) = 1 * adamw(beta1=0.5)"), want)
    # through two levels (adamwr -> adamw -> adam), and an alias's own number (momentum =
    # sgd(momentum=0.9)) is overridden
    assert optdsl.parse("r() = adamwr(beta2=0.99)").defaults["beta2"] == 0.99
    assert torch.allclose(run("r(lr=0.1) = 2 * momentum(momentum=0.5)") / 2,
                          run("r(lr=0.1) = sgd(momentum=0.5)"), rtol=0, atol=1e-14)
    assert not torch.allclose(run("r(lr=0.1) = 2 * momentum()") / 2,
                              run("r(lr=0.1) = sgd(momentum=0.5)"), rtol=1e-3, atol=0)
    for text, message in [
            ("r() = adamw(bta1=0.5)", "rule adamw has no parameter 'bta1'; did you mean 'beta1'?"),
            ("r() = sgd(beta1=0.5)", "rule sgd has no parameter 'beta1'"),
            ("r() = 2 * adamw(beta1=2)", "beta1 must be in"),
            ("r() = adamw(beta1=g)", "a tensor where a scalar is required"),
            ("r() = adamw(beta1=0.5, beta1=0.4)", "got 'beta1' twice")]:
        with pytest.raises(optdsl.DSLError, match=re.escape(message)):
            optdsl.parse(text)


def test_a_rule_whose_default_inner_rule_is_itself_nests_too_deeply(monkeypatch):
    import importlib
    from optdsl.syntax import parse_syntax
    lib = importlib.import_module("optdsl.library")
    loop = parse_syntax("loop(inner=adam, k=1):\n    p := p - inner")
    real = lib.program_source
    monkeypatch.setattr(lib, "program_source", lambda n: loop if n == "loop" else real(n))
    loop.header = (("inner", parse_syntax("loop").body[0].expr, loop.header[0][2]),) + loop.header[1:]
    with pytest.raises(optdsl.DSLError, match="nest too deeply"):
        optdsl.parse("loop()")


def test_several_states_in_one_declaration():
    rule = optdsl.parse("r(lr=1):\n    state a = 1, b = 2\n    a := a + g\n    b := b * 2\n    return lr * (a + b)")
    assert [s.name for s in rule.slots] == ["a", "b"]


def test_minus_zero_is_its_own_constant():
    """const(-0.0) was const(0.0) in the hash-consed IR (floats compared with ==), so a program
    dividing by -0.0 divided by +0.0."""
    from optdsl import ir
    assert ir.const(-0.0) is not ir.const(0.0) and ir.const(0.0) is ir.const(0.0)
    assert ir.const(float("nan")) is ir.const(float("nan"))
    moved = []
    for text in ("lr * g / (-0.0)", "lr * g / 0.0"):
        p = torch.ones(2, dtype=torch.float64, requires_grad=True)
        p.grad = torch.ones(2, dtype=torch.float64)
        optdsl.Optimizer([p], text, backend="eager", lr=1.0).step()
        moved.append(p.detach()[0].item())
    assert moved == [float("inf"), float("-inf")]


def test_an_invalid_argument_inside_a_called_rule_is_shown_at_the_call():
    """adamwr(T_mult=1.5) fails in sgdr() on line 7 of adamwr's file; the error carried that
    line and column and was drawn under the user's own text (no caret, or under another
    call). It is shown under the value the user wrote (it was under the call)."""
    text = "mine(lr=0.01, warm=100) = warmup(t, warm) * adamwr(T_mult=1.5)"
    with pytest.raises(optdsl.DSLError) as e:
        optdsl.parse(text)
    assert (e.value.line, e.value.column) == (1, text.index("1.5") + 1)
    assert "in rule adamwr: invalid arguments to sgdr(): T_mult must be a whole number" in str(e.value)
